"""Leaderboard report of one run: BD-rate, timing and parameter tables, RD plots.

Input: ``<run>/results.parquet`` from the evaluation engine, one row per
(dataset, image, codec, config, quality). A curve is (dataset, codec, config);
its point at one quality is the mean over the ``ok`` images of bpp and of each
metric (PSNR-RGB and MS-SSIM (dB), the convention of CompressAI and of the paper,
plus every ``--metrics`` column the run measured). Rows with status ``error``
are left out of every average and counted in the README; so are the ok rows that
:func:`harness.eval.results.set_aside` holds back (an infinite PSNR: lossless), which
the README and bdrate.md count and name. A BD-rate compares two curves on the images
both have.

Output, written into the run folder (each file replaced atomically):
``bdrate.md``/``bdrate.csv`` (Table I layout, BD-rate vs the anchor with a
95 % image-bootstrap CI, BD-PSNR and reliability flags; then a column per
measured metric and the JPEG AI summary, metric ``jpeg_ai`` in the CSV), ``timing.md``,
``params.md``, ``fidelity.md`` (measured vs published curves of the same codec
and vs published VTM), ``rd-<dataset>-<metric>.png`` (psnr and msssim unless
``rd_plots`` asks for others),
``bdrate-<dataset>-per-image.png``, ``bdrate_per_image.parquet``,
``anchors-bdrate.md`` (published curves vs published VTM, a separate table)
and ``README.md`` embedding all of them.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.atomic import write_atomic
from harness.errors import HarnessError
from harness.slug import slug
from harness.eval import plots, tables
from harness.eval.models import learned_section
from harness.eval.summary import RUN_FILE, read_summary
from harness.eval.tables import curve_labels
from harness.eval.results import RESULTS_FILE, read as read_results, set_aside, set_aside_note, usable
from harness.eval.anchors import ANCHORS_DIR, anchor_bdrate_table, load_published_curves, load_table1
from harness.eval.bdrate import PerImageCurves, bd_quality, bd_rate, bootstrap_ci, per_image_curves
from harness.eval.metrics import CURVES, JPEG_AI_CURVES, METRICS as MEASURES, curve_columns

METRICS = CURVES
PUBLISHED_METRICS = ("psnr", "msssim")  # the metrics published curves (CompressAI's results) carry
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
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise HarnessError(f"{path} not found: run `harness leaderboard` first or point at a run folder")
    frame = curve_columns(read_results(path))
    frame["config"] = frame["config"].fillna("").astype(str)
    return frame


def measured_metrics(ok: pd.DataFrame) -> tuple[str, ...]:
    """Keys of :data:`METRICS` with at least one value in ``ok`` (the run measured them)."""
    return tuple(key for key, (column, _) in METRICS.items() if column in ok.columns and ok[column].notna().any())


def metrics_note(ok: pd.DataFrame) -> str:
    """Which ``--metrics`` the ok rows were measured with, and on how many rows each."""
    recorded = (ok["metrics"] if "metrics" in ok.columns else pd.Series(None, index=ok.index, dtype=object))
    recorded = recorded.fillna("core").astype(str).str.split(",")
    counts = {name: int(recorded.map(lambda names, n=name: n in names).sum()) for name in MEASURES}
    parts = [f"`{name}` ({count} of {len(ok)} rows)" if count < len(ok) else f"`{name}`"
             for name, count in counts.items() if count]
    return "Metrics measured (`--metrics`; `core` = PSNR-RGB and MS-SSIM): " + ", ".join(parts) + "."


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
                column = METRICS[metric][0]
                base = {
                    "dataset": dataset, "codec": codec, "config": config, "label": labels[(codec, config)],
                    "anchor": f"{anchor.codec}:{anchor.config}", "metric": metric,
                    "is_anchor": (codec, config) == (anchor.codec, anchor.config),
                }
                test = per_image_curves(curve_rows, images, column)
                if anchor_rows.empty:
                    summary.append(_summary_row(base, test, None, None, None, None, ANCHOR_MISSING))
                    continue
                reference = per_image_curves(anchor_rows, images, column)
                mean_ref, mean_test = reference.mean_curve(), test.mean_curve()
                rate = bd_rate(mean_ref, mean_test)
                cubic = bd_rate(mean_ref, mean_test, "cubic")
                quality = bd_quality(mean_ref, mean_test)
                ci = bootstrap_ci(reference, test, "rate", "pchip", resamples, seed) if math.isfinite(rate.value) else None
                summary.append(_summary_row(base, test, rate, cubic, quality, ci, None))
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
            "n_points": int(group["n_points"].max()),
        })
    return pd.DataFrame(rows)


def _summary_row(base, test: PerImageCurves, rate, cubic, quality, ci, missing) -> dict:
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
        "bd_rate_cubic_pct": cubic.value if cubic else nan,
        "bd_quality_db": quality.value if quality else nan,
        "reliable": bool(rate and rate.reliable and not flags),
        "flags": ", ".join(flags),
        "overlap_pct": rate.overlap * 100.0 if rate else nan,
        "n_images": int(np.isfinite(test.rate).any(axis=1).sum()),
        "n_points": int(test.rate.shape[1]),
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
            column = METRICS[metric][0]
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
    """Mean and median encode/decode seconds per image encode, with device(s)."""
    labels = curve_labels(ok)
    out = []
    for (dataset, codec, config), rows in ok.groupby(["dataset", "codec", "config"], sort=True):
        out.append({
            "dataset": dataset, "codec": codec, "config": config, "label": labels[(codec, config)],
            "enc_s": rows["enc_s"].mean(), "dec_s": rows["dec_s"].mean(),
            "enc_median_s": rows["enc_s"].median(), "dec_median_s": rows["dec_s"].median(),
            "encodes": len(rows), "device": ", ".join(sorted(rows["device"].fillna("?").astype(str).unique())),
            "precision": ", ".join(sorted(rows["precision"].dropna().astype(str).unique())),
        })
    return pd.DataFrame(out, columns=["dataset", "codec", "config", "label", "enc_s", "dec_s", "enc_median_s",
                                      "dec_median_s", "encodes", "device", "precision"])


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


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    if path.suffix == ".csv":
        write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.4f"))
    else:
        write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))


def _plots(run_dir: Path, ok: pd.DataFrame, anchor: Anchor, per_image: pd.DataFrame, published: list,
           rd_plots: tuple[str, ...]) -> dict[str, list[str]]:
    labels = curve_labels(ok)
    written: dict[str, list[str]] = {}
    drawn = [metric for metric in measured_metrics(ok) if metric in rd_plots]
    for dataset, rows in ok.groupby("dataset", sort=True):
        images = sorted(rows["image"].unique())
        files = []
        for metric in drawn:
            column, ylabel = METRICS[metric]
            curves = []
            for (codec, config), curve_rows in rows.groupby(["codec", "config"], sort=True):
                # The same averaged points that the BD-rates are computed from.
                mean = per_image_curves(curve_rows, images, column).mean_curve()
                curves.append(
                    plots.PlotCurve(labels[(codec, config)], mean.rate, mean.quality,
                                    anchor=(codec, config) == (anchor.codec, anchor.config))
                )
            curves += [
                plots.PlotCurve(p.label, p.bpp, p.curve(metric).quality, published=True)
                for p in published
                if metric in PUBLISHED_METRICS and p.dataset == dataset and p.curve(metric) is not None
            ]
            name = f"rd-{slug(dataset, 'dataset')}-{metric}.png"
            plots.rd_plot(run_dir / name, f"{dataset}: rate-distortion, {ylabel}", ylabel, curves)
            files.append(name)
        psnr = per_image[(per_image["dataset"] == dataset) & (per_image["metric"] == "psnr") & per_image["reliable"]]
        values = {label: g["bd_rate_pct"].to_numpy() for label, g in psnr.groupby("label", sort=True)}
        if values:
            name = f"bdrate-{slug(dataset, 'dataset')}-per-image.png"
            plots.per_image_plot(run_dir / name, f"{dataset}: per-image BD-rate (PSNR-RGB) vs {anchor.codec}", values)
            files.append(name)
        written[dataset] = files
    return written


def build_report(
    run_dir: Path,
    anchor: str = "vvc",
    *,
    anchors_dir: Path = ANCHORS_DIR,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    rd_plots: tuple[str, ...] = PUBLISHED_METRICS,
) -> pd.DataFrame:
    """Rebuild every report file of ``run_dir`` from its ``results.parquet``; returns the
    BD-rate summary (one row per dataset × curve × metric, as in ``bdrate.csv``)."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    ok = usable(results).copy()
    if ok.empty:
        raise HarnessError(f"{run_dir / RESULTS_FILE} has no rows with status 'ok' and values an average can take: "
                           "nothing to report")
    aside_note = set_aside_note(results)
    errors = results[results["status"] != "ok"]
    if len(errors):
        warnings.warn(f"{len(errors)} result row(s) with status 'error' are excluded from the averages")
    chosen, anchor_note = resolve_anchor(ok, anchor)
    summary, per_image = compute_bdrates(ok, chosen, resamples, seed)
    timing = timing_summary(ok)
    params = params_summary(ok)
    images = {d: int(g["image"].nunique()) for d, g in ok.groupby("dataset")}

    anchor_version = ", ".join(sorted(ok.loc[ok["codec"] == chosen.codec, "codec_version"].astype(str).unique())) or "not run"
    intro = (
        (f"**Note:** {anchor_note}.\n\n" if anchor_note else "")
        + f"Anchor: `{chosen.codec}` (config `{chosen.config}`, {anchor_version}). BD-rate: PCHIP interpolation of "
        f"log-rate over the common quality range (negative = fewer bits than the anchor at equal quality); "
        f"95 % CI: paired bootstrap over images ({resamples} resamples, seed {seed}). Values in parentheses "
        f"failed a reliability check (see Flags); `n/a` = not computable. Times are mean seconds per image "
        f"encode on the device listed in timing.md.\n\n"
    )
    bd_md = ("# BD-rate\n\n" + intro + metrics_note(ok) + "\n\n" + (f"**Set aside:** {aside_note}.\n\n" if aside_note else "")
             + tables.table1(summary, timing, params, images))
    extra = [m for m in measured_metrics(ok) if m not in PUBLISHED_METRICS]
    if extra:
        bd_md += (
            "\n## BD-rate per metric\n\nBD-rate (PCHIP, 95 % CI) vs the anchor on each measured metric; MS-SSIM-Y "
            "in dB, NLPD negated (lower is better). JPEG AI: mean BD-rate over the JPEG AI metrics measured "
            f"({', '.join(JPEG_AI_CURVES)}), without CI; in parentheses when fewer than all ten or any is flagged.\n\n"
            + tables.metric_table(summary, measured_metrics(ok))
        )
    if not per_image.empty:
        bd_md += "\n## Per-image BD-rate distribution (PCHIP)\n\n" + tables.per_image_table(per_image)
    timing_md = "# Encode / decode time per image\n\n" + tables.timing_table(timing)
    params_md = "# Parameters of learned models\n\n" + tables.params_table(params)
    try:
        anchors = anchor_bdrate_table(anchors_dir)
        anchors_md = (
            "# Published anchors: BD-rate vs the published VTM curve\n\n"
            "Published numbers only (sources in reports/anchors/manifest.json); never mixed with measured "
            "rows. Anchor: CompressAI's VTM (all-intra 4:4:4) curve of the same dataset; PCHIP. 'Paper Table I' "
            "is the 3DM-WeConvene paper's reported BD-rate vs its own VVC run.\n\n" + tables.anchors_table(anchors)
        )
        table1 = load_table1(anchors_dir)
        if not table1.empty:
            anchors_md += (
                "\n## 3DM-WeConvene paper, Table I (as reported)\n\nBD-rate vs the authors' VTM intra 4:4:4 run; "
                "learned codecs timed on an RTX 4090, VVC on a Xeon Gold 6226R CPU.\n\n" + tables.paper_table1(table1)
            )
    except HarnessError as error:
        anchors_md = f"# Published anchors\n\nNot available: {error}\n"

    try:
        published = load_published_curves(anchors_dir)
    except HarnessError as error:
        warnings.warn(f"published anchors left out: {error}")
        published = []
    fidelity = fidelity_summary(ok, published)
    fidelity_md = (
        "# Measured vs published curves\n\nBD-rate (PCHIP) of each measured curve against the published curve of "
        "the same codec (CompressAI's results: checks that the harness reproduces them; library versions differ) and "
        "against the published VTM all-intra 4:4:4 curve of the same dataset. Sources: reports/anchors/manifest.json.\n\n"
        + (tables.fidelity_table(fidelity) if not fidelity.empty else "No published curves for the datasets of this run.\n")
    )

    _write_frame(run_dir / "bdrate.csv", summary)
    _write_text(run_dir / "fidelity.md", fidelity_md)
    _write_text(run_dir / "bdrate.md", bd_md)
    _write_text(run_dir / "timing.md", timing_md)
    _write_text(run_dir / "params.md", params_md)
    _write_text(run_dir / "anchors-bdrate.md", anchors_md)
    _write_frame(run_dir / "bdrate_per_image.parquet", per_image)
    figures = _plots(run_dir, ok, chosen, per_image, [p for p in published if p.plot], rd_plots)
    models = read_summary(run_dir).models if (run_dir / RUN_FILE).is_file() else ()
    _write_text(
        run_dir / "README.md",
        _readme(run_dir, results, errors, learned_section(ok, models), bd_md, timing_md, params_md, fidelity_md,
                anchors_md, figures),
    )
    return summary


def _demote(markdown: str) -> str:
    """Push headings one level down so the files nest under README sections."""
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.MULTILINE)


def _readme(run_dir, results, errors, learned_md, bd_md, timing_md, params_md, fidelity_md, anchors_md,
            figures) -> str:
    def distinct(column: str) -> str:
        if column not in results.columns:
            return "?"
        return ", ".join(sorted(results[column].dropna().astype(str).unique())) or "?"

    held = int(set_aside(results).sum())
    aside = f", {held} of them set aside as degenerate (see BD-rate)" if held else ""

    lines = [
        f"# Leaderboard run `{run_dir.name}`",
        "",
        *([learned_md, "## This run", ""] if learned_md else []),
        f"- results: `results.parquet`, {len(results)} rows ({len(results) - len(errors)} ok{aside}, {len(errors)} error)",
        f"- datasets: {distinct('dataset')}; codecs: {distinct('codec')}",
        f"- harness {distinct('harness_version')}, commit {distinct('git_commit')}; devices: {distinct('device')}",
        "- files: `bdrate.md`/`bdrate.csv` (BD-rate vs anchor, CI, flags), `bdrate_per_image.parquet`, "
        "`timing.md`, `params.md`, `fidelity.md`, `anchors-bdrate.md`, `rd-*.png`, `bdrate-*-per-image.png`",
        "",
    ]
    if len(errors):
        lines.append("Excluded rows (status error):\n")
        summary = errors.groupby(["dataset", "codec"]).size().reset_index(name="rows")
        lines.append(tables.markdown_table(["Dataset", "Codec", "Rows"], [[r.dataset, r.codec, str(r.rows)] for r in summary.itertuples()]))
    converted = results.dropna(subset=["conversion"]).drop_duplicates(["dataset", "image"])
    if len(converted):
        lines.append("Images changed on reading (each coded and measured as read):\n")
        lines.append(tables.markdown_table(["Dataset", "Image", "Change"],
                                           [[r.dataset, r.image, r.conversion] for r in converted.itertuples()]))
    text = "\n".join(lines) + "\n" + _demote(bd_md) + "\n"
    for dataset, files in figures.items():
        text += f"## RD curves: {dataset}\n\n" + "".join(f"![{f}]({f})\n\n" for f in files)
    sections = (timing_md, params_md, fidelity_md, anchors_md)
    return text + "\n".join(_demote(section) for section in sections)
