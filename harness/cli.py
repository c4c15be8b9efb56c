"""Command-line entry point: argument parsing only.

Every subcommand is registered by one ``_add_<command>`` function below. Its
handler builds the stage's frozen config dataclass from the options the user
gave (only those: every default and every check lives in the config, see
:mod:`harness.configs`), imports that stage and returns its work, a call of the
stage's ``run(config)``; the work itself lives in the stage module
(``harness.data``, ``harness.train``, ``harness.leaderboard``,
``harness.report``, ...). The config modules import no torch, Ray or pandas, and
a handler imports its stage only once the config is built: the help, usage
errors and a config's one-line errors answer at once.

:func:`main` imports the stage with Python's cyclic garbage collector off and
freezes what it imported before the work starts
(:func:`harness.process_memory.imports_frozen`): a 64x64 ``harness compress``
with the default model spent ~1.3 s of its ~6.7 s in the collector's passes over
torch's and compressai's objects; it now takes ~4.4 s (benchmarks/RESULTS.md,
speed.py).

Errors: :class:`HarnessError` becomes one line on stderr and exit status 1,
usage errors exit 2, ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

from harness import __version__
from harness.process_memory import huge_pages_for_torch, imports_frozen
from harness.configs import build, default_of
from harness.errors import HarnessError
from harness.flags import (Parser, command, floats, given, ints, memory_size, names, option, resize_arg, scale_range,
                           switch)


@dataclass(frozen=True)
class Command:
    """A subcommand: its one-line help, its examples, and the function that adds its options
    (importing its stage's config, so only the command being run pays that import)."""

    help: str
    examples: str
    register: Callable[[argparse.ArgumentParser], None]


COMMANDS: dict[str, Command] = {}
# What a command's handler returns once it has checked the options and imported its stage: the
# work itself. A stage's run returns what it made (cards, records); `datasets` returns its exit status.
Work = Callable[[], object]


def _command(name: str, help: str, examples: str) -> Callable:
    def add(register: Callable[[argparse.ArgumentParser], None]) -> Callable:
        COMMANDS[name] = Command(help, examples, register)
        return register

    return add


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser listing every command, with the options of ``commands`` (every command's when
    None). A command's options import its stage's config, and some configs import torch: ``harness
    --help``, or a command that codes nothing, should not wait for that."""
    parser = Parser(
        prog="harness",
        description="Benchmark harness for learned image compression (3DM-WeConvene).",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, entry in COMMANDS.items():
        added = command(sub, name, entry.help, entry.examples)
        if commands is None or name in commands:
            entry.register(added)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # The top-level options take no values, so the first word is the command (or a typo argparse names).
    named = next((word for word in argv if not word.startswith("-")), None)
    parser = build_parser(() if named is None else (named,))
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    huge_pages_for_torch()
    try:
        with imports_frozen():
            work = args.func(args)  # options checked, stage imported
        result = work()
        return result if type(result) is int else 0
    except HarnessError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"harness {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


@_command(
    "datasets",
    "list, download and verify the registered datasets (datasets/*.toml)",
    "  harness datasets list\n"
    "  harness datasets verify kodak\n"
    "  harness datasets fetch clic2021-test --root /data/harness\n"
    "  HARNESS_DATA=/data/harness harness datasets verify tecnick\n",
)
def _add_datasets(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.data.manage import DatasetsConfig

    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser, required=True)
    root_help = "data root (default: $HARNESS_DATA, else ~/.cache/harness); Kodak always uses the vendored copy"
    command(actions, "list", "table of datasets: role, image count, present locally?",
             "  harness datasets list --root /data/harness\n").add_argument("--root", type=Path, help=root_help)
    fetch = command(actions, "fetch", "download (resuming), check checksums and safely unpack a dataset",
                     "  harness datasets fetch tecnick\n  harness datasets fetch coco2017-train --root /data/harness\n")
    fetch.add_argument("name", help="dataset name (see `harness datasets list`)")
    fetch.add_argument("--root", type=Path, help=root_help)
    option(fetch, "--retries", DatasetsConfig, "resume an interrupted download this often", type=int)
    switch(fetch, "--keep-archives", "keep_archives", "keep downloaded archives after unpacking", True)
    verify = command(actions, "verify", "check image count and SHA-256 of every image; exit 1 listing bad files",
                      "  harness datasets verify kodak\n  harness datasets verify clic2021-test --root /data/harness\n")
    verify.add_argument("name", help="dataset name (see `harness datasets list`)")
    verify.add_argument("--root", type=Path, help=root_help)

    def handle(args: argparse.Namespace) -> Work:
        from harness.data.manage import run

        config = build(DatasetsConfig, given(args, DatasetsConfig))
        return lambda: run(config)

    parser.set_defaults(func=handle)


@_command(
    "prepare-data",
    "Cut source images into WebDataset shards of training patches (paper §III-C recipe) with Ray.",
    "  harness prepare-data --source folder:../shared/data/photos --out data/photos\n"
    "  harness prepare-data --source clic-train --source liu4k --source coco2017-train \\\n"
    "      --root /data --target-patches 160000 --out data/paper\n"
    "  harness prepare-data --source folder:imgs --resize none --patch 256 --workers 8 --out data/small\n"
    "  harness prepare-data --source folder:/nfs/imgs --out /nfs/shards --address HEAD:6379\n",
)
def _add_prepare_data(p: argparse.ArgumentParser) -> None:
    from harness.data.recipe import SMALL_POLICIES, PatchRecipe
    from harness.data.shards import PrepareConfig

    p.add_argument("--source", action="append", dest="sources", required=True, metavar="SPEC",
                   help="registry name (clic-train, liu4k, coco2017-train) or folder:PATH; repeatable")
    p.add_argument("--out", required=True, help="output directory (shards + manifest.json)")
    option(p, "--root", PrepareConfig, "data root where registry datasets live", default_text="$HARNESS_DATA")
    option(p, "--resize", PatchRecipe, "resize every image to NxN first, or 'none' to keep size and aspect",
            type=resize_arg, metavar="N|none")
    option(p, "--patch", PatchRecipe, "patch side in pixels", type=int)
    option(p, "--patches-per-image", PatchRecipe, "patches per training image, and per validation image always",
            type=int, metavar="K")
    option(p, "--target-patches", PrepareConfig, "N training patches in total, split evenly over the sources "
            "then their images", type=int, metavar="N", default_text="K per image")
    option(p, "--rotations", PatchRecipe, "rotation augmentation: angles drawn per patch", type=ints,
            metavar="DEG,...")
    option(p, "--scale", PatchRecipe, "scaling augmentation: patch pixels per resized-image pixel",
            type=scale_range, metavar="MIN,MAX", field="scale",
            default_text=f"{default_of(PatchRecipe, 'scale_min'):g},{default_of(PatchRecipe, 'scale_max'):g}")
    option(p, "--small", PatchRecipe, "images smaller than the patch: reject with a reason, or upscale",
            choices=SMALL_POLICIES)
    option(p, "--seed", PatchRecipe, "seed of the split and every patch", type=int)
    option(p, "--val-fraction", PrepareConfig, "fraction of source images held out as val-*.tar", type=float)
    option(p, "--shard-patches", PrepareConfig, "patches per shard", type=int)
    option(p, "--workers", PrepareConfig, "concurrent shard tasks / CPUs of the local Ray", type=int,
            default_text="all")
    option(p, "--address", PrepareConfig, "join this Ray cluster instead of starting a local one",
            default_text="a local instance")
    option(p, "--wait", PrepareConfig, "seconds to wait while another command holds --out's lock", field="wait_s",
            type=float, metavar="SECONDS")
    switch(p, "--no-progress", "progress", "no progress bar", False)
    p.set_defaults(func=_run_prepare_data)


def _run_prepare_data(args: argparse.Namespace) -> Work:
    from harness.data import shards
    from harness.data.recipe import PatchRecipe

    values = given(args, shards.PrepareConfig, PatchRecipe)
    if hasattr(args, "scale"):
        values["scale_min"], values["scale_max"] = args.scale
    config = shards.prepare_config(values)

    def work() -> None:
        print(shards.summary_line(shards.run(config), config.out))

    return work


def _report_options(parser: argparse.ArgumentParser) -> None:
    """The report's options, shared by ``leaderboard`` (its report after the run) and ``report``."""
    from harness.report.config import ANCHOR_DEFAULT_TEXT, ReportConfig

    option(parser, "--anchor", ReportConfig, "BD-rate anchor, codec or codec:config", default_text=ANCHOR_DEFAULT_TEXT)
    option(parser, "--rd-plots", ReportConfig, "comma-separated report metrics to draw RD curves for (psnr, msssim, "
            "psnr_y, ..., vmaf), or all", type=names, metavar="LIST|all")


@_command(
    "leaderboard",
    "encode/decode a dataset with every codec (real bitstreams) on Ray, write results.parquet and the report",
    "  harness leaderboard                                   # Kodak, quick profile -> reports/kodak-quick/\n"
    "  harness leaderboard --profile paper --dataset kodak --dataset tecnick --root /data/harness\n"
    "  harness leaderboard --codecs hevc,vvc:quick-400x3,jpeg --dataset folder:~/photos --run mine\n"
    "  harness leaderboard --address ray://head:10001 --profile paper   # join a Ray cluster\n"
    "  harness leaderboard --codecs jpeg,hevc --models runs/tiny/models --run tiny-vs-classics\n",
)
def _add_leaderboard(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.leaderboard.config import LeaderboardConfig
    from harness.leaderboard.metrics import DEFAULT_METRICS
    from harness.precisions import CHOICES as PRECISION_CHOICES

    board = LeaderboardConfig
    option(parser, "--dataset", board, "registry name (kodak, tecnick, clic2021-test, ...) or folder:PATH; "
            "repeatable", field="datasets", action="append", metavar="NAME")
    option(parser, "--root", board, "data root for registry datasets", type=Path, default_text="$HARNESS_DATA")
    option(parser, "--profile", board, "configuration of every codec: quick (4 points, fast presets) or paper "
            "(6 points, slow presets)")
    option(parser, "--codecs", board, "comma-separated codec ids, each optionally id:config (unavailable ones are "
            "listed with the reason)", type=names, default_text="every codec in codecs/")
    option(parser, "--codec-dir", board, "folder of codec .toml files", type=Path, default_text="the repo's codecs/")
    option(parser, "--models", board, "train-sweep models folder (OUT/models): one learned curve, a point per "
            "lambda; repeatable", action="append", type=Path, metavar="DIR")
    option(parser, "--max-memory", board, "peak memory of each learned cell, e.g. 4G: its Ray actor reserves it "
            "and g_a/g_s run in tiles within it", type=memory_size, metavar="SIZE",
            default_text="per variant, harness.artefacts.memory.CELL_BUDGETS")
    option(parser, "--gpus-per-model", board, "GPUs per learned-codec cell on a GPU cluster (0: CPU)", type=float)
    option(parser, "--precision", board, "learned codecs' transforms (g_a, h_a, g_s): fp32, bf16, or auto = bf16 "
            "where the cells' device runs it fast (AMX CPUs, GPUs with bf16 tensor cores)", choices=PRECISION_CHOICES)
    option(parser, "--run", board, "run folder name under --reports", field="run_name", default_text="DATASET-PROFILE")
    option(parser, "--reports", board, "reports folder", field="reports_dir", type=Path)
    option(parser, "--max-images", board, "only the first N images of each dataset", type=int, default_text="all")
    switch(parser, "--force", "force", "recompute cells that already have an ok result", True)
    option(parser, "--address", board, "Ray cluster address to join", default_text="start a local Ray instance")
    option(parser, "--num-cpus", board, "CPUs of the local Ray instance", type=int, default_text="all")
    option(parser, "--wait", board, "seconds to wait while another command holds the run folder's lock",
            field="wait_s", type=float, metavar="SECONDS")
    option(parser, "--timeout", board, "seconds per encode or decode call", field="timeout_s", type=float,
            default_text="the codec file's")
    option(parser, "--metrics", board, "comma-separated quality metrics beyond PSNR-RGB and MS-SSIM, or all "
            "(psnr_yuv, ms_ssim_y, psnr_hvs_m, nlpd, iw_ssim, vif, fsim, vmaf; README 'Metrics'); a rerun with more "
            "re-measures stored bitstreams without encoding", type=names, metavar="LIST|all",
            default_text=",".join(DEFAULT_METRICS))
    option(parser, "--crops", board, "reconstruction crops kept per image and curve for the web report "
            "(points spread over the ladder; 0: none)", type=int)
    _report_options(parser)
    parser.add_argument("--no-report", dest="report", action="store_false",
                        help="write results.parquet and run.json only (the report later: harness report RUN)")
    switch(parser, "--no-progress", "progress", "no progress bar", False)

    def handle(args: argparse.Namespace) -> Work:
        from harness.report.config import ReportConfig

        config = build(board, given(args, board))
        # Built before the run, so a bad report option fails before any cell is computed.
        report = build(ReportConfig, {**given(args, ReportConfig), "run_dir": config.run_dir, "wait_s": config.wait_s})
        from harness.leaderboard.run import run
        from harness.report.publish import publish, record_models

        def work() -> None:
            run(config)
            record_models(config.run_dir, config.models)
            if args.report:
                publish(report)

        return work

    parser.set_defaults(func=handle)

@_command(
    "report",
    "rebuild the report (BD-rate, tables, RD plots, README.md) of a leaderboard run folder from its "
    "results.parquet, encoding nothing",
    "  harness report reports/kodak-quick\n"
    "  harness report reports/kodak-quick --anchor hevc --rd-plots all\n",
)
def _add_report(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.report.config import ReportConfig

    parser.add_argument("run_dir", type=Path, metavar="RUN", help="a leaderboard run folder (its results.parquet)")
    _report_options(parser)
    option(parser, "--wait", ReportConfig, "seconds to wait while another command holds the run folder's lock",
            field="wait_s", type=float, metavar="SECONDS")

    def handle(args: argparse.Namespace) -> Work:
        config = build(ReportConfig, given(args, ReportConfig))
        from harness.report.publish import publish

        return lambda: publish(config)

    parser.set_defaults(func=handle)


def _variant_help() -> str:
    from harness.zoo.registry import ARCHITECTURES
    from harness.zoo.variants import VARIANTS

    return (f"network variant: {', '.join(VARIANTS)}, or a CompressAI baseline compressai:NAME[?N=INT,M=INT] "
            f"with NAME one of {', '.join(ARCHITECTURES)} (without options: the zoo's quality-6 widths)")



@_command(
    "model-info",
    "Parameter counts of a network variant, total and per module.",
    "  harness model-info\n  harness model-info --variant wecharm2d --json\n"
    "  harness model-info --variant compressai:cheng2020-anchor\n"
    "  harness model-info --variant 'compressai:mbt2018-mean?N=64,M=96' --json\n",
)
def _add_model_info(parser: argparse.ArgumentParser) -> None:
    from harness.zoo.config import ModelInfoConfig

    option(parser, "--variant", ModelInfoConfig, _variant_help())
    switch(parser, "--json", "as_json", "print one JSON object", True)

    def handle(args) -> Work:
        config = build(ModelInfoConfig, given(args, ModelInfoConfig))
        from harness.zoo.info import run

        return lambda: run(config)

    parser.set_defaults(func=handle)


@_command(
    "init-model",
    "Write a freshly initialised model checkpoint (config + weights, entropy tables updated).",
    "  harness init-model --out model.pt\n  harness init-model --variant tiny --out tiny.pt --seed 1\n",
)
def _add_init_model(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.artefacts.config import InitModelConfig

    option(parser, "--variant", InitModelConfig, _variant_help())
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    option(parser, "--seed", InitModelConfig, "torch seed of the initialisation", type=int)

    def handle(args) -> Work:
        from harness.zoo.registry import model_config

        config = build(InitModelConfig, given(args, InitModelConfig))
        from harness.artefacts.checkpoint import run_init

        def work() -> None:
            digest = run_init(config)
            print(f"wrote {config.out} (variant {model_config(config.variant).variant}, fingerprint {digest[:16]})")

        return work

    parser.set_defaults(func=handle)


def _coding_options(parser: argparse.ArgumentParser, config: type, what: str) -> None:
    """compress's and decompress's --precision, --max-pixels and --max-memory: fields of ``config``."""
    from harness.precisions import AUTO, CHOICES

    option(parser, "--precision", config, f"precision of {what}: {AUTO} is bf16 on CPUs with AMX and on GPUs "
            "with bf16 tensor cores, else fp32", choices=CHOICES)
    option(parser, "--max-pixels", config, "refuse images of more pixels, from the file's header (Pillow's "
            "decompression-bomb limit)", type=int)
    option(parser, "--max-memory", config, "peak memory of this process, e.g. 2G or 512M: g_a/g_s run in tiles as "
            "large as it allows (the same file format; a budget below one smallest tile is refused)",
            type=memory_size, metavar="SIZE", default_text="what the machine has available; tiles only if needed")


@_command(
    "compress",
    "Compress an image into a .3dmw bitstream with a model checkpoint.",
    "  harness compress kodim01.png -m model.pt -o kodim01.3dmw\n",
)
def _add_compress(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.artefacts.config import CompressConfig

    parser.add_argument("image", type=Path, help="any image Pillow reads (converted to 8-bit RGB)")
    parser.add_argument("-m", "--model", dest="checkpoint", required=True, type=Path,
                        help="checkpoint from init-model or training")
    parser.add_argument("-o", "--out", required=True, type=Path, help="bitstream file to write")
    _coding_options(parser, CompressConfig, "g_a, h_a and g_s")

    def handle(args) -> Work:
        config = build(CompressConfig, given(args, CompressConfig))
        from harness.artefacts.coding import run_compress

        return lambda: run_compress(config)

    parser.set_defaults(func=handle)


@_command(
    "decompress",
    "Decode a .3dmw bitstream to a PNG with the model that encoded it.",
    "  harness decompress kodim01.3dmw -m model.pt -o kodim01.png\n",
)
def _add_decompress(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.artefacts.config import DecompressConfig

    parser.add_argument("bitstream", type=Path, help="file written by harness compress")
    parser.add_argument("-m", "--model", dest="checkpoint", required=True, type=Path,
                        help="the checkpoint that encoded it")
    parser.add_argument("-o", "--out", required=True, type=Path, help="PNG file to write")
    _coding_options(parser, DecompressConfig, "g_s (a file decodes in either precision)")

    def handle(args) -> Work:
        config = build(DecompressConfig, given(args, DecompressConfig))
        from harness.artefacts.coding import run_decompress

        return lambda: run_decompress(config)

    parser.set_defaults(func=handle)


@_command(
    "import-weights",
    "Turn a CompressAI checkpoint file (a zoo state dict) into a harness model and card for leaderboard --models.",
    "  harness import-weights compressai:mbt2018-mean --quality 3 --from mbt2018-mean-3-723404a8.pth.tar "
    "--out published/mbt2018-mean\n"
    "  harness import-weights compressai:cheng2020-anchor --quality 6 --from zoo --out published/cheng2020\n",
)
def _add_import_weights(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.artefacts.config import ImportWeightsConfig

    parser.add_argument("variant", help="compressai:NAME (the widths come from the file)")
    parser.add_argument("--quality", required=True, type=int, help="the zoo quality the weights were trained for: "
                        "sets lambda from CompressAI's quality-to-lambda table")
    parser.add_argument("--from", dest="source", required=True, help="state-dict file, or 'zoo' to download "
                        "through compressai's zoo (torch hub's cache)")
    parser.add_argument("--out", required=True, type=Path, help="folder for <metric>-<lambda>.pt and its .json card")
    option(parser, "--metric", ImportWeightsConfig, "what the weights were trained for: mse or ms-ssim")

    def handle(args) -> Work:
        config = build(ImportWeightsConfig, given(args, ImportWeightsConfig))
        from harness.artefacts.weights import run_import

        return lambda: run_import(config)

    parser.set_defaults(func=handle)


@_command(
    "train-sweep",
    "Train one model per lambda (two stages, paper recipe) as parallel Ray Tune trials.",
    "  harness train-sweep --data shards/ --metric mse --out runs/mse\n"
    "  harness train-sweep --data shards/ --variant tiny --lambdas 0.0067,0.05 \\\n"
    "      --stage1-steps 60 --stage2-steps 20 --batch-size 4 --patch 64 --out runs/tiny\n"
    "  harness train-sweep --data /mnt/harness/shards --gpus-per-trial 1 --address auto --out /mnt/harness/sweep\n"
    "  harness train-sweep --data /mnt/harness/shards --gpus-per-trial 4 --address auto --out /mnt/harness/ddp\n"
    "  harness train-sweep --data shards/ --out runs/mse --resume\n",
)
def _add_train_sweep(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.precisions import CHOICES as PRECISION_CHOICES
    from harness.train.config import SweepConfig
    from harness.train.recipe import TrainingRecipe

    sweep, recipe = SweepConfig, TrainingRecipe
    parser.add_argument("--data", required=True, type=Path, help="prepare-data output directory")
    option(parser, "--metric", sweep, "distortion: mse or ms-ssim")
    option(parser, "--lambdas", sweep, "comma-separated lambdas", type=floats,
            default_text="the paper's set for the metric")
    option(parser, "--variant", sweep, _variant_help())
    option(parser, "--stage1-steps", recipe, "stage-1 iterations (paper: 1.5M)", type=int)
    option(parser, "--stage2-steps", recipe, "stage-2 (reweighted) iterations", type=int)
    option(parser, "--warmup-steps", sweep, "steps of one shared model at the largest lambda that every lambda "
            "starts from (0: from scratch, as the paper)", type=int)
    option(parser, "--precision", recipe, "g_a, h_a and g_s in fp32, or under bf16 autocast (loss, likelihoods, "
            "entropy models and weights stay float32); auto: bf16 on AMX CPUs and bf16 tensor-core GPUs",
            choices=PRECISION_CHOICES)
    option(parser, "--batch-size", recipe, "patches per step, split over a trial's workers", type=int)
    option(parser, "--patch", recipe, "training crop side in pixels", type=int)
    option(parser, "--lr", recipe, "Adam learning rate (paper 1e-4)", type=float)
    option(parser, "--milestones", recipe, "stage-1 lr /= 10 at these fractions of the run", type=floats,
            default_text="the paper's 750k, 850k, ... of 1.5M, i.e. 0.5,0.567,...")
    option(parser, "--w1", recipe, "stage-2 weight of the LLL+HLL rates", type=float)
    option(parser, "--w2", recipe, "stage-2 weight of the six high subbands' rates", type=float)
    option(parser, "--out", sweep, "output folder (models/, metrics.parquet, Tune's experiment)", type=Path)
    option(parser, "--address", sweep, "Ray cluster to join", default_text="a local instance")
    switch(parser, "--resume", "resume", "continue an interrupted sweep in --out", "yes")
    option(parser, "--wait", sweep, "seconds to wait while another command holds --out's lock", field="wait_s",
            type=float, metavar="SECONDS")
    option(parser, "--gpus-per-trial", sweep, "GPUs of each trial; above 1, one DDP worker per GPU (Ray Train)",
            type=float)
    option(parser, "--cpus-per-trial", sweep, "CPUs of each trial (of each worker)", type=int)
    option(parser, "--workers-per-trial", sweep, "DDP workers per trial sharing the batch", type=int,
            default_text="one per GPU, else 1")
    option(parser, "--checkpoint-every", recipe, "steps between Ray checkpoints", type=int)
    option(parser, "--log-every", recipe, "steps between metric rows (with validation)", type=int)
    option(parser, "--val-batches", recipe, "validation batches per log", type=int)
    option(parser, "--max-failures", sweep, "restarts of a crashed trial from its checkpoint", type=int)
    option(parser, "--seed", recipe, "seed of the initialisation and the data stream", type=int)

    def handle(args: argparse.Namespace) -> Work:
        from harness.train.config import sweep_config

        config = sweep_config(given(args, sweep, recipe))
        from harness.train.sweep import run

        return lambda: run(config)

    parser.set_defaults(func=handle)


@_command(
    "rerun",
    "Run a plan (shards -> sweeps -> leaderboard -> report) incrementally, as a Ray Job on a cluster.",
    "  harness rerun --plan plans/nightly.toml\n"
    "  harness rerun --plan /mnt/harness/plans/nightly.toml --address http://127.0.0.1:8265\n"
    "  harness rerun --plan plans/nightly.toml --wait 3600   # queue behind a running rerun\n",
)
def _add_rerun(parser: argparse.ArgumentParser) -> None:
    from pathlib import Path

    from harness.rerun.config import RerunConfig

    rerun = RerunConfig

    parser.add_argument("--plan", required=True, type=Path, help="plan file (TOML; see README 'Scheduled reruns')")
    option(parser, "--address", rerun, "Ray Jobs API of a cluster (http://HEAD:8265)", default_text="run here")
    option(parser, "--wait", rerun, "seconds to wait while another command holds the lock of the report, shard "
            "or sweep folders", field="wait_s", type=float, metavar="SECONDS")
    option(parser, "--python", rerun, "interpreter that runs the job on the head node", default_text="this one")
    option(parser, "--bd-rate-threshold", rerun, "BD-rate increase (percentage points) flagged as a regression",
            type=float)
    option(parser, "--time-threshold", rerun, "relative encode/decode slow-down flagged as a regression", type=float)
    switch(parser, "--no-progress", "progress", "no progress bars (stage and training lines stay)", False)

    def handle(args: argparse.Namespace) -> Work:
        config = build(rerun, given(args, rerun))
        from harness.rerun.pipeline import run

        return lambda: run(config)

    parser.set_defaults(func=handle)
