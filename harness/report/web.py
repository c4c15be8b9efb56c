"""``index.html``: the run's report as one page a reviewer reads in a browser, opened straight
from disk (file://) with no network.

The page is the Markdown report's second rendering: :func:`page_data` turns the tables
:mod:`harness.report.summaries` computed (BD-rates with CIs, flags, cubic and Akima beside
PCHIP, timing, parameters) and the run's rows into one JSON document, and :func:`write_page`
writes it into ``index.html`` with the page's own script and style (``assets/web.js`` and
``assets/web.css`` of this package, inlined). Plotly draws the curves from its offline bundle,
copied once into the run folder (:data:`PLOTLY_FILE`); nothing is fetched from anywhere.
The crops the leaderboard kept (:func:`harness.leaderboard.kept.crop_path`) are shown in
place; a crop that is missing is named as missing, never an error.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import plotly
from plotly.offline import get_plotlyjs

from harness.atomic import write_atomic
from harness.leaderboard.kept import crop_path, original_crop_path
from harness.leaderboard.metrics import CURVES
from harness.report.anchors import PublishedCurve
from harness.report.bdrate import (FEW_POINTS, INVALID_VALUES, LOW_OVERLAP, MIN_OVERLAP, MIN_POINTS, NO_OVERLAP,
                                   NON_MONOTONIC, per_image_curves)
from harness.report.summaries import ANCHOR_MISSING, CI_UNSTABLE, PUBLISHED_METRICS, Anchor
from harness.report.tables import METRIC_NAMES, curve_labels

PAGE = "index.html"
PLOTLY_FILE = "assets/plotly.min.js"  # plotly's offline bundle, one copy per run folder
PEAK_COLUMNS = ("enc_peak_bytes", "dec_peak_bytes")  # rendered when the results carry them

# What each reliability flag means, shown on hover beside the number it marks.
FLAG_HELP = {
    FEW_POINTS: f"a curve has fewer than {MIN_POINTS} points: the interpolation is not constrained",
    INVALID_VALUES: "a point is not finite or has a rate of 0",
    NON_MONOTONIC: "quality does not rise with rate along a curve, so it is not a function of rate",
    NO_OVERLAP: "the two curves share no quality range: nothing to compare",
    LOW_OVERLAP: f"the curves share less than {MIN_OVERLAP:.0%} of the shorter one's quality range",
    CI_UNSTABLE: "more than 10 % of the bootstrap resamples failed a check: the interval is not trustworthy",
    ANCHOR_MISSING: "the anchor has no ok results on this dataset",
}


@dataclass(frozen=True)
class WebInputs:
    """What the page shows: the report's computed tables and the rows they come from."""

    run_name: str
    results: pd.DataFrame  # every row of results.parquet
    ok: pd.DataFrame  # the rows the averages take
    anchor: Anchor
    summary: pd.DataFrame  # bdrate.csv's rows
    per_image: pd.DataFrame  # bdrate_per_image.parquet's rows
    timing: pd.DataFrame
    params: pd.DataFrame
    published: tuple[PublishedCurve, ...]
    models: tuple[dict[str, Any], ...]  # run.json's model cards
    demo_scale: bool  # the learned models are far short of the paper's training
    metrics: tuple[str, ...]  # the curves drawn
    notes: tuple[str, ...]  # what the reader must know first (the anchor's choice, rows excluded, set aside)


def explain_flags(text: str) -> str:
    """The meaning of each flag in a ``flags`` cell (``anchor:``/``test:`` say which curve)."""
    parts = []
    for flag in filter(None, (part.strip() for part in str(text).split(","))):
        side, _, code = flag.rpartition(":")
        meaning = FLAG_HELP.get(code)
        parts.append(f"{flag}: {meaning}" + (f" ({side} curve)" if side else "") if meaning else flag)
    return "; ".join(parts)


def _number(value: Any) -> float | None:
    """JSON has no NaN: a missing number is null."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _distinct(frame: pd.DataFrame, column: str) -> list[str]:
    return sorted(frame[column].dropna().astype(str).unique()) if column in frame.columns else []


def _trace(name: str, rows: pd.DataFrame, images: list[str], column: str, **marks: Any) -> dict[str, Any]:
    """One measured curve: the mean points the BD-rates use, each with its image count and ladder value."""
    curve = per_image_curves(rows, images, column)
    mean = curve.mean_curve()
    counts = (~pd.isna(curve.rate)).sum(axis=0)
    qualities = sorted(rows["quality"].unique())
    return {"name": name, "x": [_number(v) for v in mean.rate], "y": [_number(v) for v in mean.quality],
            "n": [int(c) for c in counts], "ladder": [float(q) for q in qualities], **marks}


def _curves(inputs: WebInputs, dataset: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Per drawn metric, the traces of one dataset: measured curves, then published ones (dashed)."""
    labels = curve_labels(inputs.ok)
    images = sorted(rows["image"].unique())
    plots = []
    for metric in inputs.metrics:
        column, ylabel = CURVES[metric]
        traces = [
            _trace(labels[(codec, config)], curve_rows, images, column, codec=codec, config=config,
                   learned=bool(curve_rows["params"].notna().any()),
                   anchor=(codec, config) == (inputs.anchor.codec, inputs.anchor.config), published=False)
            for (codec, config), curve_rows in rows.groupby(["codec", "config"], sort=True)
        ]
        traces += [
            {"name": f"{p.label} (published)", "x": [_number(v) for v in p.bpp],
             "y": [_number(v) for v in p.curve(metric).quality], "published": True, "learned": False, "anchor": False}
            for p in inputs.published
            if metric in PUBLISHED_METRICS and p.dataset == dataset and p.curve(metric) is not None
        ]
        plots.append({"metric": metric, "ylabel": ylabel, "traces": traces})
    return plots


def _bd_rows(summary: pd.DataFrame, dataset: str) -> list[dict[str, Any]]:
    if summary.empty:
        return []
    rows = []
    for r in summary[summary["dataset"] == dataset].itertuples():
        rows.append({
            "metric": r.metric, "metric_name": METRIC_NAMES.get(r.metric, r.metric), "label": r.label,
            "is_anchor": bool(r.is_anchor), "pchip": _number(r.bd_rate_pct), "ci_low": _number(r.ci95_low),
            "ci_high": _number(r.ci95_high), "cubic": _number(r.bd_rate_cubic_pct),
            "akima": _number(r.bd_rate_akima_pct), "bd_quality": _number(r.bd_quality_db),
            "quality_lo": _number(r.quality_lo), "quality_hi": _number(r.quality_hi),
            "points": int(r.n_points), "anchor_points": int(r.anchor_points), "images": int(r.n_images),
            "overlap": _number(r.overlap_pct), "reliable": bool(r.reliable), "flags": str(r.flags or ""),
            "flags_help": explain_flags(r.flags or ""),
        })
    return rows


def _image_rows(inputs: WebInputs, run_dir: Path, dataset: str, rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Per image: its curves per drawn metric, its BD-rates, the crops the leaderboard kept."""
    labels = curve_labels(inputs.ok)
    per_image = inputs.per_image[inputs.per_image["dataset"] == dataset]
    images = []
    for image, mine in rows.groupby("image", sort=True):
        sha = str(mine["image_sha256"].iloc[0])
        original = original_crop_path(run_dir, sha)
        curves, crops = [], []
        for (codec, config), curve_rows in mine.groupby(["codec", "config"], sort=True):
            curve_rows = curve_rows.sort_values("quality")
            points = {metric: [_number(v) for v in curve_rows[CURVES[metric][0]]] for metric in inputs.metrics}
            curves.append({"name": labels[(codec, config)], "x": [_number(v) for v in curve_rows["bpp"]],
                           "ladder": [float(q) for q in curve_rows["quality"]], "y": points})
            kept = []
            for row in curve_rows.to_dict("records"):
                path = crop_path(run_dir, row)
                if path.is_file():
                    kept.append({"quality": float(row["quality"]), "bpp": _number(row["bpp"]),
                                 "psnr": _number(row["psnr_rgb"]), "src": path.relative_to(run_dir).as_posix()})
            crops.append({"name": labels[(codec, config)], "points": kept})
        bd = per_image[per_image["image"] == image]
        images.append({
            "image": image, "width": int(mine["width"].iloc[0]), "height": int(mine["height"].iloc[0]),
            "original": original.relative_to(run_dir).as_posix() if original.is_file() else None,
            "curves": curves, "crops": crops,
            "bd": [{"label": r.label, "metric_name": METRIC_NAMES.get(r.metric, r.metric), "value": _number(r.bd_rate_pct),
                    "reliable": bool(r.reliable), "flags_help": explain_flags(r.flags)} for r in bd.itertuples()],
        })
    return images


def _timing_rows(inputs: WebInputs, dataset: str) -> list[dict[str, Any]]:
    timing = inputs.timing[inputs.timing["dataset"] == dataset]
    params = {(r.codec, r.config): r.params_m for r in inputs.params.itertuples()}
    rows = []
    for r in timing.itertuples():
        memory = {column: _number(getattr(r, column)) for column in PEAK_COLUMNS if column in timing.columns}
        rows.append({"label": r.label, "enc_s": _number(r.enc_s), "dec_s": _number(r.dec_s),
                     "enc_median_s": _number(r.enc_median_s), "dec_median_s": _number(r.dec_median_s),
                     "enc_net_s": _number(r.enc_net_s), "dec_net_s": _number(r.dec_net_s),
                     "encodes": int(r.encodes), "device": r.device, "precision": r.precision or "",
                     "params_m": _number(params.get((r.codec, r.config))), **memory})
    return rows


def _bits_rows(rows: pd.DataFrame, labels: dict[tuple[str, str], str]) -> list[dict[str, Any]]:
    """Learned cells: the bits the likelihoods estimate, the bitstream's, and the padding's share."""
    learned = rows[rows["est_bits"].notna()].sort_values(["codec", "config", "image", "quality"])
    return [{"label": labels[(r.codec, r.config)], "image": r.image, "quality": float(r.quality),
             "est_bits": _number(r.est_bits), "bits": int(r.bytes) * 8, "pad_bits": _number(r.pad_bits)}
            for r in learned.itertuples()]


def _provenance(inputs: WebInputs) -> dict[str, Any]:
    results = inputs.results
    versions = (results.dropna(subset=["codec_version"]).groupby(["codec", "config"], sort=True)["codec_version"]
                .agg(lambda v: sorted(set(v))) if len(results) else pd.Series(dtype=object))
    anchor_versions = _distinct(inputs.ok[inputs.ok["codec"] == inputs.anchor.codec], "codec_version")
    return {
        "harness": _distinct(results, "harness_version"), "commits": _distinct(results, "git_commit"),
        "devices": _distinct(results, "device"), "plotly": plotly.__version__,
        "command": " ".join(["harness", *sys.argv[1:]]) if Path(sys.argv[0]).name in ("harness", "__main__.py") else "",
        "codecs": [{"curve": f"{codec}:{config}", "versions": list(v)} for (codec, config), v in versions.items()],
        "anchor": {"codec": inputs.anchor.codec, "config": inputs.anchor.config,
                   "versions": anchor_versions},
        "models": [{k: (_number(v) if isinstance(v, float) else v) for k, v in point.items()} for point in inputs.models],
    }


def page_data(inputs: WebInputs, run_dir: Path) -> dict[str, Any]:
    """The page's JSON document: everything it shows, computed here so the script only draws."""
    datasets = []
    for dataset, rows in inputs.ok.groupby("dataset", sort=True):
        datasets.append({
            "name": dataset, "images": int(rows["image"].nunique()), "plots": _curves(inputs, dataset, rows),
            "bdrate": _bd_rows(inputs.summary, dataset), "timing": _timing_rows(inputs, dataset),
            "bits": _bits_rows(rows, curve_labels(inputs.ok)),
            "per_image": _image_rows(inputs, run_dir, dataset, rows),
        })
    return {"run": inputs.run_name, "notes": list(inputs.notes), "demo_scale": inputs.demo_scale,
            "memory": [c for c in PEAK_COLUMNS if c in inputs.timing.columns], "datasets": datasets,
            "provenance": _provenance(inputs)}


def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath("assets", name).read_text()


def _write_plotly(run_dir: Path) -> None:
    """Plotly's offline bundle beside the page (rewritten only when the installed plotly differs)."""
    path = run_dir / PLOTLY_FILE
    bundle = get_plotlyjs()
    if not path.is_file() or path.stat().st_size != len(bundle.encode()) or path.read_text() != bundle:
        write_atomic(path, lambda tmp: tmp.write_text(bundle))


def render(data: dict[str, Any]) -> str:
    """``index.html``'s text: the data as JSON, the page's script and style inlined."""
    # "</" inside the JSON would close its <script> element early.
    blob = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>Leaderboard {data['run']}</title>\n<style>\n{_asset('web.css')}</style>\n"
        f"<script src=\"{PLOTLY_FILE}\"></script>\n</head>\n<body>\n<main id=\"page\"></main>\n"
        f"<script id=\"data\" type=\"application/json\">{blob}</script>\n<script>\n{_asset('web.js')}</script>\n"
        "</body>\n</html>\n"
    )


def write_page(run_dir: Path, data: dict[str, Any]) -> Path:
    """Write ``index.html`` (and plotly's bundle) into ``run_dir``; returns the page's path."""
    _write_plotly(run_dir)
    text = render(data)
    write_atomic(run_dir / PAGE, lambda tmp: tmp.write_text(text))
    return run_dir / PAGE


def empty_page(run_name: str, notes: tuple[str, ...]) -> dict[str, Any]:
    """The page of a run folder with nothing to show but why."""
    return {"run": run_name, "notes": list(notes), "demo_scale": False, "memory": [], "datasets": [],
            "provenance": {}}
