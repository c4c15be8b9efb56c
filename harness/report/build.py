"""Leaderboard report of one run: BD-rate, timing and parameter tables, RD plots.

Input: ``<run>/results.parquet`` from the leaderboard (:mod:`harness.leaderboard`), one row
per (dataset, image, codec, config, quality), and the learned models' facts in its ``run.json``.
A curve is (dataset, codec, config); its point at one quality is the mean over the ``ok``
images of bpp and of each metric (PSNR-RGB and MS-SSIM (dB), the convention of CompressAI
and of the paper, plus every ``--metrics`` column the run measured). Rows with status
``error`` are left out of every average and counted in the README; so are the ok rows that
:func:`harness.leaderboard.results.set_aside` holds back (an infinite PSNR: lossless), which
the README and bdrate.md count and name. A BD-rate compares two curves on the images both have.

Output, written into the run folder (each file replaced atomically):
``bdrate.md``/``bdrate.csv`` (Table I layout, BD-rate vs the anchor with a
95 % image-bootstrap CI, BD-PSNR and reliability flags; then a column per
measured metric and the JPEG AI summary, metric ``jpeg_ai`` in the CSV), ``timing.md``,
``params.md``, ``fidelity.md`` (measured vs published curves of the same codec
and vs published VTM), ``rd-<dataset>-<metric>.png`` (psnr and msssim unless
``rd_plots`` asks for others),
``bdrate-<dataset>-per-image.png``, ``bdrate_per_image.parquet``,
``anchors-bdrate.md`` (published curves vs published VTM, a separate table)
and ``README.md`` embedding all of them; ``index.html`` renders the same tables as one page for
a browser (:mod:`harness.report.web`), with plotly's offline bundle in ``assets/``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from harness.atomic import write_atomic
from harness.errors import HarnessError
from harness.leaderboard.metrics import CURVES
from harness.leaderboard.results import RESULTS_FILE, set_aside_note, usable
from harness.leaderboard.summary import RUN_FILE, read_summary
from harness.report import plots, sections, web
from harness.report.anchors import ANCHORS_DIR, load_published_curves
from harness.report.bdrate import per_image_curves
from harness.report.config import RD_PLOTS
from harness.report.models import demo_scale, learned_section
from harness.report.summaries import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, PUBLISHED_METRICS, Anchor, compute_bdrates,
                                      default_anchor, fidelity_summary, load_results, measured_metrics,
                                      params_summary, resolve_anchor, timing_summary)
from harness.report.tables import curve_labels
from harness.slug import slug


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
            column, ylabel = CURVES[metric]
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


def _published(anchors_dir: Path) -> list:
    try:
        return load_published_curves(anchors_dir)
    except HarnessError as error:
        warnings.warn(f"published anchors left out: {error}")
        return []


def build_report(
    run_dir: Path,
    anchor: str | None = None,
    *,
    anchors_dir: Path = ANCHORS_DIR,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    rd_plots: tuple[str, ...] = RD_PLOTS,
) -> pd.DataFrame:
    """Rebuild every report file of ``run_dir`` from its ``results.parquet`` (``anchor``: codec
    or codec:config; None: :func:`~harness.report.summaries.default_anchor`); returns the
    BD-rate summary (one row per dataset × curve × metric, as in ``bdrate.csv``)."""
    run_dir = Path(run_dir)
    results = load_results(run_dir)
    ok = usable(results).copy()
    if ok.empty:
        reason = (f"{run_dir / RESULTS_FILE} has no rows with status 'ok' and values an average can take: "
                  "nothing to report")
        web.write_page(run_dir, web.empty_page(run_dir.name, (reason,)))  # the page says why it is empty
        raise HarnessError(reason)
    errors = int((results["status"] != "ok").sum())
    if errors:
        warnings.warn(f"{errors} result row(s) with status 'error' are excluded from the averages")
    chosen, anchor_note = resolve_anchor(ok, anchor or default_anchor(results))
    summary, per_image = compute_bdrates(ok, chosen, resamples, seed)
    timing, params = timing_summary(ok), params_summary(ok)
    published = _published(anchors_dir)
    fidelity = fidelity_summary(ok, published)

    bd_md = sections.bdrate_md(sections.anchor_intro(ok, chosen, anchor_note, resamples, seed), ok,
                               set_aside_note(results), summary, per_image, timing, params)
    appendices = (sections.timing_md(timing), sections.params_md(params), sections.fidelity_md(fidelity),
                  sections.anchors_md(anchors_dir))
    _write_frame(run_dir / "bdrate.csv", summary)
    for name, text in zip(("timing.md", "params.md", "fidelity.md", "anchors-bdrate.md"), appendices):
        _write_text(run_dir / name, text)
    _write_text(run_dir / "bdrate.md", bd_md)
    _write_frame(run_dir / "bdrate_per_image.parquet", per_image)
    figures = _plots(run_dir, ok, chosen, per_image, [p for p in published if p.plot], rd_plots)
    models = read_summary(run_dir).models if (run_dir / RUN_FILE).is_file() else ()
    _write_text(run_dir / "README.md",
                sections.readme(run_dir.name, results, learned_section(ok, models), bd_md, figures, appendices))
    notes = tuple(filter(None, (
        anchor_note,
        f"{errors} result row(s) with status 'error' are excluded from every average" if errors else "",
        set_aside_note(results),
    )))
    inputs = web.WebInputs(run_dir.name, results, ok, chosen, summary, per_image, timing, params,
                           tuple(p for p in published if p.plot), models, demo_scale(models),
                           tuple(m for m in measured_metrics(ok) if m in rd_plots), notes)
    web.write_page(run_dir, web.page_data(inputs, run_dir))
    return summary
