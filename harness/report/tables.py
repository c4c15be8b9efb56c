"""Markdown tables of a leaderboard run, laid out like Table I of the
3DM-WeConvene paper: one block of rows per dataset (the dataset as a group
header row), one row per method, columns for encode/decode time, BD-rate
against the anchor and parameter count.

Formatting only: every number comes from :mod:`harness.report.summaries` tables.
A BD value that failed a reliability check is never printed like an exact
number: it is shown in parentheses (computed, but flagged) or as ``n/a``.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.leaderboard.metrics import CURVES

METRIC_NAMES = {"psnr": "PSNR-RGB", "msssim": "MS-SSIM (dB)",
                **{key: label for key, (_, label) in CURVES.items() if key not in ("psnr", "msssim")},
                "jpeg_ai": "JPEG AI mean"}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt_seconds(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.3g} s" if value < 100 else f"{value:.1f} s"


def fmt_bytes(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value / 2**30:.2f} GiB"


def fmt_params(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f} M"


def fmt_bd(value: float, reliable: bool, low: float = math.nan, high: float = math.nan, unit: str = "%") -> str:
    """``-8.35 % [-9.10, -7.62]``; ``(-8.35 %)`` when flagged; ``n/a`` when not computable."""
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:+.2f} {unit}"
    if not reliable:
        text = f"({text})"
    if math.isfinite(low) and math.isfinite(high):
        text += f" [{low:+.2f}, {high:+.2f}]"
    return text


def _metric_row(bd: pd.DataFrame, metric: str) -> pd.Series | None:
    rows = bd[bd["metric"] == metric]
    return None if rows.empty else rows.iloc[0]


def table1(bd: pd.DataFrame, timing: pd.DataFrame, params: pd.DataFrame, images: dict[str, int]) -> str:
    """The paper's Table I for measured rows: per dataset, Method | Enc. | Dec. |
    BD-rate (PSNR, MS-SSIM, with 95 % CI) | BD-PSNR | #Params | Flags."""
    header = [
        "Method",
        "Enc.",
        "Dec.",
        "BD-rate PSNR-RGB [95 % CI]",
        "BD-rate MS-SSIM dB [95 % CI]",
        "BD-PSNR",
        "#Params",
        "Flags",
    ]
    params_by_curve = {(r.codec, r.config): r.params_m for r in params.itertuples()}
    rows: list[list[str]] = []
    for dataset, curve, mine in _curves(bd):
        if curve is None:
            rows.append([f"**{dataset}** ({images.get(dataset, 0)} images)"] + [""] * (len(header) - 1))
        else:
            cells = [f"{curve.label} [anchor]" if curve.is_anchor else curve.label]
            t = timing[(timing["dataset"] == dataset) & (timing["codec"] == curve.codec) & (timing["config"] == curve.config)]
            cells += [fmt_seconds(t["enc_s"].iloc[0]), fmt_seconds(t["dec_s"].iloc[0])] if len(t) else ["-", "-"]
            flags = []
            for metric in ("psnr", "msssim"):
                row = _metric_row(mine, metric)
                if row is None:
                    cells.append("n/a")
                    continue
                if curve.is_anchor:
                    cells.append("0.0")
                    continue
                cells.append(fmt_bd(row["bd_rate_pct"], row["reliable"], row["ci95_low"], row["ci95_high"]))
                if row["flags"]:
                    flags.append(f"{metric}: {row['flags']}")
            psnr = _metric_row(mine, "psnr")
            if curve.is_anchor or psnr is None:
                cells.append("-" if curve.is_anchor else "n/a")
            else:
                cells.append(fmt_bd(psnr["bd_quality_db"], psnr["reliable"], unit="dB"))
            cells.append(fmt_params(params_by_curve.get((curve.codec, curve.config), math.nan)))
            cells.append("; ".join(flags))
            rows.append(cells)
    return markdown_table(header, rows)


def per_image_table(per_image: pd.DataFrame) -> str:
    """Distribution of per-image BD-rates: median, quartiles and the share of
    images where the codec saves bits, per dataset, codec and metric."""
    header = ["Dataset", "Method", "Metric", "Median", "Q1 .. Q3", "Images with savings", "Reliable images"]
    rows = []
    keys = ["dataset", "label", "metric"]
    for (dataset, label, metric), group in per_image.groupby(keys, sort=True):
        values = group.loc[group["reliable"], "bd_rate_pct"]
        if values.empty:
            rows.append([dataset, label, METRIC_NAMES[metric], "n/a", "n/a", "n/a", f"0 / {len(group)}"])
            continue
        q1, median, q3 = values.quantile([0.25, 0.5, 0.75])
        rows.append(
            [
                dataset,
                label,
                METRIC_NAMES[metric],
                f"{median:+.2f} %",
                f"{q1:+.2f} .. {q3:+.2f} %",
                f"{(values < 0).mean() * 100:.0f} %",
                f"{len(values)} / {len(group)}",
            ]
        )
    return markdown_table(header, rows)


def timing_table(timing: pd.DataFrame) -> str:
    header = ["Dataset", "Method", "Enc. mean", "Dec. mean", "Enc. median", "Dec. median", "Enc. peak", "Dec. peak",
              "Smallest tile", "Encodes", "Device", "Precision", "Enc. network", "Dec. network"]
    rows = [
        [
            r.dataset,
            r.label,
            fmt_seconds(r.enc_s),
            fmt_seconds(r.dec_s),
            fmt_seconds(r.enc_median_s),
            fmt_seconds(r.dec_median_s),
            fmt_bytes(float(r.enc_peak_bytes)),
            fmt_bytes(float(r.dec_peak_bytes)),
            f"{int(r.tile)} px" if pd.notna(r.tile) else "—",
            str(r.encodes),
            r.device,
            r.precision or "—",
            fmt_seconds(r.enc_net_s),
            fmt_seconds(r.dec_net_s),
        ]
        for r in timing.itertuples()
    ]
    return markdown_table(header, rows)


def params_table(params: pd.DataFrame) -> str:
    if params.empty:
        return "No learned models in this run (parameter counts apply to learned codecs only).\n"
    header = ["Method", "#Params", "Codec version"]
    rows = [[r.label, fmt_params(r.params_m), r.codec_version] for r in params.itertuples()]
    return markdown_table(header, rows)


def anchors_table(table: pd.DataFrame) -> str:
    """Published curves vs the published VTM curve (never measured rows)."""
    header = ["Dataset", "Published curve", "Metric", "BD-rate vs published VTM", "BD-quality", "Overlap", "Paper Table I", "Flags"]
    rows = [
        [
            r.dataset,
            r.label,
            METRIC_NAMES[r.metric],
            fmt_bd(r.bd_rate_pct, r.reliable),
            fmt_bd(r.bd_quality_db, r.reliable, unit="dB"),
            "-" if not math.isfinite(r.overlap_pct) else f"{r.overlap_pct:.0f} %",
            "-" if not math.isfinite(r.paper_bd_rate_pct) else f"{r.paper_bd_rate_pct:+.2f} % (vs paper's VVC)",
            r.flags,
        ]
        for r in table.itertuples()
    ]
    return markdown_table(header, rows)


def paper_table1(table: pd.DataFrame) -> str:
    """The paper's Table I as reported (its VVC anchor, its hardware)."""
    header = ["Dataset", "Method", "Enc.", "Dec.", "BD-rate vs VVC (reported)", "#Params"]
    rows = [
        [
            str(r.dataset),
            str(r.method),
            fmt_seconds(float(r.enc_s)),
            fmt_seconds(float(r.dec_s)),
            f"{float(r.bd_rate_vs_vvc_pct):+.2f} %",
            fmt_params(float(r.params_m)),
        ]
        for r in table.itertuples()
    ]
    return markdown_table(header, rows)


def fidelity_table(table: pd.DataFrame) -> str:
    """Measured curves vs the published curve of the same codec and vs published VTM."""
    header = ["Dataset", "Measured", "Metric", "Published same codec", "BD-rate vs it", "BD-rate vs published VTM", "Flags"]
    rows = []
    for r in table.itertuples():
        flags = [f"{name}: {text}" for name, text in (("same codec", r.same_codec_flags), ("VTM", r.vtm_flags)) if text]
        rows.append(
            [
                r.dataset,
                r.label,
                METRIC_NAMES[r.metric],
                r.same_codec_label or "-",
                fmt_bd(r.same_codec_bd_rate_pct, r.same_codec_reliable) if r.same_codec_label else "-",
                fmt_bd(r.vtm_bd_rate_pct, r.vtm_reliable) if r.vtm_label else "-",
                "; ".join(flags),
            ]
        )
    return markdown_table(header, rows)


def _curves(bd: pd.DataFrame):
    """Per dataset: ``(dataset, None, None)``, then ``(dataset, curve, its rows)`` for every
    curve, the anchor first, then by PSNR BD-rate (the order of Table I)."""
    for dataset in sorted(bd["dataset"].unique()):
        yield dataset, None, None
        block = bd[bd["dataset"] == dataset]
        order = (
            block[block["metric"] == "psnr"]
            .assign(key=lambda t: t["bd_rate_pct"].where(~t["is_anchor"], -math.inf))
            .sort_values(["key", "label"], na_position="last")
        )
        for curve in order.itertuples():
            yield dataset, curve, block[(block["codec"] == curve.codec) & (block["config"] == curve.config)]


def metric_table(bd: pd.DataFrame, metrics: tuple[str, ...]) -> str:
    """Per dataset, one row per curve and a column per measured metric (BD-rate [95 % CI]),
    then the JPEG AI mean; rows ordered as in :func:`table1`."""
    header = ["Method", *(METRIC_NAMES[m] for m in metrics), METRIC_NAMES["jpeg_ai"]]
    rows: list[list[str]] = []
    for dataset, curve, mine in _curves(bd):
        if curve is None:
            rows.append([f"**{dataset}**"] + [""] * (len(header) - 1))
        else:
            cells = [f"{curve.label} [anchor]" if curve.is_anchor else curve.label]
            for metric in (*metrics, "jpeg_ai"):
                row = _metric_row(mine, metric)
                if row is None:
                    cells.append("n/a")
                elif curve.is_anchor:
                    cells.append("0.0")
                else:
                    cells.append(fmt_bd(row["bd_rate_pct"], row["reliable"], row["ci95_low"], row["ci95_high"]))
            rows.append(cells)
    return markdown_table(header, rows)


def curve_labels(ok: pd.DataFrame) -> dict[tuple[str, str], str]:
    """Codec id alone when it has one config in the run, else ``codec (config)``."""
    pairs = ok[["codec", "config"]].drop_duplicates()
    counts = pairs["codec"].value_counts()
    return {
        (r.codec, r.config): r.codec if counts[r.codec] == 1 or not r.config else f"{r.codec} ({r.config})"
        for r in pairs.itertuples()
    }
