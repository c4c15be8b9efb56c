"""Published rate-distortion anchors (``reports/anchors/``).

The folder holds unchanged copies of published RD data from
``shared/data/reference/`` and a ``manifest.json`` that names, for every file,
its format, the harness dataset names it covers, a label and its source. Three
formats occur: CompressAI's result JSON (``results.bpp``/``psnr-rgb``/
``ms-ssim-rgb``), a per-dataset JSON (``datasets.<name>.bpp``/``psnr-rgb``)
and the 3DM-WeConvene paper's Table I as CSV (reported BD-rates, no points).

Published curves are compared only with the published VTM curve of the same
dataset (:func:`anchor_bdrate_table`); they are never mixed with measured rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.pixels.msssim import ms_ssim_db
from harness.report.bdrate import RDCurve, bd_quality, bd_rate

ANCHORS_DIR = Path(__file__).resolve().parents[2] / "reports" / "anchors"


@dataclass(frozen=True)
class PublishedCurve:
    """One published RD curve on one dataset (MS-SSIM dB is None when not published)."""

    dataset: str
    label: str
    bpp: np.ndarray
    psnr: np.ndarray
    ms_ssim_db: np.ndarray | None
    file: str
    source: str
    is_vtm: bool
    plot: bool
    table1_method: str | None
    codec: str | None = None

    def curve(self, metric: str) -> RDCurve | None:
        quality = self.psnr if metric == "psnr" else self.ms_ssim_db
        return None if quality is None else RDCurve.of(self.bpp, quality)


def _manifest(anchors_dir: Path) -> list[dict]:
    path = anchors_dir / "manifest.json"
    try:
        return json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError) as error:
        raise HarnessError(f"cannot read the published-anchor manifest {path}: {error}") from error


def load_published_curves(anchors_dir: Path = ANCHORS_DIR) -> list[PublishedCurve]:
    """Every published RD curve listed in the manifest, one per (file, dataset)."""
    curves: list[PublishedCurve] = []
    for entry in _manifest(anchors_dir):
        if entry["format"] == "table1-csv":
            continue
        path = anchors_dir / entry["file"]
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise HarnessError(f"cannot read published anchor {path}: {error}") from error
        if entry["format"] == "compressai-json":
            blocks = {key: data["results"] for key in entry["datasets"]}
        elif entry["format"] == "datasets-json":
            blocks = {key: data["datasets"][key] for key in entry["datasets"]}
        else:
            raise HarnessError(f"{path}: unknown anchor format {entry['format']!r} in manifest.json")
        for key, block in blocks.items():
            ms_ssim = block.get("ms-ssim-rgb")
            curves.append(
                PublishedCurve(
                    dataset=entry["datasets"][key],
                    label=entry["label"],
                    bpp=np.asarray(block["bpp"], dtype=float),
                    psnr=np.asarray(block["psnr-rgb"], dtype=float),
                    ms_ssim_db=None if ms_ssim is None else ms_ssim_db(np.asarray(ms_ssim, dtype=float)),
                    file=entry["file"],
                    source=entry["source"],
                    is_vtm=entry.get("role") == "vtm",
                    plot=bool(entry.get("plot")),
                    table1_method=entry.get("table1_method"),
                    codec=entry.get("codec"),
                )
            )
    return curves


def load_table1(anchors_dir: Path = ANCHORS_DIR) -> pd.DataFrame:
    """The paper's Table I (reported numbers), with harness dataset names."""
    for entry in _manifest(anchors_dir):
        if entry["format"] == "table1-csv":
            table = pd.read_csv(anchors_dir / entry["file"], comment="#")
            table["dataset"] = table["dataset"].map(entry["datasets"]).fillna(table["dataset"])
            return table
    return pd.DataFrame(columns=["dataset", "method", "enc_s", "dec_s", "bd_rate_vs_vvc_pct", "params_m"])


def anchor_bdrate_table(anchors_dir: Path = ANCHORS_DIR, method: str = "pchip") -> pd.DataFrame:
    """BD-rate of every published curve against the published VTM curve of its dataset.

    Columns: dataset, label, metric, bd_rate_pct, bd_quality_db, reliable, flags,
    overlap_pct, paper_bd_rate_pct (Table I's number for the same method, where
    the paper lists it; the paper's VTM run is not CompressAI's, so the two
    differ by the anchor as well as by the interpolation).
    """
    curves = load_published_curves(anchors_dir)
    table1 = load_table1(anchors_dir)
    rows = []
    for dataset in sorted({c.dataset for c in curves}):
        vtm = next((c for c in curves if c.dataset == dataset and c.is_vtm), None)
        for curve in (c for c in curves if c.dataset == dataset and not c.is_vtm):
            paper = table1[(table1["dataset"] == dataset) & (table1["method"] == curve.table1_method)]
            paper_value = float(paper["bd_rate_vs_vvc_pct"].iloc[0]) if len(paper) else math.nan
            for metric in ("psnr", "msssim"):
                test = curve.curve(metric)
                if test is None:
                    continue
                if vtm is None:
                    rows.append(_anchor_row(dataset, curve.label, metric, None, None, paper_value, "no published VTM"))
                    continue
                reference = vtm.curve(metric)
                rows.append(
                    _anchor_row(
                        dataset,
                        curve.label,
                        metric,
                        bd_rate(reference, test, method),
                        bd_quality(reference, test, method),
                        paper_value if metric == "psnr" else math.nan,
                        None,
                    )
                )
    return pd.DataFrame(rows)


def _anchor_row(dataset, label, metric, rate, quality, paper_value, missing) -> dict:
    return {
        "dataset": dataset,
        "label": label,
        "metric": metric,
        "bd_rate_pct": rate.value if rate else math.nan,
        "bd_quality_db": quality.value if quality else math.nan,
        "reliable": bool(rate and rate.reliable),
        "flags": missing or (rate.flag_text if rate else ""),
        "overlap_pct": rate.overlap * 100.0 if rate else math.nan,
        "paper_bd_rate_pct": paper_value,
    }
