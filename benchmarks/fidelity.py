"""Fidelity of the classical codec wrappers against CompressAI's published Kodak
curves (../shared/data/reference/compressai/kodak/): runs the leaderboard on all
24 Kodak images with the ``compressai*`` configs and prints, per codec, the
BD-rate (PCHIP, PSNR-RGB) against the published curve and the PSNR difference at
matched bpp (the published curve interpolated at each of our points).

    PYTHONPATH=. python benchmarks/fidelity.py [--codecs jpeg:compressai,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.interpolate import PchipInterpolator

from harness.leaderboard import results
from harness.report.bdrate import RDCurve, bd_rate
from harness.leaderboard.config import LeaderboardConfig
from harness.leaderboard.run import run

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "data" / "reference" / "compressai" / "kodak"
PAIRS = {  # ours → published
    "jpeg:compressai": "jpeg",
    "webp:compressai": "webp",
    "hevc:compressai": "bpg_444_x265_ycbcr",
    "vvc:compressai-faster": "vtm",
    "vvc:compressai-faster-400x3": "vtm",
    "vvc:compressai-medium": "vtm",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", default="jpeg:compressai,webp:compressai,hevc:compressai,vvc:compressai-faster")
    parser.add_argument("--max-images", type=int)
    args = parser.parse_args()
    specs = tuple(args.codecs.split(","))
    run(LeaderboardConfig(codecs=specs, run_name="kodak-fidelity", reports_dir=REPO / "reports",
                          max_images=args.max_images))
    frame = results.read(REPO / "reports" / "kodak-fidelity" / "results.parquet")
    ok = frame[frame["status"] == "ok"]
    print("\n| ours | published (CompressAI) | images | bpp range | BD-rate PSNR-RGB | ΔPSNR at matched bpp (mean, range) | enc s/img |")
    print("|---|---|---|---|---|---|---|")
    for spec in specs:
        codec, _, config = spec.partition(":")
        rows = ok[(ok["codec"] == codec) & (ok["config"] == config)]
        curve = rows.groupby("quality")[["bpp", "psnr_rgb", "enc_s"]].mean().sort_values("bpp")
        ref = json.loads((REFERENCE / f"{PAIRS[spec]}.json").read_text())["results"]
        ref_bpp, ref_psnr = np.asarray(ref["bpp"]), np.asarray(ref["psnr-rgb"])
        order = np.argsort(ref_bpp)
        interp = PchipInterpolator(np.log(ref_bpp[order]), ref_psnr[order], extrapolate=False)
        delta = curve["psnr_rgb"].to_numpy() - interp(np.log(curve["bpp"].to_numpy()))
        delta = delta[np.isfinite(delta)]
        bd = bd_rate(RDCurve.of(ref_bpp, ref_psnr), RDCurve.of(curve["bpp"], curve["psnr_rgb"]))
        flags = f" ({bd.flag_text})" if bd.flags else ""
        print(f"| {spec} | {PAIRS[spec]} | {rows['image'].nunique()} | {curve['bpp'].min():.3f}–{curve['bpp'].max():.3f} "
              f"| {bd.value:+.2f} %{flags} | {delta.mean():+.3f} dB ({delta.min():+.2f} .. {delta.max():+.2f}) "
              f"| {curve['enc_s'].mean():.2f} |")


if __name__ == "__main__":
    main()
