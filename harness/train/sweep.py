"""``harness train-sweep``: one Ray Tune trial per λ, two-stage training, exported models.

The driver only plans: it validates the inputs (shards, λ, metric) before any
trial starts, skips λ whose exported model already matches the same inputs,
and hands the rest to a Tune grid search with per-trial resources and
``FailureConfig(max_failures)``, so a trial whose worker dies restarts from its
last checkpoint. A trial with several workers (``--gpus-per-trial N`` or
``--workers-per-trial N``) trains with DDP under Ray Train inside its Tune trial
(see :mod:`harness.train.loop`). Per-trial metrics stream into
``OUT/metrics.parquet`` (one row per report) and a progress line per report.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from harness.atomic import write_parquet_atomic
from harness.errors import HarnessError
from harness.raycluster import connect
from harness.hashing import sha256_bytes
from harness.model.config import get_config
from harness.model.loss import MS_SSIM_MIN_SIDE
from harness.train.loop import PAPER_MILESTONES, TrialConfig, model_name, train_trial

PAPER_LAMBDAS = {
    "mse": (0.0025, 0.0035, 0.0067, 0.013, 0.025, 0.05),
    "ms-ssim": (5.0, 8.0, 16.0, 32.0, 64.0),
}
EXPERIMENT = "sweep"
DRIVER_CPU = 0.01  # what a multi-worker trial itself reserves (Ray wants a non-empty request)
METRICS_FILE = "metrics.parquet"


@dataclass(frozen=True)
class SweepConfig:
    data: Path
    metric: str = "mse"
    lambdas: tuple[float, ...] = ()
    variant: str = "3dm-weconvene"
    stage1_steps: int = 1_500_000
    stage2_steps: int = 50_000
    batch_size: int = 8
    patch: int = 256
    lr: float = 1e-4
    milestones: tuple[float, ...] = PAPER_MILESTONES
    w1: float = 1.1
    w2: float = 0.9
    out: Path = Path("runs/sweep")
    address: str | None = None
    resume: str = "no"  # "yes": continue the interrupted sweep; "auto": continue it if there is one
    gpus_per_trial: float = 0.0
    cpus_per_trial: int = 1  # per worker when a trial has several
    workers_per_trial: int = 0  # DDP workers per trial; 0: one per GPU when --gpus-per-trial > 1, else 1
    checkpoint_every: int = 1000
    log_every: int = 100
    val_batches: int = 4
    max_failures: int = 3
    seed: int = 0

    @property
    def chosen_lambdas(self) -> tuple[float, ...]:
        return self.lambdas or PAPER_LAMBDAS.get(self.metric, ())

    @property
    def workers(self) -> int:
        if self.workers_per_trial:
            return self.workers_per_trial
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else 1


def validate(config: SweepConfig) -> str:
    """Every check that can fail before a trial starts; returns the data manifest's sha256."""
    from harness.data.stream import shard_paths

    if config.resume not in ("no", "yes", "auto"):
        raise HarnessError(f"resume must be no, yes or auto, got {config.resume!r}")
    if config.metric not in PAPER_LAMBDAS:
        raise HarnessError(f"unknown metric {config.metric!r}: choose {' or '.join(PAPER_LAMBDAS)}")
    bad = [lmbda for lmbda in config.chosen_lambdas if not (math.isfinite(lmbda) and lmbda > 0)]
    if bad:
        raise HarnessError(f"every lambda must be a positive number, got {', '.join(f'{b:g}' for b in bad)}")
    if len(set(config.chosen_lambdas)) != len(config.chosen_lambdas):
        raise HarnessError("the lambda list has duplicates")
    if config.stage1_steps < 1 or config.stage2_steps < 0:
        raise HarnessError("--stage1-steps must be >= 1 and --stage2-steps >= 0")
    if any(not 0 < f < 1 for f in config.milestones):
        raise HarnessError(f"--milestones are fractions of stage 1 in (0, 1), got {list(config.milestones)}")
    if config.workers_per_trial < 0 or config.gpus_per_trial < 0 or config.cpus_per_trial < 1:
        raise HarnessError("--workers-per-trial and --gpus-per-trial must be >= 0, --cpus-per-trial >= 1")
    workers = config.workers
    if workers > 1 and not float(config.gpus_per_trial / workers).is_integer():
        raise HarnessError(f"--gpus-per-trial {config.gpus_per_trial:g} does not split into whole GPUs over "
                           f"{workers} workers: give one GPU (or a whole number) per worker")
    if workers == 1 and config.gpus_per_trial > 1:
        raise HarnessError(f"--gpus-per-trial {config.gpus_per_trial:g} with one worker: a worker drives one device")
    if config.batch_size % workers:
        raise HarnessError(f"--batch-size {config.batch_size} does not split evenly over {workers} workers")
    if config.batch_size < 1 or config.checkpoint_every < 1 or config.log_every < 1:
        raise HarnessError("--batch-size, --checkpoint-every and --log-every must be >= 1")
    stride = get_config(config.variant).stride
    if config.patch % stride:
        raise HarnessError(f"--patch {config.patch} must be a multiple of the model stride {stride}")
    if config.metric == "ms-ssim" and config.patch < MS_SSIM_MIN_SIDE:
        raise HarnessError(f"MS-SSIM training needs --patch >= {MS_SSIM_MIN_SIDE}, got {config.patch}")
    shard_paths(config.data, "train", config.patch)
    shard_paths(config.data, "val", config.patch)
    return data_identity(Path(config.data))


def data_identity(data: Path) -> str:
    """SHA-256 over the shards' names and hashes: the same data gives the same value, however
    often prepare-data resumed (the manifest file itself records wall times and resume counts)."""
    manifest = json.loads((data / "manifest.json").read_text())
    shards = sorted((shard["name"], shard["sha256"]) for shard in manifest["shards"])
    return sha256_bytes(json.dumps(shards).encode())


def trial_configs(config: SweepConfig, data_sha256: str) -> list[TrialConfig]:
    """One trial per λ: the sweep's recipe (every field the two configs share) plus λ and paths."""
    shared = {f.name: getattr(config, f.name) for f in fields(TrialConfig) if hasattr(config, f.name)}
    shared.update(data=str(Path(config.data).resolve()), out=str(Path(config.out).resolve()),
                  data_sha256=data_sha256, threads=max(1, config.cpus_per_trial), workers=config.workers,
                  gpus_per_worker=config.gpus_per_trial / config.workers)
    return [TrialConfig(**{**shared, "lmbda": float(lmbda)}) for lmbda in config.chosen_lambdas]


def already_trained(trial: TrialConfig) -> bool:
    """True when ``models/<name>.pt`` exists and its card was made from the same inputs."""
    models = Path(trial.out) / "models"
    card_path, model_path = models / f"{trial.name}.json", models / f"{trial.name}.pt"
    if not (card_path.is_file() and model_path.is_file()):
        return False
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return card.get("inputs_hash") == trial.inputs_hash()


REPORT_KEYS = ("trial_id", "metric", "lmbda", "step", "stage", "loss", "distortion", "aux_loss", "lr", "images_per_s",
               "restarts", "workers", "psnr", "mse")


def _metrics_callback(path: Path, totals: dict[float, int]):
    """A Tune callback appending one row per trial report to ``path`` and printing a progress line.

    The table is rewritten after every report, so a dead driver loses nothing. A restored
    sweep reads the file back on its first report: the parquet file is the log.
    """
    from ray.tune import Callback

    class MetricsCallback(Callback):
        def __init__(self) -> None:
            self.rows: list[dict] | None = None

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            import pandas as pd

            if self.rows is None:
                self.rows = pd.read_parquet(path).to_dict("records") if path.is_file() else []
            row = {k: v for k, v in result.items() if k in REPORT_KEYS or k.startswith(("bpp", "val_"))}
            row["time"] = time.time()
            self.rows.append(row)
            write_parquet_atomic(pd.DataFrame(self.rows), path)
            validation = f" | val {result['val_bpp']:.3f} bpp {result['val_psnr']:.2f} dB" if "val_bpp" in result else ""
            print(
                f"[{model_name(result['metric'], result['lmbda'])}] stage {result['stage']} "
                f"step {result['step']}/{totals.get(result['lmbda'], '?')} loss {result['loss']:.4f} "
                f"bpp {result['bpp']:.3f} psnr {result['psnr']:.2f} dB{validation} "
                f"lr {result['lr']:.1e} {result['images_per_s']:.1f} img/s",
                flush=True,
            )

    return MetricsCallback()


def run(config: SweepConfig) -> list[Path]:
    """Train (or reuse) one model per λ; returns the exported checkpoints in λ order."""
    trials = trial_configs(config, validate(config))
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = [t for t in trials if not already_trained(t)]
    kept = len(trials) - len(todo)
    if kept:
        print(f"train-sweep: {kept} of {len(trials)} models already trained on the same inputs, kept", flush=True)
    if todo:
        _tune(config, trials, todo, out)
    models = [out / "models" / f"{t.name}.pt" for t in trials]
    missing = [m.name for m in models if not m.is_file()]
    if missing:
        raise HarnessError(f"{len(missing)} trial(s) failed ({', '.join(missing)}): see {experiment_dir(out, trials)}; "
                           f"rerun with --resume")
    print(f"train-sweep: {len(todo)} trained, {kept} kept -> {out / 'models'}", flush=True)
    return models


def experiment_dir(out: Path, todo: list[TrialConfig]) -> Path:
    """Where Tune keeps the sweep of these trials (the whole λ set: a sweep of other λ gets its own)."""
    digest = sha256_bytes(json.dumps(sorted(t.inputs_hash() for t in todo)).encode())[:12]
    return Path(out) / f"{EXPERIMENT}-{digest}"


def _trial_dirname(trial) -> str:
    params = trial.config["trial"]
    return f"{model_name(params['metric'], params['lmbda'])}-{trial.trial_id}"


def _trial_resources(config: SweepConfig) -> tuple[dict[str, float], float]:
    """Tune's request for one trial, and the CPUs the whole trial takes with its workers."""
    if config.workers > 1:  # the trial only drives its Ray Train workers, which hold the resources
        return {"cpu": DRIVER_CPU}, DRIVER_CPU + config.workers * config.cpus_per_trial
    return {"cpu": config.cpus_per_trial, "gpu": config.gpus_per_trial}, config.cpus_per_trial


def _check_fits(config: SweepConfig, cpus: float) -> None:
    """On this machine's own Ray (no --address), refuse a trial that could never be scheduled:
    Tune would wait for it forever. A cluster may still autoscale, so it is not checked."""
    import ray

    if config.address or os.environ.get("RAY_ADDRESS"):
        return
    total = ray.cluster_resources()
    have_cpus, have_gpus = total.get("CPU", 0.0), total.get("GPU", 0.0)
    if cpus > have_cpus or config.gpus_per_trial > have_gpus:
        raise HarnessError(
            f"a trial needs {cpus:g} CPUs and {config.gpus_per_trial:g} GPUs ({config.workers} worker(s) x "
            f"--cpus-per-trial {config.cpus_per_trial}{' + its driver' if config.workers > 1 else ''}), but the local Ray "
            f"has {have_cpus:g} CPUs and {have_gpus:g} GPUs: lower --cpus-per-trial, --workers-per-trial or "
            "--gpus-per-trial, or join a cluster with --address"
        )


def _tune(config: SweepConfig, trials: list[TrialConfig], todo: list[TrialConfig], out: Path) -> None:
    from ray import tune

    connect(config.address, log_to_driver=True)  # trials' warnings and errors reach the user
    resources, cpus = _trial_resources(config)
    _check_fits(config, cpus)
    experiment = experiment_dir(out, trials)
    trainable = tune.with_resources(train_trial, resources)
    if config.resume == "yes" or (config.resume == "auto" and tune.Tuner.can_restore(str(experiment))):
        if not tune.Tuner.can_restore(str(experiment)):
            raise HarnessError(f"nothing to resume at {experiment}: run without --resume")
        tuner = tune.Tuner.restore(str(experiment), trainable, resume_errored=True)
    else:
        if experiment.exists():
            raise HarnessError(f"{experiment} holds an earlier sweep: pass --resume to continue it or choose another --out")
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([asdict(t) for t in todo])},
            run_config=tune.RunConfig(
                name=experiment.name,
                storage_path=str(out),
                failure_config=tune.FailureConfig(max_failures=config.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                callbacks=[_metrics_callback(out / METRICS_FILE, {t.lmbda: t.total_steps for t in todo})],
                verbose=0,
            ),
            tune_config=tune.TuneConfig(max_concurrent_trials=len(todo), trial_dirname_creator=_trial_dirname),
        )
    tuner.fit()
