"""The report's prose: one small function per section of ``bdrate.md``, ``timing.md``,
``params.md``, ``fidelity.md``, ``anchors-bdrate.md`` and the run's ``README.md``. Each takes
the numbers :mod:`harness.report.summaries` computed and returns Markdown; none computes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from harness.errors import HarnessError
from harness.leaderboard.metrics import JPEG_AI_CURVES, METRICS
from harness.leaderboard.results import set_aside
from harness.report import tables
from harness.report.anchors import anchor_bdrate_table, load_table1
from harness.report.summaries import PUBLISHED_METRICS, Anchor, measured_metrics


def metrics_note(ok: pd.DataFrame) -> str:
    """Which ``--metrics`` the ok rows were measured with, and on how many rows each."""
    recorded = (ok["metrics"] if "metrics" in ok.columns else pd.Series(None, index=ok.index, dtype=object))
    recorded = recorded.fillna("core").astype(str).str.split(",")
    counts = {name: int(recorded.map(lambda names, n=name: n in names).sum()) for name in METRICS}
    parts = [f"`{name}` ({count} of {len(ok)} rows)" if count < len(ok) else f"`{name}`"
             for name, count in counts.items() if count]
    return "Metrics measured (`--metrics`; `core` = PSNR-RGB and MS-SSIM): " + ", ".join(parts) + "."


def anchor_intro(ok: pd.DataFrame, anchor: Anchor, note: str, resamples: int, seed: int) -> str:
    """What the BD-rates are measured against, and how to read them."""
    version = ", ".join(sorted(ok.loc[ok["codec"] == anchor.codec, "codec_version"].astype(str).unique())) or "not run"
    return (
        (f"**Note:** {note}.\n\n" if note else "")
        + f"Anchor: `{anchor.codec}` (config `{anchor.config}`, {version}). BD-rate: PCHIP interpolation of "
        f"log-rate over the common quality range (negative = fewer bits than the anchor at equal quality); "
        f"95 % CI: paired bootstrap over images ({resamples} resamples, seed {seed}). Values in parentheses "
        f"failed a reliability check (see Flags); `n/a` = not computable. Times are mean seconds per image "
        f"encode on the device listed in timing.md.\n\n"
    )


def per_metric(summary: pd.DataFrame, ok: pd.DataFrame) -> str:
    """BD-rate on each measured metric beyond the published pair ("" when the run has none)."""
    if not [m for m in measured_metrics(ok) if m not in PUBLISHED_METRICS]:
        return ""
    return (
        "\n## BD-rate per metric\n\nBD-rate (PCHIP, 95 % CI) vs the anchor on each measured metric; MS-SSIM-Y "
        "in dB, NLPD negated (lower is better). JPEG AI: mean BD-rate over the JPEG AI metrics measured "
        f"({', '.join(JPEG_AI_CURVES)}), without CI; in parentheses when fewer than all ten or any is flagged.\n\n"
        + tables.metric_table(summary, measured_metrics(ok))
    )


def bdrate_md(intro: str, ok: pd.DataFrame, aside_note: str, summary: pd.DataFrame, per_image: pd.DataFrame,
              timing: pd.DataFrame, params: pd.DataFrame) -> str:
    """``bdrate.md``: Table I layout, then a column per measured metric and the per-image spread."""
    images = {d: int(g["image"].nunique()) for d, g in ok.groupby("dataset")}
    text = ("# BD-rate\n\n" + intro + metrics_note(ok) + "\n\n"
            + (f"**Set aside:** {aside_note}.\n\n" if aside_note else "")
            + tables.table1(summary, timing, params, images) + per_metric(summary, ok))
    if not per_image.empty:
        text += "\n## Per-image BD-rate distribution (PCHIP)\n\n" + tables.per_image_table(per_image)
    return text


def timing_md(timing: pd.DataFrame) -> str:
    return ("# Encode / decode time and memory per image\n\n"
            "Learned codecs: \"network\" is the mean seconds of the analysis (g_a) or synthesis (g_s) transform, "
            "timed in one forward pass after each cell; the rest of the time is the entropy model and coder. "
            "Peaks are the largest of the curve's cells: the worker's peak RSS during the call (its high-water mark "
            "reset per call) or the codec binary's, on a GPU the tensors allocated; learned codecs run g_a/g_s in "
            "tiles where the cell's memory budget needs them (the smallest tile used is listed).\n\n"
            + tables.timing_table(timing))


def params_md(params: pd.DataFrame) -> str:
    return "# Parameters of learned models\n\n" + tables.params_table(params)


def anchors_md(anchors_dir: Path) -> str:
    """``anchors-bdrate.md``: published curves vs the published VTM, and the paper's Table I."""
    try:
        text = (
            "# Published anchors: BD-rate vs the published VTM curve\n\n"
            "Published numbers only (sources in reports/anchors/manifest.json); never mixed with measured "
            "rows. Anchor: CompressAI's VTM (all-intra 4:4:4) curve of the same dataset; PCHIP. 'Paper Table I' "
            "is the 3DM-WeConvene paper's reported BD-rate vs its own VVC run.\n\n"
            + tables.anchors_table(anchor_bdrate_table(anchors_dir))
        )
        table1 = load_table1(anchors_dir)
    except HarnessError as error:
        return f"# Published anchors\n\nNot available: {error}\n"
    if not table1.empty:
        text += (
            "\n## 3DM-WeConvene paper, Table I (as reported)\n\nBD-rate vs the authors' VTM intra 4:4:4 run; "
            "learned codecs timed on an RTX 4090, VVC on a Xeon Gold 6226R CPU.\n\n" + tables.paper_table1(table1)
        )
    return text


def fidelity_md(fidelity: pd.DataFrame) -> str:
    """``fidelity.md``: measured curves against the published curves of the same codec and of VTM."""
    return (
        "# Measured vs published curves\n\nBD-rate (PCHIP) of each measured curve against the published curve of "
        "the same codec (CompressAI's results: checks that the harness reproduces them; library versions differ) and "
        "against the published VTM all-intra 4:4:4 curve of the same dataset. Sources: reports/anchors/manifest.json.\n\n"
        + (tables.fidelity_table(fidelity) if not fidelity.empty else "No published curves for the datasets of this run.\n")
    )


def _distinct(results: pd.DataFrame, column: str) -> str:
    if column not in results.columns:
        return "?"
    return ", ".join(sorted(results[column].dropna().astype(str).unique())) or "?"


def run_facts(results: pd.DataFrame) -> list[str]:
    """The README's list of what the run holds: rows, datasets, codecs, versions, files."""
    errors = int((results["status"] != "ok").sum())
    held = int(set_aside(results).sum())
    aside = f", {held} of them set aside as degenerate (see BD-rate)" if held else ""
    return [
        f"- results: `results.parquet`, {len(results)} rows ({len(results) - errors} ok{aside}, {errors} error)",
        f"- datasets: {_distinct(results, 'dataset')}; codecs: {_distinct(results, 'codec')}",
        f"- harness {_distinct(results, 'harness_version')}, commit {_distinct(results, 'git_commit')}; "
        f"devices: {_distinct(results, 'device')}",
        "- files: `bdrate.md`/`bdrate.csv` (BD-rate vs anchor, CI, flags), `bdrate_per_image.parquet`, "
        "`timing.md`, `params.md`, `fidelity.md`, `anchors-bdrate.md`, `rd-*.png`, `bdrate-*-per-image.png`",
        "",
    ]


def excluded_rows(results: pd.DataFrame) -> list[str]:
    """The rows with status error, counted per dataset and codec (none: no lines)."""
    errors = results[results["status"] != "ok"]
    if not len(errors):
        return []
    counts = errors.groupby(["dataset", "codec"]).size().reset_index(name="rows")
    return ["Excluded rows (status error):\n",
            tables.markdown_table(["Dataset", "Codec", "Rows"],
                                  [[r.dataset, r.codec, str(r.rows)] for r in counts.itertuples()])]


def conversions(results: pd.DataFrame) -> list[str]:
    """The images reading changed (each coded and measured as read; none: no lines)."""
    converted = results.dropna(subset=["conversion"]).drop_duplicates(["dataset", "image"])
    if not len(converted):
        return []
    return ["Images changed on reading (each coded and measured as read):\n",
            tables.markdown_table(["Dataset", "Image", "Change"],
                                  [[r.dataset, r.image, r.conversion] for r in converted.itertuples()])]


def figures_md(figures: dict[str, list[str]]) -> str:
    """Each dataset's RD curves and per-image BD-rate plot, embedded."""
    return "".join(f"## RD curves: {dataset}\n\n" + "".join(f"![{f}]({f})\n\n" for f in files)
                   for dataset, files in figures.items())


def demote(markdown: str) -> str:
    """Push headings one level down so the files nest under README sections."""
    return re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", markdown, flags=re.MULTILINE)


def readme(run_name: str, results: pd.DataFrame, learned_md: str, bd_md: str, figures: dict[str, list[str]],
           appendices: tuple[str, ...]) -> str:
    """The run's ``README.md``: the learned models first (when any), the run's facts, the
    BD-rate section, the plots, then ``appendices`` (timing, parameters, fidelity, anchors)."""
    lines = [
        f"# Leaderboard run `{run_name}`",
        "",
        *([learned_md, "## This run", ""] if learned_md else []),
        *run_facts(results),
        *excluded_rows(results),
        *conversions(results),
    ]
    text = "\n".join(lines) + "\n" + demote(bd_md) + "\n" + figures_md(figures)
    return text + "\n".join(demote(section) for section in appendices)
