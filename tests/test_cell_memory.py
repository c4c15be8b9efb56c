"""Memory in every result: each cell records the peak memory of its encode and decode (its
worker's high-water mark reset per call, or its binary's) and its tile; tables written before
those columns still load; a cell killed for memory is one line naming the image and its memory."""

from __future__ import annotations

import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from harness.codecs.base import Codec
from harness.codecs.config import CodecConfig
from harness.codecs.curve import CurveSettings
from harness.errors import HarnessError
from harness.leaderboard import results
from harness.leaderboard.cells import Cell, evaluate_cell
from harness.leaderboard.run import lost_reason

def test_a_table_written_before_the_memory_columns_loads_and_merges_with_them_null(tmp_path):
    row = {column: None for column in results.COLUMNS}
    row.update(dataset="d", image="a.png", codec="jpeg", config="quick", quality=50.0, status="ok", metrics="core",
               bpp=1.0, psnr_rgb=30.0, enc_peak_bytes=123, dec_peak_bytes=45, tile=None)
    path = tmp_path / results.RESULTS_FILE
    results.write(pd.DataFrame([row], columns=list(results.COLUMNS)), path)
    older = pq.read_table(path).drop_columns(list(results.MEMORY_COLUMNS))
    pq.write_table(older, path)
    read = results.read(path)
    assert list(read.columns) == list(results.COLUMNS)
    assert read[list(results.MEMORY_COLUMNS)].isna().all().all()
    merged = pd.concat([read, pd.DataFrame([{**row, "image": "b.png"}])], ignore_index=True)
    results.write(merged, path)
    again = results.read(path)
    assert list(again["enc_peak_bytes"].astype("Int64")) == [pd.NA, 123]
    assert pq.read_schema(path).field("tile").type == pa.int32()

def test_every_cell_records_its_peak_memory(kodak_dir):
    image = (kodak_dir / "kodim23.png").read_bytes()
    codec = CodecConfig("jpeg", "quick", (50.0,), '{"timeout_s": 60}')
    row = evaluate_cell(image, "kodim23.png", codec, 50.0)
    assert row["status"] == "ok", row["error"]
    assert row["enc_peak_bytes"] > 10**6 and row["dec_peak_bytes"] > 10**6 and row["tile"] is None

class _Tool(Codec):
    id = "tool"
    description = "runs a binary"

    def probe(self) -> str:
        return "1"

    def encode(self, rgb, quality, workdir):
        raise NotImplementedError

    def decode(self, bitstream, height, width, workdir):
        raise NotImplementedError

def test_a_binarys_peak_is_its_own_not_the_workers():
    tool = _Tool({})
    tool.run_tool([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"], "encode")
    assert tool.tool_peak > 300 * 2**20
    tool.tool_peak = 0
    tool.run_tool(["sleep", "0.1"], "decode")
    assert 0 < tool.tool_peak < 100 * 2**20
    with pytest.raises(HarnessError, match=r"^tool encode timed out after 0.2 s$"):
        _Tool({"timeout_s": 0.2}).run_tool([sys.executable, "-c", "import time; time.sleep(5)"], "encode")

def test_a_cell_killed_for_memory_is_one_line_naming_the_image_and_its_memory():
    curve = CurveSettings("tiny", "mse", 1, "fp32", (), max_memory=3 * 2**30)
    cell = Cell("d", "big.png", "0" * 64, CodecConfig("tiny", "sweep", (), "{}", curve), 0.05)
    error = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.\nMore lines")
    assert lost_reason(error, cell) == ("killed for memory: coding big.png needed more than the 3.00G its cell "
                                        "reserved (--max-memory sets it)")
    assert lost_reason(ray.exceptions.RayError("node gone"), cell) == "worker lost: RayError: node gone"
