"""``harness train-sweep``: one Ray Tune trial per λ, two-stage training, exported models.

The driver only plans: it validates the inputs (shards, λ, metric) before any
trial starts, skips λ whose exported model already matches the same inputs,
and hands the rest to a Tune grid search with per-trial resources and
``FailureConfig(max_failures)``, so a trial whose worker dies restarts from its
last checkpoint. A trial with several workers (``--gpus-per-trial N`` or
``--workers-per-trial N``) trains with DDP under Ray Train inside its Tune trial
(see :mod:`harness.train.loop`). Per-trial metrics stream into
``OUT/metrics.parquet`` (one row per report) and a progress line per report.
The sweep holds ``OUT``'s lock (:mod:`harness.lock`) from its first check to its last model.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

from harness.artefacts.card import ModelCard, card_path, read_card
from harness.atomic import check_folder, write_parquet_atomic
from harness.data.manifest import ShardManifest, require_manifest
from harness.data.stream import shard_paths
from harness.errors import HarnessError
from harness.hashing import sha256_bytes, sha256_file
from harness.lock import folder_lock
from harness.model.precision import resolve as resolve_precision
from harness.raycluster import connect
from harness.train.config import SweepConfig, models_dir
from harness.train.loop import TrialConfig, model_name, train_trial

EXPERIMENT = "sweep"
DRIVER_CPU = 0.01  # what a multi-worker trial itself reserves (Ray wants a non-empty request)
METRICS_FILE = "metrics.parquet"


def check_data(config: SweepConfig) -> ShardManifest:
    """The shard folder's checks (complete, both splits present, patches large enough for the
    crop); returns its manifest. The config checked itself when it was made."""
    manifest = require_manifest(Path(config.data))
    for part in ("train", "val"):
        shard_paths(config.data, part, config.recipe.patch, manifest)
    return manifest


def trial_configs(config: SweepConfig, data: ShardManifest, init: Path | None = None) -> list[TrialConfig]:
    """One trial per λ: the sweep's recipe (its precision resolved on the trial's device) plus
    λ and paths; ``init``: the warm-up model every trial starts from."""
    precision = resolve_precision(config.recipe.precision, "cuda" if config.gpus_per_trial else "cpu")
    recipe = config.recipe if precision == config.recipe.precision else replace(config.recipe, precision=precision)
    start = {} if init is None else {"init": str(init.resolve()), "init_sha256": sha256_file(init)}
    return [TrialConfig(data=str(Path(config.data).resolve()), data_sha256=data.identity(),
                        out=str(Path(config.out).resolve()), variant=config.variant, metric=config.metric,
                        lmbda=float(lmbda), recipe=recipe, threads=max(1, config.cpus_per_trial),
                        workers=config.workers, gpus_per_worker=config.gpus_per_trial / config.workers, **start)
            for lmbda in config.chosen_lambdas]


def warmup_trial(config: SweepConfig, data: ShardManifest) -> TrialConfig:
    """The shared warm-up: one model at the largest λ, stage 1 only at a constant lr, in
    ``OUT/warmup``. From there each trial only has to give rate up, dropping detail it has
    learnt, which a few steps do; a trial above the warm-up's λ would have to learn detail
    the warm-up never reconstructed, which a short run cannot (its PSNR then lags, out of order)."""
    recipe = replace(config.recipe, stage1_steps=config.warmup_steps, stage2_steps=0, milestones=())
    warmup = replace(config, out=Path(config.out) / "warmup", lambdas=(max(config.chosen_lambdas),), recipe=recipe,
                     warmup_steps=0)
    return trial_configs(warmup, data)[0]


def trained_card(trial: TrialConfig) -> ModelCard | None:
    """The card of ``models/<name>`` when it and its checkpoint exist and it was made from the
    same inputs; None when the trial has to run (a damaged card means: train again)."""
    path = card_path(models_dir(trial.out), trial.name)
    if not path.is_file():
        return None
    try:
        card = read_card(path)
    except HarnessError:
        return None
    if card.inputs_hash != trial.inputs_hash() or not card.checkpoint_path(path).is_file():
        return None
    return card


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


def _exported(trial: TrialConfig) -> Path | None:
    """The checkpoint of a trained trial (None when it has to run)."""
    card = trained_card(trial)
    return None if card is None else card.checkpoint_path(card_path(models_dir(trial.out), trial.name))


def _untrained(trials: list[TrialConfig]) -> list[TrialConfig]:
    return [t for t in trials if trained_card(t) is None]


def pending(config: SweepConfig) -> list[TrialConfig]:
    """The trials :func:`run` would train (the warm-up among them): those with no model made
    from the same inputs. Without a trained warm-up, every λ's trial is pending."""
    data = check_data(config)
    if not config.warmup_steps:
        return _untrained(trial_configs(config, data))
    warmup = warmup_trial(config, data)
    init = _exported(warmup)
    if init is None:
        return [warmup, *trial_configs(config, data)]
    return _untrained(trial_configs(config, data, init))


def _warm_up(config: SweepConfig, data: ShardManifest) -> Path | None:
    """Train (or reuse) the sweep's shared warm-up model; its checkpoint, or None without one."""
    if not config.warmup_steps:
        return None
    warmup = warmup_trial(config, data)
    if _exported(warmup) is None:
        print(f"train-sweep: warm-up, one model at lambda {warmup.lmbda:g} for {warmup.recipe.stage1_steps} steps, "
              "which every lambda then starts from", flush=True)
        out = Path(warmup.out)
        out.mkdir(parents=True, exist_ok=True)
        _tune(config, [warmup], [warmup], out)
    init = _exported(warmup)
    if init is None:
        raise HarnessError(f"the warm-up failed: see {experiment_dir(Path(warmup.out), [warmup])}; rerun with --resume")
    return init


def run(config: SweepConfig) -> list[ModelCard]:
    """Train (or reuse) one model per λ (after the shared warm-up, if any), holding ``config.out``'s
    lock throughout; returns their cards in λ order."""
    with folder_lock(config.out, config.wait_s):
        return _sweep(config)


def _sweep(config: SweepConfig) -> list[ModelCard]:
    data = check_data(config)
    check_folder(config.out)  # before the warm-up trains
    trials = trial_configs(config, data, _warm_up(config, data))
    out = Path(config.out).resolve()  # made by the lock
    todo = _untrained(trials)
    kept = len(trials) - len(todo)
    if kept:
        print(f"train-sweep: {kept} of {len(trials)} models already trained on the same inputs, kept", flush=True)
    if todo:
        _tune(config, trials, todo, out)
    cards = {t.name: trained_card(t) for t in trials}
    missing = [name for name, card in cards.items() if card is None]
    if missing:
        raise HarnessError(f"{len(missing)} trial(s) failed ({', '.join(missing)}): see {experiment_dir(out, trials)}; "
                           f"rerun with --resume")
    print(f"train-sweep: {len(todo)} trained, {kept} kept -> {models_dir(out)}", flush=True)
    return list(cards.values())


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
                callbacks=[_metrics_callback(out / METRICS_FILE, {t.lmbda: t.recipe.total_steps for t in todo})],
                verbose=0,
            ),
            tune_config=tune.TuneConfig(max_concurrent_trials=len(todo), trial_dirname_creator=_trial_dirname),
        )
    tuner.fit()
