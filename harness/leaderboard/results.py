"""The leaderboard's results table (``reports/<run>/results.parquet``): one row
per (dataset, image, codec, config, quality) cell, with a fixed Arrow schema so
that every run, merge and reader agrees on names and types.

Writes are atomic (temporary file in the same folder, fsync, ``os.replace``):
a kill at any moment leaves either the previous table or the new one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.atomic import atomic_path
from harness.errors import HarnessError

SCHEMA = pa.schema(
    [
        ("dataset", pa.string()),        # registry name or folder:PATH
        ("image", pa.string()),          # file name within the dataset
        ("image_sha256", pa.string()),   # of the image file's bytes
        ("width", pa.int32()),           # null when the image could not be read
        ("height", pa.int32()),
        ("codec", pa.string()),          # codec id (vvc, hevc, jpeg, ... or a model name)
        ("config", pa.string()),         # configuration / profile name; (dataset, codec, config) is a curve
        ("codec_version", pa.string()),  # library/binary versions or checkpoint hash
        ("config_hash", pa.string()),    # hash of every bitstream-shaping setting
        ("quality", pa.float64()),       # ladder value: QP, quality, crf, target bpp or λ
        ("params", pa.float64()),        # model parameters; null for classical codecs
        ("bytes", pa.int64()),           # size of the real bitstream
        ("bpp", pa.float64()),           # bytes·8 / (width·height)
        ("psnr_rgb", pa.float64()),      # dB, over all RGB samples
        ("ms_ssim", pa.float64()),       # RGB, data range 255; NaN for images under 161 px
        ("ms_ssim_db", pa.float64()),    # −10·log10(1 − ms_ssim)
        # --metrics: null when not asked for, NaN when the image is too small (README "Metrics")
        ("psnr_y", pa.float64()),        # dB, BT.709 full-range 10-bit Y' (peak 1023)
        ("psnr_u", pa.float64()),        # dB, Cb of the same 4:4:4 conversion
        ("psnr_v", pa.float64()),        # dB, Cr
        ("psnr_yuv", pa.float64()),      # (6·psnr_y + psnr_u + psnr_v) / 8
        ("ms_ssim_y", pa.float64()),     # MS-SSIM of Y'
        ("iw_ssim", pa.float64()),       # IW-SSIM of Y' (piq)
        ("vif", pa.float64()),           # VIFp of Y' (piq)
        ("fsim", pa.float64()),          # FSIM_C on RGB (piq)
        ("nlpd", pa.float64()),          # NLPD of Y' (IQA-pytorch); lower is better
        ("psnr_hvs_m", pa.float64()),    # dB, PSNR-HVS-M of Y' (psnr-hvsm)
        ("vmaf", pa.float64()),          # VMAF vmaf_v0.6.1, 8-bit limited-range 4:4:4 (ffmpeg libvmaf)
        ("metrics", pa.string()),        # comma-separated --metrics names this row was measured with
        ("enc_s", pa.float64()),         # encode wall seconds
        ("dec_s", pa.float64()),         # decode wall seconds
        ("enc_peak_bytes", pa.int64()),  # peak memory while encoding: RSS of the process on a CPU, allocated on a GPU
        ("dec_peak_bytes", pa.int64()),  # the same while decoding
        ("tile", pa.int32()),            # learned codecs: tile side in pixels of g_a/g_s; null when untiled
        ("device", pa.string()),         # where the cell ran, e.g. "cpu: AMD EPYC 7B13 @ host"
        ("precision", pa.string()),      # learned codecs: fp32 or bf16 (g_a, h_a, g_s); null for classical
        ("harness_version", pa.string()),
        ("git_commit", pa.string()),     # of the harness checkout ("+dirty" when modified)
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("status", pa.string()),         # "ok" or "error"
        ("error", pa.string()),          # one-line reason when status is "error"
        ("conversion", pa.string()),     # what reading the image changed (16-bit reduced, alpha dropped, ...)
        ("degenerate", pa.string()),     # ok rows no average can take, and why (e.g. "psnr_rgb inf"); see below
        # Learned codecs (null for classical ones and in tables written before these columns):
        ("est_bits", pa.float64()),      # the bits the entropy model's likelihoods estimate for the image
        ("pad_bits", pa.float64()),      # the part of est_bits spent on the padding to the network's stride
        ("enc_net_s", pa.float64()),     # seconds of the analysis network g_a, timed apart (the rest of enc_s: entropy coding)
        ("dec_net_s", pa.float64()),     # seconds of the synthesis network g_s, timed apart (the rest of dec_s: entropy decoding)
    ]
)
# Columns added after tables were written without them: such a table reads with them null.
MEMORY_COLUMNS = ("enc_peak_bytes", "dec_peak_bytes", "tile")
ADDED = (*MEMORY_COLUMNS, "est_bits", "pad_bits", "enc_net_s", "dec_net_s")
RESULTS_FILE = "results.parquet"  # in every run folder
COLUMNS = tuple(SCHEMA.names)
CELL = ("dataset", "image", "codec", "config", "quality")
REUSE_KEY = ("image_sha256", "codec", "codec_version", "config_hash", "quality")


# A lossless reconstruction has an infinite PSNR (and MS-SSIM of 1, an infinite dB value); a
# broken measurement a NaN PSNR or rate. Such a number would make every mean, curve and BD-rate
# it enters infinite or NaN, so its row is flagged here, from the values, and set aside (kept in
# the table). A NaN in the other metrics is not degenerate: it is their documented "not
# measurable at this size" (MS-SSIM under 161 px), a missing point like a failed cell's.
ALWAYS_MEASURED = ("bpp", "psnr_rgb")
MEASURED = tuple(f.name for f in SCHEMA if pa.types.is_floating(f.type) and f.name not in
                 ("quality", "params", "enc_s", "dec_s", *ADDED))  # the rate and every metric
IN_DB = ("ms_ssim_y",)  # the report's MS-SSIM-Y (dB), -10·log10(1 - value), is infinite at 1


def degenerate(rows: pd.DataFrame) -> pd.Series:
    """Per row, why its numbers cannot enter an aggregate (None when they can, and for error rows)."""
    ok = (rows["status"] == "ok").to_numpy()
    found = []
    for column in (c for c in MEASURED if c in rows.columns):
        values = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=float)
        found.append(np.where(ok & np.isinf(values), f"{column} inf", ""))
        if column in IN_DB:
            found.append(np.where(ok & (values >= 1.0), f"{column} 1 (infinite in dB)", ""))
        if column in ALWAYS_MEASURED:
            found.append(np.where(ok & np.isnan(values), f"{column} NaN", ""))
    reasons = [", ".join(filter(None, row)) or None for row in zip(*found)] if found else [None] * len(rows)
    return pd.Series(reasons, index=rows.index, dtype=object)


def flagged(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` with their ``degenerate`` column filled from their values."""
    return rows.assign(degenerate=degenerate(rows))


def set_aside(rows: pd.DataFrame) -> pd.Series:
    """Ok rows that no mean, curve or BD-rate takes: every row of a curve (dataset, codec, config)
    at an image where that curve has a degenerate row. The whole image goes, not the one point,
    so that every point of a curve averages the same images."""
    ok = rows["status"] == "ok"
    marked = ok & rows["degenerate"].notna()
    if not marked.any():
        return pd.Series(False, index=rows.index)
    curve_image = [rows[key] for key in ("dataset", "image", "codec", "config")]
    return ok & marked.groupby(curve_image, dropna=False).transform("any")


def usable(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows every average is taken over: status ok and not :func:`set_aside`."""
    return rows[(rows["status"] == "ok") & ~set_aside(rows)]


def set_aside_note(rows: pd.DataFrame) -> str:
    """One line on the rows :func:`set_aside` holds back ("" when none)."""
    aside = rows[set_aside(rows)]
    if aside.empty:
        return ""
    marked = aside[aside["degenerate"].notna()]
    cases = marked.groupby(["dataset", "image", "codec", "config"], sort=True)["degenerate"].first()
    examples = "; ".join(f"{image} in {codec}:{config} ({reason})"
                         for (dataset, image, codec, config), reason in list(cases.items())[:3])
    more = f" and {len(cases) - 3} more" if len(cases) > 3 else ""
    return (f"{len(aside)} ok row(s) set aside from every mean, curve and BD-rate (kept in results.parquet, column "
            f"`degenerate`): {len(cases)} (image, curve) pair(s) with a value no average can take "
            f"(infinite: a lossless reconstruction; NaN: no measurement), e.g. {examples}{more}")


def empty() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


def to_table(rows: pd.DataFrame) -> pa.Table:
    missing = [c for c in COLUMNS if c not in rows.columns]
    if missing:
        raise HarnessError(f"results rows lack columns: {', '.join(missing)}")
    if _unnamed_metrics(rows):
        raise HarnessError("results rows: ok rows that name no metrics")
    return pa.Table.from_pandas(rows[list(COLUMNS)], schema=SCHEMA, preserve_index=False)


def _unnamed_metrics(rows: pd.DataFrame) -> bool:
    """Whether an ok row names no metrics: every measured row records what it was measured with."""
    return bool((rows["metrics"].isna() & (rows["status"] == "ok")).any())


def write(rows: pd.DataFrame, path: Path) -> None:
    """Write ``rows`` to ``path`` atomically, sorted by cell, with their ``degenerate`` flags."""
    rows = rows.sort_values(list(CELL), kind="stable").reset_index(drop=True)
    table = to_table(flagged(rows))
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read(path: Path) -> pd.DataFrame:
    """The results table at ``path`` (empty if absent), checked against :data:`SCHEMA`: the one
    reader of ``results.parquet`` (the leaderboard and the report use it). A table lacking only
    columns of :data:`ADDED` reads with them null; lacking any other, it is refused."""
    if not path.exists():
        return empty()
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise HarnessError(f"cannot read results {path}: {error} (move it away to start afresh)") from None
    for column in (c for c in ADDED if c not in table.column_names):
        table = table.append_column(SCHEMA.field(column), pa.nulls(table.num_rows, SCHEMA.field(column).type))
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise HarnessError(f"{path} lacks column(s) {', '.join(missing)}: not a results table of this harness "
                           "(an earlier harness's? move it away to start afresh)")
    frame = table.select(list(COLUMNS)).cast(SCHEMA).to_pandas()
    if _unnamed_metrics(frame):
        raise HarnessError(f"{path} has ok rows that name no metrics: not a results table of this harness "
                           "(an earlier harness's? move it away to start afresh)")
    return flagged(frame)
