"""The report's numbers, computed from a run's ``results.parquet``: the BD-rate anchor, BD-rates
with their bootstrap CIs and reliability flags, the JPEG AI summary, measured vs published
curves, timing and parameters. Frames in, frames out; the prose is :mod:`harness.report.sections`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.metrics import CURVES, JPEG_AI_CURVES, curve_columns
from harness.leaderboard.results import RESULTS_FILE, read as read_results
from harness.report.bdrate import PerImageCurves, bd_quality, bd_rate, bootstrap_ci, per_image_curves
from harness.report.config import ANCHOR_PREFERENCE
from harness.report.tables import curve_labels

PUBLISHED_METRICS = ("psnr", "msssim")  # the curves published anchors (CompressAI's results) carry
JPEG_AI = "jpeg_ai"  # bdrate.csv metric of the JPEG AI summary row
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
CI_UNSTABLE = "ci-unstable"
ANCHOR_MISSING = "anchor-missing"


@dataclass(frozen=True)
class Anchor:
    codec: str
    config: str


def load_results(run_dir: Path) -> pd.DataFrame:
    """The run's ``results.parquet`` with the report's derived curve columns."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise HarnessError(f"{path} not found: run `harness leaderboard` first or point at a run folder")
    frame = curve_columns(read_results(path))
    frame["config"] = frame["config"].fillna("").astype(str)
    return frame


def measured_metrics(ok: pd.DataFrame) -> tuple[str, ...]:
    """Keys of :data:`~harness.leaderboard.metrics.CURVES` with at least one value in ``ok`` (the run measured them)."""
    return tuple(key for key, (column, _) in CURVES.items() if column in ok.columns and ok[column].notna().any())


def default_anchor(results: pd.DataFrame) -> str:
    """The paper's anchor (VTM) when the run has ok rows of it, else VVenC's ``vvc``."""
    present = set(results.loc[results["status"] == "ok", "codec"])
    return next((codec for codec in ANCHOR_PREFERENCE if codec in present), ANCHOR_PREFERENCE[-1])


def resolve_anchor(ok: pd.DataFrame, anchor: str) -> tuple[Anchor, str]:
    """``codec`` or ``codec:config`` -> the anchor curve and a note for the tables.

    A codec absent from the run (binary unavailable, or not run) still gives a
    report: every BD row is flagged ``anchor-missing`` and the note says why.
    A codec run with several configs and no config named uses the one with the
    most ok rows (ties: alphabetical) and says so; naming a config the run
    does not have is an error.
    """
    codec, _, config = anchor.partition(":")
    available = ok[["codec", "config"]].drop_duplicates()
    rows_per_config = ok.loc[ok["codec"] == codec].groupby("config").size()
    if rows_per_config.empty:
        known = ", ".join(sorted(available["codec"].unique()))
        note = f"anchor `{codec}` has no ok results in this run (codecs with results: {known}); choose one with --anchor"
        warnings.warn(note)
        return Anchor(codec, config), note
    configs = sorted(rows_per_config.index)
    if config:
        if config not in configs:
            raise HarnessError(f"anchor {codec!r} has no config {config!r} in this run; it has {', '.join(configs)}")
        return Anchor(codec, config), ""
    if len(configs) == 1:
        return Anchor(codec, configs[0]), ""
    chosen = sorted(configs, key=lambda c: (-rows_per_config[c], c))[0]
    note = f"anchor `{codec}` ran with configs {', '.join(configs)}; using `{chosen}` (pass --anchor {codec}:CONFIG to change)"
    return Anchor(codec, chosen), note


def compute_bdrates(
    ok: pd.DataFrame, anchor: Anchor, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Summary rows (one per dataset × curve × metric) and per-image rows."""
    labels = curve_labels(ok)
    summary, per_image = [], []
    measured = measured_metrics(ok)
    for dataset, rows in ok.groupby("dataset", sort=True):
        anchor_rows = rows[(rows["codec"] == anchor.codec) & (rows["config"] == anchor.config)]
        for (codec, config), curve_rows in rows.groupby(["codec", "config"], sort=True):
            # A BD-rate compares the two curves on the images both have: an image one of them
            # lacks (set aside as degenerate, or every cell failed) would shift one mean alone.
            images = sorted(set(curve_rows["image"]) & set(anchor_rows["image"]) if len(anchor_rows)
                            else set(curve_rows["image"]))
            for metric in measured:
                column = CURVES[metric][0]
                base = {
                    "dataset": dataset, "codec": codec, "config": config, "label": labels[(codec, config)],
                    "anchor": f"{anchor.codec}:{anchor.config}", "metric": metric,
                    "is_anchor": (codec, config) == (anchor.codec, anchor.config),
                }
                test = per_image_curves(curve_rows, images, column)
                if anchor_rows.empty:
                    summary.append(_summary_row(base, test, None, {}, None, None, ANCHOR_MISSING, 0))
                    continue
                reference = per_image_curves(anchor_rows, images, column)
                mean_ref, mean_test = reference.mean_curve(), test.mean_curve()
                rate = bd_rate(mean_ref, mean_test)
                methods = {method: bd_rate(mean_ref, mean_test, method) for method in ("cubic", "akima")}
                quality = bd_quality(mean_ref, mean_test)
                ci = bootstrap_ci(reference, test, "rate", "pchip", resamples, seed) if math.isfinite(rate.value) else None
                summary.append(_summary_row(base, test, rate, methods, quality, ci, None,
                                            int(reference.rate.shape[1])))
                for index, image in enumerate(images if not base["is_anchor"] else []):
                    one = bd_rate(reference.image_curve(index), test.image_curve(index))
                    per_image.append(
                        {**{k: base[k] for k in ("dataset", "codec", "config", "label", "anchor", "metric")},
                         "image": image, "method": "pchip", "bd_rate_pct": one.value,
                         "reliable": one.reliable, "flags": one.flag_text}
                    )
    per_image_columns = ["dataset", "codec", "config", "label", "anchor", "metric", "image", "method", "bd_rate_pct", "reliable", "flags"]
    summary_frame = pd.DataFrame(summary)
    jpeg_ai = jpeg_ai_summary(summary_frame)
    if not jpeg_ai.empty:
        summary_frame = pd.concat([summary_frame, jpeg_ai], ignore_index=True)
    return summary_frame, pd.DataFrame(per_image, columns=per_image_columns)


def jpeg_ai_summary(summary: pd.DataFrame) -> pd.DataFrame:
    """Per curve, the mean BD-rate over the JPEG AI metrics the run measured (metric ``jpeg_ai``).
    Reliable only when all ten are there and each is reliable; no CI (the mean of ten CIs is not one)."""
    rows = []
    mine = summary[summary["metric"].isin(JPEG_AI_CURVES)] if not summary.empty else summary
    for _, group in mine.groupby(["dataset", "codec", "config"], sort=True):
        first = group.iloc[0]
        values = group["bd_rate_pct"].astype(float)
        missing = [m for m in JPEG_AI_CURVES if m not in set(group["metric"])]
        flags = [f"mean of {len(group)} of {len(JPEG_AI_CURVES)}"] if missing else []
        if not group["reliable"].all():
            flags.append("unreliable: " + ", ".join(group.loc[~group["reliable"], "metric"]))
        rows.append({
            **{k: first[k] for k in ("dataset", "codec", "config", "label", "anchor", "is_anchor")},
            "metric": JPEG_AI, "method": "pchip",
            "bd_rate_pct": float(values.mean()) if values.notna().all() else math.nan,
            "ci95_low": math.nan, "ci95_high": math.nan, "ci_valid_resamples": 0,
            "bd_rate_cubic_pct": math.nan, "bd_quality_db": math.nan,
            "reliable": not flags, "flags": "; ".join(flags),
            "overlap_pct": float(group["overlap_pct"].min()), "n_images": int(group["n_images"].max()),
            "n_points": int(group["n_points"].max()), "bd_rate_akima_pct": math.nan,
            "quality_lo": math.nan, "quality_hi": math.nan, "anchor_points": int(group["anchor_points"].max()),
        })
    return pd.DataFrame(rows)


def _summary_row(base, test: PerImageCurves, rate, methods: dict, quality, ci, missing, anchor_points: int) -> dict:
    """One row of bdrate.csv: PCHIP's BD-rate with its CI and flags, then the cubic and Akima
    values over the same common quality range (``quality_lo``..``quality_hi``, in the metric's
    unit) from the same points (``n_points`` of the test curve, ``anchor_points`` of the anchor's)."""
    flags = [missing] if missing else ([rate.flag_text] if rate.flags else [])
    if ci is not None and not ci.stable:
        flags.append(CI_UNSTABLE)
    nan = math.nan
    return {
        **base,
        "method": "pchip",
        "bd_rate_pct": rate.value if rate else nan,
        "ci95_low": ci.low if ci else nan,
        "ci95_high": ci.high if ci else nan,
        "ci_valid_resamples": ci.valid if ci else 0,
        "bd_rate_cubic_pct": methods["cubic"].value if methods else nan,
        "bd_quality_db": quality.value if quality else nan,
        "reliable": bool(rate and rate.reliable and not flags),
        "flags": ", ".join(flags),
        "overlap_pct": rate.overlap * 100.0 if rate else nan,
        "n_images": int(np.isfinite(test.rate).any(axis=1).sum()),
        "n_points": int(test.rate.shape[1]),
        "bd_rate_akima_pct": methods["akima"].value if methods else nan,
        "quality_lo": rate.span[0] if rate else nan,
        "quality_hi": rate.span[1] if rate else nan,
        "anchor_points": anchor_points,
    }


def fidelity_summary(ok: pd.DataFrame, published: list) -> pd.DataFrame:
    """Measured curves against published ones on the same dataset: the
    published curve of the same codec (does the harness reproduce it?) and
    the published VTM curve (where does it land against the paper's anchor?)."""
    labels = curve_labels(ok)
    rows = []
    for (dataset, codec, config), curve_rows in ok.groupby(["dataset", "codec", "config"], sort=True):
        here = [p for p in published if p.dataset == dataset]
        vtm = next((p for p in here if p.is_vtm), None)
        twin = next((p for p in here if p.codec == codec), None)
        if vtm is None and twin is None:
            continue
        for metric in PUBLISHED_METRICS:
            column = CURVES[metric][0]
            points = per_image_curves(curve_rows, sorted(curve_rows["image"].unique()), column).mean_curve()
            row = {"dataset": dataset, "codec": codec, "config": config, "label": labels[(codec, config)], "metric": metric}
            for key, reference in (("same_codec", twin), ("vtm", vtm)):
                curve = reference.curve(metric) if reference else None
                result = bd_rate(curve, points) if curve is not None else None
                row[f"{key}_label"] = reference.label if reference else ""
                row[f"{key}_bd_rate_pct"] = result.value if result else math.nan
                row[f"{key}_reliable"] = bool(result and result.reliable)
                missing = f"no published {dataset} curve of {codec}" if key == "same_codec" else ""
                row[f"{key}_flags"] = result.flag_text if result else ("not published" if reference else missing)
            rows.append(row)
    return pd.DataFrame(rows)


def timing_summary(ok: pd.DataFrame) -> pd.DataFrame:
    """Mean and median encode/decode seconds per image encode, with device(s); for learned codecs
    the mean seconds of their networks (g_a, g_s; the rest is entropy coding); the largest
    encode/decode peak memory (bytes; NaN where none was recorded) and the smallest tile side."""
    labels = curve_labels(ok)
    out = []
    for (dataset, codec, config), rows in ok.groupby(["dataset", "codec", "config"], sort=True):
        out.append({
            "dataset": dataset, "codec": codec, "config": config, "label": labels[(codec, config)],
            "enc_s": rows["enc_s"].mean(), "dec_s": rows["dec_s"].mean(),
            "enc_median_s": rows["enc_s"].median(), "dec_median_s": rows["dec_s"].median(),
            "enc_peak_bytes": rows["enc_peak_bytes"].max(), "dec_peak_bytes": rows["dec_peak_bytes"].max(),
            "tile": rows["tile"].min(),
            "encodes": len(rows), "device": ", ".join(sorted(rows["device"].fillna("?").astype(str).unique())),
            "precision": ", ".join(sorted(rows["precision"].dropna().astype(str).unique())),
            "enc_net_s": rows["enc_net_s"].mean(), "dec_net_s": rows["dec_net_s"].mean(),
        })
    return pd.DataFrame(out, columns=["dataset", "codec", "config", "label", "enc_s", "dec_s", "enc_median_s",
                                      "dec_median_s", "enc_peak_bytes", "dec_peak_bytes", "tile", "encodes",
                                      "device", "precision", "enc_net_s", "dec_net_s"])


def params_summary(ok: pd.DataFrame) -> pd.DataFrame:
    """Parameters in millions for learned models (rows whose ``params`` is set)."""
    labels = curve_labels(ok)
    learned = ok[ok["params"].notna()]
    out = [
        {"codec": codec, "config": config, "label": labels[(codec, config)],
         "params_m": float(rows["params"].max()) / 1e6,
         "codec_version": ", ".join(sorted(rows["codec_version"].astype(str).unique()))}
        for (codec, config), rows in learned.groupby(["codec", "config"], sort=True)
    ]
    return pd.DataFrame(out, columns=["codec", "config", "label", "params_m", "codec_version"])
