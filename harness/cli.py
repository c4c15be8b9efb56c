"""Command-line entry point: argument parsing only.

Every subcommand is registered by one ``_add_<command>`` function below. Its
handler builds the stage's frozen config dataclass from the parsed arguments
and calls that stage's ``run(config)``; the work itself lives in the stage
module (``harness.data``, ``harness.train``, ``harness.eval``, ...).

Errors: :class:`HarnessError` becomes one line on stderr and exit status 1,
usage errors exit 2, ``--verbose`` adds the traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Callable, Sequence

from harness import __version__
from harness.errors import HarnessError


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


REGISTRARS: list[Callable] = []


def _registrar(fn: Callable) -> Callable:
    REGISTRARS.append(fn)
    return fn


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="harness",
        description="Benchmark harness for learned image compression (3DM-WeConvene).",
    )
    parser.add_argument("--version", action="version", version=f"harness {__version__}")
    parser.add_argument("--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except HarnessError as error:
        if args.verbose:
            traceback.print_exc()
        print(f"harness {args.command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"harness {args.command}: interrupted", file=sys.stderr)
        return 130


@_registrar
def _add_datasets(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "datasets",
        "list, download and verify the registered datasets (datasets/*.toml)",
        "  harness datasets list\n"
        "  harness datasets verify kodak\n"
        "  harness datasets fetch clic2021-test --root /data/harness\n"
        "  HARNESS_DATA=/data/harness harness datasets verify tecnick\n",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    root_help = "data root (default: $HARNESS_DATA, else ~/.cache/harness); Kodak always uses the vendored copy"
    _command(actions, "list", "table of datasets: role, image count, present locally?",
             "  harness datasets list --root /data/harness\n").add_argument("--root", type=Path, help=root_help)
    fetch = _command(actions, "fetch", "download (resuming), check checksums and safely unpack a dataset",
                     "  harness datasets fetch tecnick\n  harness datasets fetch coco2017-train --root /data/harness\n")
    fetch.add_argument("name", help="dataset name (see `harness datasets list`)")
    fetch.add_argument("--root", type=Path, help=root_help)
    fetch.add_argument("--retries", type=int, default=3, help="resume an interrupted download this often (default 3)")
    fetch.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after unpacking")
    verify = _command(actions, "verify", "check image count and SHA-256 of every image; exit 1 listing bad files",
                      "  harness datasets verify kodak\n  harness datasets verify clic2021-test --root /data/harness\n")
    verify.add_argument("name", help="dataset name (see `harness datasets list`)")
    verify.add_argument("--root", type=Path, help=root_help)

    def handle(args: argparse.Namespace) -> int:
        from harness.data.manage import DatasetsConfig, run

        return run(DatasetsConfig(
            action=args.action,
            name=getattr(args, "name", None),
            root=args.root,
            retries=getattr(args, "retries", 3),
            keep_archives=getattr(args, "keep_archives", False),
        ))

    parser.set_defaults(func=handle)


def _resize_arg(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a side length in pixels or 'none', got {value!r}") from None


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _scale_range(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {value!r}") from None
    return low, high


@_registrar
def _add_prepare_data(sub) -> None:
    p = _command(
        sub,
        "prepare-data",
        "Cut source images into WebDataset shards of training patches (paper §III-C recipe) with Ray.",
        "  harness prepare-data --source folder:../shared/data/photos --out data/photos\n"
        "  harness prepare-data --source clic-train --source liu4k --source coco2017-train \\\n"
        "      --root /data --target-patches 160000 --out data/paper\n"
        "  harness prepare-data --source folder:imgs --resize none --patch 256 --workers 8 --out data/small\n"
        "  harness prepare-data --source folder:/nfs/imgs --out /nfs/shards --address HEAD:6379\n",
    )
    p.add_argument("--source", action="append", required=True, metavar="SPEC",
                   help="registry name (clic-train, liu4k, coco2017-train) or folder:PATH; repeatable")
    p.add_argument("--out", required=True, help="output directory (shards + manifest.json)")
    p.add_argument("--root", help="data root where registry datasets live")
    p.add_argument("--resize", type=_resize_arg, default=2000, metavar="N|none",
                   help="resize every image to NxN first, or 'none' to keep size and aspect (default 2000)")
    p.add_argument("--patch", type=int, default=480, help="patch side in pixels (default 480)")
    p.add_argument("--patches-per-image", type=int, default=8, metavar="K",
                   help="patches per training image, and per validation image always (default 8)")
    p.add_argument("--target-patches", type=int, metavar="N",
                   help="N training patches in total, split evenly over the sources then their images")
    p.add_argument("--rotations", type=_ints, default=(0, 90, 180, 270), metavar="DEG,...",
                   help="rotation augmentation: angles drawn per patch (default 0,90,180,270)")
    p.add_argument("--scale", type=_scale_range, default=(0.5, 1.0), metavar="MIN,MAX",
                   help="scaling augmentation: patch pixels per resized-image pixel (default 0.5,1.0)")
    p.add_argument("--small", choices=("reject", "upscale"), default="reject",
                   help="images smaller than the patch: reject with a reason (default) or upscale")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and every patch (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.05,
                   help="fraction of source images held out as val-*.tar (default 0.05)")
    p.add_argument("--shard-patches", type=int, default=256, help="patches per shard (default 256)")
    p.add_argument("--workers", type=int, help="concurrent shard tasks / CPUs of the local Ray (default: all)")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_prepare_data)


def _run_prepare_data(args: argparse.Namespace) -> int:
    from pathlib import Path

    from harness.data import shards
    from harness.data.recipe import PatchRecipe

    recipe = PatchRecipe(
        patch=args.patch,
        resize=args.resize,
        patches_per_image=args.patches_per_image,
        rotations=args.rotations,
        scale_min=args.scale[0],
        scale_max=args.scale[1],
        small=args.small,
        seed=args.seed,
    )
    config = shards.PrepareConfig(
        sources=tuple(args.source),
        out=Path(args.out),
        recipe=recipe,
        root=Path(args.root) if args.root else None,
        target_patches=args.target_patches,
        val_fraction=args.val_fraction,
        shard_patches=args.shard_patches,
        workers=args.workers,
        address=args.address,
        progress=not args.no_progress,
    )
    manifest = shards.run(config)
    print(shards.summary_line(manifest, config.out))
    return 0


@_registrar
def _add_leaderboard(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "leaderboard",
        "encode/decode a dataset with every codec (real bitstreams) on Ray, write results.parquet and the report",
        "  harness leaderboard                                   # Kodak, quick profile -> reports/kodak-quick/\n"
        "  harness leaderboard --profile paper --dataset kodak --dataset tecnick --root /data/harness\n"
        "  harness leaderboard --codecs hevc,vvc:quick-400x3,jpeg --dataset folder:~/photos --run mine\n"
        "  harness leaderboard --address ray://head:10001 --profile paper   # join a Ray cluster\n"
        "  harness leaderboard --report-only reports/kodak-quick --anchor hevc\n"
        "  harness leaderboard --codecs jpeg,hevc --models runs/tiny/models --run tiny-vs-classics\n",
    )
    parser.add_argument("--dataset", action="append", dest="datasets", metavar="NAME",
                        help="registry name (kodak, tecnick, clic2021-test, ...) or folder:PATH; repeatable "
                             "(default: kodak)")
    parser.add_argument("--root", type=Path, help="data root for registry datasets (default: $HARNESS_DATA)")
    parser.add_argument("--profile", default="quick",
                        help="configuration of every codec: quick (4 points, fast presets) or paper "
                             "(6 points, slow presets) (default: quick)")
    parser.add_argument("--codecs", default="",
                        help="comma-separated codec ids, each optionally id:config (default: every codec in "
                             "codecs/; unavailable ones are listed with the reason)")
    parser.add_argument("--codec-dir", type=Path, help="folder of codec .toml files (default: the repo's codecs/)")
    parser.add_argument("--models", action="append", type=Path, default=[], metavar="DIR",
                        help="train-sweep models folder (OUT/models): one learned curve, a point per lambda; repeatable")
    parser.add_argument("--gpus-per-model", type=float, default=0.0,
                        help="GPUs per learned-codec cell on a GPU cluster (default 0: CPU)")
    parser.add_argument("--run", dest="run_name", help="run folder name under --reports (default: DATASET-PROFILE)")
    parser.add_argument("--reports", type=Path, default=Path("reports"), help="reports folder (default: reports)")
    parser.add_argument("--max-images", type=int, help="only the first N images of each dataset")
    parser.add_argument("--force", action="store_true", help="recompute cells that already have an ok result")
    parser.add_argument("--address", help="Ray cluster address to join (default: start a local Ray instance)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance (default: all)")
    parser.add_argument("--timeout", type=float, help="seconds per encode or decode call (default: codec file)")
    parser.add_argument("--anchor", help="BD-rate anchor, codec or codec:config (default: vtm when it ran, else vvc)")
    parser.add_argument("--no-report", action="store_true", help="write results.parquet only")
    parser.add_argument("--report-only", type=Path, metavar="RUN",
                        help="rebuild tables and plots of an existing run folder without encoding anything")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    def handle(args: argparse.Namespace) -> int:
        from harness.codecs.config import DEFAULT_DIR
        from harness.eval.runner import LeaderboardConfig, run

        if args.max_images is not None and args.max_images < 1:
            raise HarnessError("--max-images must be at least 1")
        return run(LeaderboardConfig(
            datasets=tuple(args.datasets or ("kodak",)),
            profile=args.profile,
            codecs=tuple(c.strip() for c in args.codecs.split(",") if c.strip()),
            run_name=args.run_name,
            reports_dir=args.reports,
            root=args.root,
            codec_dir=args.codec_dir or DEFAULT_DIR,
            models=tuple(args.models),
            gpus_per_model=args.gpus_per_model,
            max_images=args.max_images,
            force=args.force,
            address=args.address,
            num_cpus=args.num_cpus,
            timeout_s=args.timeout,
            anchor=args.anchor,
            report=not args.no_report,
            report_only=args.report_only,
            progress=not args.no_progress,
        ))

    parser.set_defaults(func=handle)


@_registrar
def _add_model_info(sub) -> None:
    from harness.model.config import DEFAULT_VARIANT, VARIANTS

    parser = _command(
        sub,
        "model-info",
        "Parameter counts of a network variant, total and per module.",
        "  harness model-info\n  harness model-info --variant wecharm2d --json\n",
    )
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=list(VARIANTS), help="network variant")
    parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(args) -> int:
        from harness.model.info import ModelInfoConfig, run

        run(ModelInfoConfig(variant=args.variant, as_json=args.json))
        return 0

    parser.set_defaults(func=handle)


@_registrar
def _add_init_model(sub) -> None:
    from pathlib import Path

    from harness.model.config import DEFAULT_VARIANT, VARIANTS

    parser = _command(
        sub,
        "init-model",
        "Write a freshly initialised model checkpoint (config + weights, entropy tables updated).",
        "  harness init-model --out model.pt\n  harness init-model --variant tiny --out tiny.pt --seed 1\n",
    )
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=list(VARIANTS), help="network variant")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint file to write")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the initialisation")

    def handle(args) -> int:
        from harness.model.checkpoint import InitModelConfig, run_init

        digest = run_init(InitModelConfig(variant=args.variant, out=args.out, seed=args.seed))
        print(f"wrote {args.out} (variant {args.variant}, fingerprint {digest[:16]})")
        return 0

    parser.set_defaults(func=handle)


@_registrar
def _add_compress(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "compress",
        "Compress an image into a .3dmw bitstream with a model checkpoint.",
        "  harness compress kodim01.png -m model.pt -o kodim01.3dmw\n",
    )
    parser.add_argument("image", type=Path, help="any image Pillow reads (converted to 8-bit RGB)")
    parser.add_argument("-m", "--model", required=True, type=Path, help="checkpoint from init-model or training")
    parser.add_argument("-o", "--out", required=True, type=Path, help="bitstream file to write")

    def handle(args) -> int:
        from harness.model.coding import CompressConfig, run_compress

        run_compress(CompressConfig(image=args.image, checkpoint=args.model, out=args.out))
        return 0

    parser.set_defaults(func=handle)


@_registrar
def _add_decompress(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "decompress",
        "Decode a .3dmw bitstream to a PNG with the model that encoded it.",
        "  harness decompress kodim01.3dmw -m model.pt -o kodim01.png\n",
    )
    parser.add_argument("bitstream", type=Path, help="file written by harness compress")
    parser.add_argument("-m", "--model", required=True, type=Path, help="the checkpoint that encoded it")
    parser.add_argument("-o", "--out", required=True, type=Path, help="PNG file to write")

    def handle(args) -> int:
        from harness.model.coding import DecompressConfig, run_decompress

        run_decompress(DecompressConfig(bitstream=args.bitstream, checkpoint=args.model, out=args.out))
        return 0

    parser.set_defaults(func=handle)


def _floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


@_registrar
def _add_train_sweep(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "train-sweep",
        "Train one model per lambda (two stages, paper recipe) as parallel Ray Tune trials.",
        "  harness train-sweep --data shards/ --metric mse --out runs/mse\n"
        "  harness train-sweep --data shards/ --variant tiny --lambdas 0.0067,0.05 \\\n"
        "      --stage1-steps 60 --stage2-steps 20 --batch-size 4 --patch 64 --out runs/tiny\n"
        "  harness train-sweep --data /mnt/harness/shards --gpus-per-trial 1 --address auto --out /mnt/harness/sweep\n"
        "  harness train-sweep --data /mnt/harness/shards --gpus-per-trial 4 --address auto --out /mnt/harness/ddp\n"
        "  harness train-sweep --data shards/ --out runs/mse --resume\n",
    )
    parser.add_argument("--data", required=True, type=Path, help="prepare-data output directory")
    parser.add_argument("--metric", default="mse", help="distortion: mse or ms-ssim (default mse)")
    parser.add_argument("--lambdas", type=_floats, default=(),
                        help="comma-separated lambdas (default: the paper's set for the metric)")
    parser.add_argument("--variant", default="3dm-weconvene", help="network variant (see harness model-info)")
    parser.add_argument("--stage1-steps", type=int, default=1_500_000, help="stage-1 iterations (paper: 1.5M)")
    parser.add_argument("--stage2-steps", type=int, default=50_000, help="stage-2 (reweighted) iterations")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=256, help="training crop side in pixels")
    parser.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (paper 1e-4)")
    parser.add_argument("--milestones", type=_floats, default=None,
                        help="stage-1 lr /= 10 at these fractions of the run (default: the paper's "
                             "750k, 850k, ... of 1.5M, i.e. 0.5,0.567,...)")
    parser.add_argument("--w1", type=float, default=1.1, help="stage-2 weight of the LLL+HLL rates")
    parser.add_argument("--w2", type=float, default=0.9, help="stage-2 weight of the six high subbands' rates")
    parser.add_argument("--out", type=Path, default=Path("runs/sweep"))
    parser.add_argument("--address", help="Ray cluster to join (default: a local instance)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep in --out")
    parser.add_argument("--gpus-per-trial", type=float, default=0.0,
                        help="GPUs of each trial; above 1, one DDP worker per GPU (Ray Train)")
    parser.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs of each trial (of each worker)")
    parser.add_argument("--workers-per-trial", type=int, default=0,
                        help="DDP workers per trial sharing the batch (default: one per GPU, else 1)")
    parser.add_argument("--checkpoint-every", type=int, default=1000, help="steps between Ray checkpoints")
    parser.add_argument("--log-every", type=int, default=100, help="steps between metric rows (with validation)")
    parser.add_argument("--val-batches", type=int, default=4, help="validation batches per log")
    parser.add_argument("--max-failures", type=int, default=3, help="restarts of a crashed trial from its checkpoint")
    parser.add_argument("--seed", type=int, default=0)

    def handle(args: argparse.Namespace) -> int:
        from harness.train.loop import PAPER_MILESTONES
        from harness.train.sweep import SweepConfig, run

        run(SweepConfig(
            data=args.data, metric=args.metric, lambdas=args.lambdas, variant=args.variant,
            stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps, batch_size=args.batch_size,
            patch=args.patch, lr=args.lr, w1=args.w1, w2=args.w2,
            milestones=PAPER_MILESTONES if args.milestones is None else args.milestones, out=args.out, address=args.address,
            resume="yes" if args.resume else "no", gpus_per_trial=args.gpus_per_trial, cpus_per_trial=args.cpus_per_trial,
            workers_per_trial=args.workers_per_trial,
            checkpoint_every=args.checkpoint_every, log_every=args.log_every, val_batches=args.val_batches,
            max_failures=args.max_failures, seed=args.seed,
        ))
        return 0

    parser.set_defaults(func=handle)


@_registrar
def _add_rerun(sub) -> None:
    from pathlib import Path

    parser = _command(
        sub,
        "rerun",
        "Run a plan (shards -> sweeps -> leaderboard -> report) incrementally, as a Ray Job on a cluster.",
        "  harness rerun --plan plans/nightly.toml\n"
        "  harness rerun --plan /mnt/harness/plans/nightly.toml --address http://127.0.0.1:8265\n"
        "  harness rerun --plan plans/nightly.toml --wait 3600   # queue behind a running rerun\n",
    )
    parser.add_argument("--plan", required=True, type=Path, help="plan file (TOML; see README 'Scheduled reruns')")
    parser.add_argument("--address", help="Ray Jobs API of a cluster (http://HEAD:8265); default: run here")
    parser.add_argument("--wait", type=float, default=0.0, help="seconds to wait for a concurrent rerun's lock")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter that runs the job on the head node (default: this one)")
    parser.add_argument("--bd-rate-threshold", type=float, default=1.0,
                        help="BD-rate increase (percentage points) flagged as a regression")
    parser.add_argument("--time-threshold", type=float, default=0.2,
                        help="relative encode/decode slow-down flagged as a regression")

    def handle(args: argparse.Namespace) -> int:
        from harness.rerun.pipeline import RerunConfig, run

        return run(RerunConfig(plan=args.plan, address=args.address, wait_s=args.wait, python=args.python,
                               bd_rate_threshold=args.bd_rate_threshold, time_threshold=args.time_threshold))

    parser.set_defaults(func=handle)
