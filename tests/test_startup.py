"""What a CLI call costs before its work: the commands that neither code nor train, every command's
help, usage errors and its config's one-line errors import no torch, numba, Ray, pandas or SciPy (issue 33: `harness --help`
took 5.8 s, most of it compressai's import). Measured with ``python -X importtime``, which lists
every module a process imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "compressai", "numba", "ray", "pandas", "scipy")


def imported(argv: list[str], python: tuple[str, ...] = ("-m", "harness")) -> tuple[set[str], subprocess.CompletedProcess]:
    """The top-level packages ``python -m harness ARGV`` imported, and the process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-X", "importtime", *python, *argv], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)
    names = {line.rpartition("|")[2].strip().split(".")[0] for line in done.stderr.splitlines()
             if line.startswith("import time:")}
    return names, done


@pytest.mark.parametrize("argv, status", [
    (["--help"], 0),
    ([], 2),
    (["--version"], 0),
    (["no-such-command"], 2),  # a usage error
    (["datasets", "--help"], 0),
    (["datasets", "list"], 0),
    (["datasets", "verify"], 2),  # a usage error: no dataset named
    (["prepare-data", "--help"], 0),
    (["prepare-data", "--out", "x"], 2),  # a usage error: no --source
    (["compress", "--help"], 0),
    (["compress", "x.png"], 2),  # a usage error: no --model
    (["decompress", "--help"], 0),
    (["decompress", "x.3dmw", "-m", "m.pt", "-o", "x.png", "--precision", "fp16"], 2),  # an invalid choice
    (["compress", "x.png", "-m", "m.pt", "-o", "x.3dmw", "--max-pixels", "0"], 1),  # the config's one-line error
    (["leaderboard", "--help"], 0),
    (["leaderboard", "--metrics", "ssimulacra"], 1),  # the config's one-line error
    (["report", "--help"], 0),
    (["report"], 2),  # a usage error: no run folder
    (["model-info", "--help"], 0),
    (["model-info", "--variant", "compressai:nope"], 1),  # an unknown variant, from the registry
    (["init-model", "--help"], 0),
    (["import-weights", "--help"], 0),
    (["import-weights", "compressai:mbt2018-mean", "--quality", "9", "--from", "zoo", "--out", "x"], 1),
    (["train-sweep", "--help"], 0),
    (["train-sweep", "--data", "x", "--lambdas", "0.01", "--patch", "65"], 1),  # not a multiple of the stride
    (["rerun", "--help"], 0),
])
def test_help_and_argument_errors_import_no_heavy_library(argv, status):
    names, done = imported(argv)
    assert done.returncode == status, done.stderr[-2000:]
    heavy = sorted(set(HEAVY) & names)
    assert not heavy, f"harness {' '.join(argv)} imported {', '.join(heavy)}"


def test_the_help_imports_no_numpy():
    names, done = imported(["--help"])
    assert done.returncode == 0 and "COMMAND" in done.stdout
    assert "numpy" not in names and "PIL" not in names


@pytest.mark.slow
def test_a_normal_compress_and_decompress_print_nothing_on_stderr(tiny_checkpoint, kodak_dir, tmp_path):
    """No warning of ours or our libraries' (torch's on compressai's torch.jit.script, pickle
    protocols, ...) reaches a user coding a plain image, in either precision."""
    from PIL import Image

    Image.open(kodak_dir / "kodim01.png").crop((0, 0, 64, 48)).save(tmp_path / "small.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for argv in (["compress", tmp_path / "small.png", "-m", tiny_checkpoint, "-o", tmp_path / "s.3dmw",
                  "--precision", "bf16"],
                 ["decompress", tmp_path / "s.3dmw", "-m", tiny_checkpoint, "-o", tmp_path / "s.png",
                  "--precision", "fp32"]):
        done = subprocess.run([sys.executable, "-m", "harness", *map(str, argv)], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=300)
        assert done.returncode == 0 and done.stderr == "", f"harness {argv[0]}: {done.stderr[-2000:]}"


_COMPILED = """
import gc, sys
from numba.core.dispatcher import Dispatcher
from harness.cli import main
for argv in (["compress", "small.png", "-m", sys.argv[1], "-o", "s.3dmw", "--precision", "fp32"],
             ["decompress", "s.3dmw", "-m", sys.argv[1], "-o", "s.png", "--precision", "fp32"]):
    try:
        main(argv)
    except SystemExit as done:
        assert not done.code, done.code
gc.unfreeze()  # the CLI froze what its imports made: get_objects would not list it
for o in gc.get_objects():
    if isinstance(o, Dispatcher) and o.stats.cache_misses:
        print(f"compiled {o.py_func.__module__}.{o.py_func.__qualname__}")
"""


def test_a_compress_and_decompress_compile_no_kernel_that_an_earlier_process_compiled(tiny_checkpoint, kodak_dir,
                                                                                       tmp_path):
    """Every numba kernel a coding process runs comes from the on-disk cache once a process has
    compiled it: numba's own uncached helpers (its typed list's, 0.28 s) cost every process again."""
    from PIL import Image

    Image.open(kodak_dir / "kodim01.png").crop((0, 0, 64, 48)).save(tmp_path / "small.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = [subprocess.run([sys.executable, "-c", _COMPILED, str(tiny_checkpoint)], capture_output=True, text=True,
                           env=env, cwd=tmp_path, timeout=300) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), runs[-1].stderr[-2000:]
    compiled = [line.split()[1] for line in runs[1].stdout.splitlines() if line.startswith("compiled ")]
    assert compiled == [], f"compiled again in a second process: {compiled}"


@pytest.mark.parametrize("module", ["harness.report.publish", "harness.rerun.plan"])
def test_the_report_and_a_plans_checks_import_no_model(module):
    """`harness report RUN` reads records and a rerun checks its plan without torch or CompressAI."""
    names, done = imported([f"import {module}"], python=("-c",))
    assert done.returncode == 0, done.stderr[-2000:]
    assert not {"torch", "compressai", "numba"} & names, module


WATCH_COLLECTOR = """
import gc, sys
from harness import cli
passes = []
gc.callbacks.append(lambda phase, info: phase == "stop" and info["generation"] == 2 and passes.append(gc.get_freeze_count()))
status = cli.main(["model-info", "--variant", "tiny"])  # imports torch, compressai and the network
print("full passes before the freeze:", passes.count(0), "frozen:", gc.get_freeze_count(), gc.isenabled())
sys.exit(status)
"""


def test_a_command_imports_its_stage_without_full_collections_and_freezes_it():
    """Importing torch and compressai set off ~8 full passes of Python's cyclic collector (~0.9 s),
    and each later pass walked the ~0.5 M objects they made (harness.process_memory.imports_frozen)."""
    done = subprocess.run([sys.executable, "-c", WATCH_COLLECTOR], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    *_, before, _, frozen, enabled = done.stdout.split()
    assert int(before) == 0 and int(frozen) > 100_000 and enabled == "True", done.stdout


WATCH_WORKER = """
import gc, ray
from harness.raycluster import connect
connect(num_cpus=1)
print(ray.get(ray.remote(lambda: gc.get_threshold()[0]).remote()))
"""


@pytest.mark.slow
def test_a_ray_worker_of_a_harness_job_collects_its_youngest_generation_less_often():
    """Its imports of torch and compressai would otherwise set off ~8 full passes (~0.9 s)."""
    from harness.raycluster import YOUNG_COLLECTION_EVERY

    done = subprocess.run([sys.executable, "-c", WATCH_WORKER], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(YOUNG_COLLECTION_EVERY)


THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
# A process that asks (or not) before torch is imported: the huge pages behind one 64 MiB tensor.
HUGE = """
import sys
from harness.process_memory import huge_pages_for_torch
if sys.argv[1] == "torch first":
    import torch
huge_pages_for_torch()
import torch
x = torch.ones(16 << 20)  # 64 MiB, faulted in
for line in open("/proc/self/smaps_rollup"):
    if line.startswith("AnonHugePages:"):
        print(int(line.split()[1]) // 1024)
"""


@pytest.mark.skipif(not THP_MODE.exists() or "[never]" in THP_MODE.read_text(), reason="the kernel gives no THP")
@pytest.mark.parametrize("order, setting, huge", [
    ("ask first", None, True),
    ("ask first", "0", False),  # the environment's own choice stands
    ("torch first", None, False),  # too late: torch reads the switch once, at import
])
def test_a_process_that_asks_before_importing_torch_backs_its_tensors_with_huge_pages(order, setting, huge):
    env = {key: value for key, value in os.environ.items() if key != "THP_MEM_ALLOC_ENABLE"}
    env["PYTHONPATH"] = str(REPO)
    if setting is not None:
        env["THP_MEM_ALLOC_ENABLE"] = setting
    done = subprocess.run([sys.executable, "-c", HUGE, order], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    mebibytes = int(done.stdout.split()[-1])
    assert (mebibytes >= 32) is huge, mebibytes


def test_the_cli_asks_for_huge_pages_before_a_stage_imports_torch(monkeypatch):
    from harness import cli

    asked = []
    monkeypatch.setattr(cli, "huge_pages_for_torch", lambda: asked.append(True))
    assert cli.main(["datasets", "list"]) == 0
    assert asked == [True]
