"""Hostile but honest use (issue 31): each reproduction as a real ``harness`` process.

For every case this prints the exit status (a signal shows as ``SIG…``), how many
lines the command wrote to stderr, its peak RSS (``wait4``'s ``ru_maxrss`` of that
one process), its wall time, and whether every file that existed before the
command is byte-for-byte and kind-for-kind (regular file, FIFO, device, link)
what it was. A case passes when it exits 0 with the output it should have, or
exits 1 with one line naming the cause; with nothing pre-existing altered; and,
for a crafted input file of at most 10 KB, within 2 GB of RSS and 10 s.

The unit and slow tests prove each behaviour; this script measures the RSS and
time targets, which belong here rather than in timed tests.

Usage: PYTHONPATH=. python benchmarks/hostile.py [--leaderboards] [--only SUBSTRING]
(``--leaderboards`` adds the cases that run whole leaderboards: a few minutes more).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from harness.artefacts.bitstream import Container, pack, unpack

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO / "datasets" / "kodak"
CRAFTED_LIMIT_BYTES = 10 * 1024
RSS_LIMIT = 2 * 1024**3
TIME_LIMIT_S = 10.0


@dataclass
class Case:
    name: str
    argv: list[str]
    exit: int  # the status that is right: 0 (with ``check``) or 1 (one line matching ``cause``)
    cause: str = ""  # regular expression the one stderr line must match when ``exit`` is 1
    crafted: Path | None = None  # the crafted input whose size decides the RSS and time limits
    check: Callable[[str], str] | None = None  # given stdout + stderr: "" when right, else what is wrong
    umask: int | None = None


@dataclass
class Outcome:
    status: str
    stderr_lines: int
    rss_mb: float
    wall_s: float
    problems: list[str] = field(default_factory=list)


def harness(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *map(str, args)]


def snapshot(folder: Path) -> dict[str, tuple[str, str]]:
    """Every path under ``folder``: its kind and, for regular files, the SHA-256 of its bytes."""
    seen = {}
    for path in sorted(folder.rglob("*")):
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            seen[str(path)] = ("link", os.readlink(path))
        elif stat.S_ISREG(mode):
            seen[str(path)] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
        elif stat.S_ISDIR(mode):
            seen[str(path)] = ("dir", "")
        else:
            seen[str(path)] = (stat.filemode(mode)[0], "")
    return seen


def run_case(case: Case, env: dict[str, str], workdir: Path, keep: Path) -> Outcome:
    before = snapshot(keep)
    umask = case.umask

    def child_setup() -> None:
        if umask is not None:
            os.umask(umask)

    started = time.perf_counter()
    process = subprocess.Popen(case.argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=child_setup)
    stdout_chunks: list[bytes] = []
    stderr_chunks: list[bytes] = []
    readers = [threading.Thread(target=lambda s=s, c=c: c.append(s.read())) for s, c in
               ((process.stdout, stdout_chunks), (process.stderr, stderr_chunks))]
    for reader in readers:
        reader.start()
    _, wait_status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    for reader in readers:
        reader.join()
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    stderr = b"".join(stderr_chunks).decode(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    code = process.returncode
    outcome = Outcome(f"SIG{-code}" if code < 0 else str(code), len(lines), usage.ru_maxrss / 1024, wall)
    problems = outcome.problems
    if code != case.exit:
        problems.append(f"exit {outcome.status}, expected {case.exit}: {lines[-1] if lines else 'no stderr'}")
    elif code == 1:
        errors = [line for line in lines if ": error: " in line]
        if len(errors) != 1 or not re.search(case.cause, errors[0]):
            problems.append(f"error line does not name the cause /{case.cause}/: {errors or lines}")
        if any(line.startswith("Traceback") for line in lines):
            problems.append("traceback on stderr")
    if code == 0 and case.check is not None:
        wrong = case.check(b"".join(stdout_chunks).decode(errors="replace") + stderr)
        if wrong:
            problems.append(wrong)
    after = snapshot(keep)
    for path, what in before.items():
        if after.get(path) != what:
            problems.append(f"{Path(path).name} altered or lost")
    if case.crafted is not None and case.crafted.stat().st_size <= CRAFTED_LIMIT_BYTES:
        if usage.ru_maxrss * 1024 > RSS_LIMIT:
            problems.append(f"peak RSS {outcome.rss_mb:.0f} MB > 2 GB for a crafted file of "
                            f"{case.crafted.stat().st_size} bytes")
        if wall > TIME_LIMIT_S:
            problems.append(f"{wall:.1f} s > {TIME_LIMIT_S:g} s for a crafted file")
    return outcome


def repacked(data: bytes, *, height: int | None = None, width: int | None = None,
             flip_payload_byte: bool = False) -> bytes:
    """A container rewritten with another declared size or an altered payload, its CRC recomputed."""
    container = unpack(data)
    streams = container.streams
    if flip_payload_byte:
        first = bytearray(streams[0])
        first[len(first) // 2] ^= 0x10
        streams = (bytes(first), *streams[1:])
    return pack(Container(container.fingerprint, height or container.height, width or container.width,
                          container.mode, streams, container.latent_crc, container.entropy_path))


def png16_rgb(path: Path, height: int, width: int) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow writes none), chunk by chunk."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(height, width, 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\0" + pixels[row].tobytes() for row in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))


def checkpoint_with(path: Path, config: dict) -> None:
    torch.save({"format": "harness-weconvene-checkpoint", "version": 1, "config": config, "state_dict": {}}, path)


def cases(tmp: Path, keep: Path, env: dict[str, str], leaderboards: bool) -> list[Case]:
    model, image, bits = keep / "m.pt", keep / "a.png", keep / "x.3dmw"
    subprocess.run(harness("init-model", "--variant", "tiny", "--seed", "0", "--out", model), env=env, check=True,
                   capture_output=True)
    Image.open(KODAK / "kodim01.png").crop((0, 0, 256, 192)).save(image)
    subprocess.run(harness("compress", image, "-m", model, "-o", bits, "--precision", "fp32"), env=env, check=True,
                   capture_output=True)
    data = bits.read_bytes()
    tiny_config = torch.load(model, weights_only=True)["config"]

    crafted = keep / "crafted"
    crafted.mkdir()
    for name, size in (("65536", (65536, 65536)), ("20000", (20000, 20000)), ("4000x6000", (4000, 6000))):
        (crafted / f"huge-{name}.3dmw").write_bytes(repacked(data, height=size[0], width=size[1]))
    version_flipped = bytearray(data)
    version_flipped[4] ^= 0x01
    (crafted / "version-flipped.3dmw").write_bytes(bytes(version_flipped))
    (crafted / "altered.3dmw").write_bytes(repacked(data, flip_payload_byte=True))
    checkpoint_with(crafted / "wide-unknown.pt", {**tiny_config, "variant": "huge", "N": 16384, "M": 16384})
    checkpoint_with(crafted / "wide-compressai.pt", {"variant": "compressai:mbt2018-mean?N=65536,M=65536",
                                                     "architecture": "mbt2018-mean", "N": 65536, "M": 65536})
    for width in (20000, 6000):
        torch.save({"g_a.0.weight": torch.zeros(1).expand(width, 3, 5, 5),
                    "g_a.6.weight": torch.zeros(1).expand(width, width, 5, 5)}, crafted / f"stride0-{width}.pth")
    (crafted / "random.pt").write_bytes(np.random.default_rng(1).bytes(2000))
    (crafted / "pickle.pt").write_bytes(pickle.dumps({"format": "harness-weconvene-checkpoint", "config": {1, 2}}))
    shutil.copy(image, crafted / "image.pt")
    Image.new("RGB", (9400, 9400), (120, 120, 120)).save(crafted / "flat-9400.png")
    png16_rgb(crafted / "rgb16.png", 64, 96)
    frames = [Image.new("RGB", (64, 48), (40 * i, 80, 200 - 40 * i)) for i in range(4)]
    frames[0].save(crafted / "animated.gif", save_all=True, append_images=frames[1:], duration=100)

    plans = tmp / "plans"
    plans.mkdir()
    demo = (REPO / "schedule" / "demo.toml").read_text()
    (plans / "nul-name.toml").write_text(demo.replace('name = "kodak-demo"', 'name = "kodak\\u0000demo"'))
    (plans / "nul-work.toml").write_text(demo.replace('work_dir = "../runs/demo"', 'work_dir = "runs\\u0000demo"'))

    fifo, device, link, link_target = tmp / "out.fifo", tmp / "null", tmp / "link.3dmw", tmp / "target.3dmw"
    os.mkfifo(fifo)
    received: list[bytes] = []
    threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True).start()
    os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    link_target.write_bytes(b"old bytes")
    link.symlink_to(link_target)
    fresh = tmp / "fresh.3dmw"

    def fifo_check(_: str) -> str:
        time.sleep(0.2)
        ok = stat.S_ISFIFO(os.lstat(fifo).st_mode) and received and received[0][:4] == b"3DMW"
        return "" if ok else "FIFO replaced, or its reader got no bitstream"

    def device_check(_: str) -> str:
        return "" if stat.S_ISCHR(os.lstat(device).st_mode) else "character device replaced by a file"

    def link_check(_: str) -> str:
        ok = link.is_symlink() and link_target.read_bytes()[:4] == b"3DMW"
        return "" if ok else "symlink replaced, or its target not written"

    def mode_check(_: str) -> str:
        mode = stat.S_IMODE(fresh.stat().st_mode)
        return "" if mode == 0o644 else f"new file has mode {mode:o}, umask 022 gives 644"

    def notice(path: Path, text: str) -> Callable[[str], str]:
        def check(output: str) -> str:
            if not path.exists():
                return f"no output at {path}"
            return "" if re.search(rf"notice: .*{text}", output) else f"no notice matching /{text}/"
        return check

    c = crafted
    found = [
        Case("compress -o the input image", harness("compress", image, "-m", model, "-o", image), 1, r"a\.png"),
        Case("compress -o the model", harness("compress", image, "-m", model, "-o", model), 1, r"m\.pt"),
        Case("decompress -o the bitstream", harness("decompress", bits, "-m", model, "-o", bits), 1, r"x\.3dmw"),
        Case("compress -o a FIFO", harness("compress", image, "-m", model, "-o", fifo), 0, check=fifo_check),
        Case("compress -o a character device", harness("compress", image, "-m", model, "-o", device), 0,
             check=device_check),
        Case("compress -o a symlink", harness("compress", image, "-m", model, "-o", link), 0, check=link_check),
        Case("new file's mode under umask 022", harness("compress", image, "-m", model, "-o", fresh), 0,
             check=mode_check, umask=0o022),
        Case("compress -o into a file as folder", harness("compress", image, "-m", model, "-o", image / "o.3dmw"),
             1, r"a\.png"),
        Case("bitstream declaring 65536x65536", harness("decompress", c / "huge-65536.3dmw", "-m", model, "-o",
             tmp / "o1.png"), 1, r"65536", crafted=c / "huge-65536.3dmw"),
        Case("bitstream declaring 20000x20000", harness("decompress", c / "huge-20000.3dmw", "-m", model, "-o",
             tmp / "o2.png"), 1, r"20000", crafted=c / "huge-20000.3dmw"),
        Case("bitstream declaring 4000x6000", harness("decompress", c / "huge-4000x6000.3dmw", "-m", model, "-o",
             tmp / "o3.png"), 1, r"4000|6000|payload|bytes", crafted=c / "huge-4000x6000.3dmw"),
        Case("version byte flipped", harness("decompress", c / "version-flipped.3dmw", "-m", model, "-o",
             tmp / "o4.png"), 1, r"corrupt", crafted=c / "version-flipped.3dmw"),
        Case("payload altered, CRC recomputed", harness("decompress", c / "altered.3dmw", "-m", model, "-o",
             tmp / "o5.png"), 1, r"altered", crafted=c / "altered.3dmw"),
        Case("checkpoint: unknown variant, N=M=16384", harness("compress", image, "-m", c / "wide-unknown.pt",
             "-o", tmp / "o6.3dmw"), 1, r"huge|variant", crafted=c / "wide-unknown.pt"),
        Case("checkpoint: compressai N=M=65536", harness("compress", image, "-m", c / "wide-compressai.pt",
             "-o", tmp / "o7.3dmw"), 1, r"65536|width", crafted=c / "wide-compressai.pt"),
        Case("import-weights: stride-0 N=M=20000", harness("import-weights", "compressai:mbt2018-mean", "--quality",
             "3", "--from", c / "stride0-20000.pth", "--out", tmp / "imp1"), 1, r"20000|width|shape",
             crafted=c / "stride0-20000.pth"),
        Case("import-weights: stride-0 N=M=6000", harness("import-weights", "compressai:mbt2018-mean", "--quality",
             "3", "--from", c / "stride0-6000.pth", "--out", tmp / "imp2"), 1, r"6000|width|shape",
             crafted=c / "stride0-6000.pth"),
        Case("model file of random bytes", harness("compress", image, "-m", c / "random.pt", "-o", tmp / "o8.3dmw"),
             1, r"^(?!.*weights_only).*random\.pt", crafted=c / "random.pt"),
        Case("model file that is a pickle", harness("compress", image, "-m", c / "pickle.pt", "-o", tmp / "o9.3dmw"),
             1, r"^(?!.*weights_only).*pickle\.pt", crafted=c / "pickle.pt"),
        Case("model file that is a PNG", harness("compress", image, "-m", c / "image.pt", "-o", tmp / "o10.3dmw"),
             1, r"^(?!.*weights_only).*image\.pt"),
        Case("flat 9400x9400 PNG", harness("compress", c / "flat-9400.png", "-m", model, "-o", tmp / "o11.3dmw"),
             1, r"9400|memory|GB"),
        Case("16-bit RGB PNG", harness("compress", c / "rgb16.png", "-m", model, "-o", tmp / "o12.3dmw"), 0,
             check=notice(tmp / "o12.3dmw", "16-bit")),
        Case("animated GIF", harness("compress", c / "animated.gif", "-m", model, "-o", tmp / "o13.3dmw"), 0,
             check=notice(tmp / "o13.3dmw", "frame")),
        Case("rerun --plan DIR", harness("rerun", "--plan", plans), 1, r"plans"),
        Case("plan with NUL in name", harness("rerun", "--plan", plans / "nul-name.toml"), 1, r"name"),
        Case("plan with NUL in work_dir", harness("rerun", "--plan", plans / "nul-work.toml"), 1, r"work_dir"),
    ]
    if leaderboards:
        found += leaderboard_cases(tmp, keep, env)
    return found


def leaderboard_cases(tmp: Path, keep: Path, env: dict[str, str]) -> list[Case]:
    images = keep / "images"
    images.mkdir()
    for name in ("kodim01", "kodim02", "kodim03"):
        Image.open(KODAK / f"{name}.png").crop((0, 0, 256, 192)).save(images / f"{name}.png")
    one = keep / "one-pixel"
    shutil.copytree(images, one)
    Image.new("RGB", (1, 1), (10, 20, 30)).save(one / "dot.png")
    broken = keep / "broken"
    shutil.copytree(images, broken)
    (broken / "cut.png").write_bytes((images / "kodim01.png").read_bytes()[:3000])
    from compressai.models import MeanScaleHyperprior

    torch.manual_seed(0)
    torch.save(MeanScaleHyperprior(N=32, M=48).state_dict(), keep / "msh.pth")
    subprocess.run(harness("import-weights", "compressai:mbt2018-mean", "--quality", "3", "--from", keep / "msh.pth",
                           "--out", tmp / "imported"), env=env, check=True, capture_output=True)
    reports = tmp / "reports"
    common = ["--reports", reports, "--num-cpus", "1", "--no-progress", "--metrics", "psnr_yuv"]

    def board(run: str, *args: str) -> list[str]:
        return harness("leaderboard", "--dataset", f"folder:{images}", "--run", run, *common, *args)

    def no_inf(output: str) -> str:
        # "inf" may appear only as the reason of the rows set aside, never as a number shown
        texts = output + " ".join(p.read_text() for p in (reports / "dot").glob("*.md"))
        shown = [line for line in texts.splitlines() if re.search(r"\binf\b", line) and "set aside" not in line]
        if shown:
            return f"inf shown: {shown[0][:120]}"
        return "" if "set aside" in texts else "the report does not say which rows were set aside"

    def dataset_names(output: str) -> str:
        texts = output + " ".join(p.read_text() for p in (reports / "broken").glob("*.md"))
        if "harness-cell" in texts:
            return "a temporary cell path in the output or report"
        return "" if "cut.png" in texts else "the truncated file is not named"

    return [
        Case("leaderboard --models with an imported model", board("imported", "--codecs", "jpeg", "--models",
             tmp / "imported"), 0),
        Case("leaderboard with a 1x1 image", harness("leaderboard", "--dataset", f"folder:{one}", "--run", "dot",
             "--codecs", "jpeg,webp", "--anchor", "webp", *common), 0, check=no_inf),
        Case("leaderboard with a truncated image", harness("leaderboard", "--dataset", f"folder:{broken}", "--run",
             "broken", "--codecs", "jpeg", *common), 0, check=dataset_names),
    ]


def two_leaderboards(tmp: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """Two leaderboards started together on one run folder: every row of both, or one refused up front."""
    import pandas as pd

    images = tmp / "race-images"
    images.mkdir()
    for name in ("kodim01", "kodim02"):
        Image.open(KODAK / f"{name}.png").crop((0, 0, 256, 192)).save(images / f"{name}.png")
    common = ["--dataset", f"folder:{images}", "--reports", tmp / "race", "--run", "race", "--num-cpus", "1",
              "--no-progress", "--no-report"]
    runs = [subprocess.Popen(harness("leaderboard", "--codecs", codecs, *common), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for codecs in ("jpeg,webp", "jpeg2000")]
    done = [(run.wait(), run.communicate()) for run in runs]
    rows = pd.read_parquet(tmp / "race" / "race" / "results.parquet")
    codecs = set(rows["codec"])
    problems = []
    statuses = [code for code, _ in done]
    if statuses == [0, 0]:
        if codecs != {"jpeg", "webp", "jpeg2000"}:
            problems.append(f"both exited 0 but results.parquet holds only {sorted(codecs)}")
    elif sorted(statuses) == [0, 1]:
        loser = done[statuses.index(1)][1][1].strip().splitlines()
        if len(loser) != 1 or "lock" not in loser[0]:
            problems.append(f"the refused run did not say so in one line: {loser}")
    else:
        problems.append(f"exit statuses {statuses}")
    return f"{statuses}, codecs in results.parquet: {sorted(codecs)}", problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leaderboards", action="store_true", help="add the leaderboard cases")
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    failed = 0
    with tempfile.TemporaryDirectory(prefix="hostile-") as name:
        tmp = Path(name)
        keep = tmp / "keep"  # everything here must be unchanged by every case
        keep.mkdir()
        print("| case | exit | stderr lines | peak RSS MB | wall s | verdict |")
        print("|---|---|---|---|---|---|")
        for case in cases(tmp, keep, env, args.leaderboards):
            if args.only not in case.name:
                continue
            outcome = run_case(case, env, tmp, keep)
            verdict = "ok" if not outcome.problems else "FAIL: " + "; ".join(outcome.problems)
            failed += bool(outcome.problems)
            print(f"| {case.name} | {outcome.status} | {outcome.stderr_lines} | {outcome.rss_mb:.0f} | "
                  f"{outcome.wall_s:.1f} | {verdict} |", flush=True)
        if args.leaderboards and args.only in "two leaderboards on one run folder":
            summary, problems = two_leaderboards(tmp, env)
            failed += bool(problems)
            print(f"| two leaderboards on one run folder | {summary} | | | | "
                  f"{'ok' if not problems else 'FAIL: ' + '; '.join(problems)} |")
    print(f"\n{failed} case(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
