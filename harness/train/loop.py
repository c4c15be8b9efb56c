"""One training trial: a model for one λ, two stages, checkpointed through Ray.

The recipe is the paper's (§III-C): Adam at 1e-4, batch 8; stage 1 optimises
eq. (1) with the learning rate divided by 10 at the paper's milestones — 750 k
of 1.5 M iterations, then every 100 k — scaled to ``stage1_steps``; stage 2
fine-tunes eq. (2) (rate reweighting, w1 > w2) at a fixed 1e-4 — for a model without
subbands (a CompressAI baseline) a plain fine-tune of eq. (1), as its card states. The entropy
bottleneck's quantiles get their own Adam on the auxiliary loss (CompressAI's
convention, lr 1e-3); gradients are clipped at 1.0.

:func:`train_trial` runs inside a Ray Tune trial. Every ``checkpoint_every``
steps it hands Ray a checkpoint (weights, both optimisers, scheduler, step,
stage, RNG states), so a trial whose worker dies restarts from there rather
than from step 0. When both stages are done it exports the model
(``models/<metric>-<λ>.pt``, entropy tables updated) and a JSON card.

A trial with several workers (e.g. one per GPU) runs the same loop on each of
them as a Ray Train ``TorchTrainer`` inside the Tune trial: PyTorch DDP over
the global batch split evenly between the workers, rank 0 validating,
checkpointing and exporting; Ray Train keeps the checkpoints under
``OUT/train-runs`` and resumes from them when the trial restarts.
"""

from __future__ import annotations

import json
import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from harness.artefacts import torchfile
from harness.artefacts.card import WARMUP, ModelCard, TrainingStage, card_path, read_card, write_card
from harness.artefacts.checkpoint import entropy_path, load_checkpoint, save_checkpoint
from harness.configs import build
from harness.data.manifest import MANIFEST
from harness.data.stream import train_loader, val_loader
from harness.errors import HarnessError
from harness.hashing import sha256_file
from harness.model.loss import LossConfig, RateDistortionLoss
from harness.model.network import WeConvene
from harness.model.precision import set_precision
from harness.paper import PAPER_MILESTONES
from harness.provenance import cpu_name
from harness.train.config import models_dir
from harness.train.recipe import TrainingRecipe
from harness.zoo.factory import build_model

AUX_LR = 1e-3
CLIP_NORM = 1.0
STATE_FILE = "state.pt"
TRAIN_RUNS = "train-runs"  # under OUT: Ray Train's storage of the multi-worker trials


@dataclass(frozen=True)
class TrialConfig:
    """One λ of a sweep: everything that determines its model (its card records all of it).
    Built by ``sweep.trial_configs`` from a :class:`~harness.train.config.SweepConfig`."""

    data: str
    data_sha256: str  # identity of the shards (see sweep.data_identity)
    out: str
    variant: str
    metric: str
    lmbda: float
    recipe: TrainingRecipe  # the sweep's, its precision resolved (never "auto")
    threads: int  # torch intra-op threads (the CPUs of the trial, or of each of its workers)
    workers: int = 1  # DDP workers of the trial (Ray Train); 1: the Tune trial trains by itself
    gpus_per_worker: float = 0.0
    init: str = ""  # exported model the trial starts from (the sweep's shared warm-up); "": from scratch
    init_sha256: str = ""  # of that file: part of the inputs, so a new warm-up retrains the trial

    @property
    def name(self) -> str:
        return model_name(self.metric, self.lmbda)

    def inputs_hash(self) -> str:
        """Hash of what determines the model: reused models must match it exactly."""
        import hashlib

        placement = ("out", "data", "checkpoint_every", "log_every", "threads", "workers", "gpus_per_worker", "init")
        flat = asdict(self)
        flat.update(flat.pop("recipe"))  # the recipe's fields beside the rest, as the hash always had them
        keep = {k: v for k, v in flat.items() if k not in placement}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()

    @classmethod
    def from_dict(cls, data: dict) -> "TrialConfig":
        """The trial from ``asdict``'s plain dict, as Tune hands it to the trainable (lists for tuples)."""
        return build(cls, {**data, "recipe": build(TrainingRecipe, data["recipe"])})


def model_name(metric: str, lmbda: float) -> str:
    return f"{metric}-{lmbda:g}"


def stage1_milestones(steps: int, fractions: tuple[float, ...] = PAPER_MILESTONES) -> list[int]:
    """Milestones (fractions of the run; default the paper's) as distinct steps of a ``steps``-long stage 1."""
    return sorted({max(1, round(f * steps)) for f in fractions if round(f * steps) < steps})


def _numpy_rng_state() -> dict:
    """numpy's global generator state as tensors and plain types (``weights_only`` loads those)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_numpy_rng_state(state: dict) -> None:
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["cached_gaussian"]))


def read_state(path: Path) -> dict:
    """A training state file as :meth:`_State.save` wrote it: tensors and plain types only.

    It sits in the trial's checkpoint folder, shared storage on a cluster, so it is read
    with ``weights_only=True``: a file holding any other pickled object is refused rather
    than executed."""
    state = torchfile.load(path, "a training state of this harness", "delete the trial's checkpoints to restart it")
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "rng"} <= set(state):
        raise HarnessError(f"{path} is not a training state of this harness (keys missing)")
    return state


def _initial_model(config: TrialConfig) -> torch.nn.Module:
    """A fresh model, or the weights of ``config.init`` (checked against the hash it was planned with)."""
    if not config.init:
        return build_model(config.variant)
    if sha256_file(Path(config.init)) != config.init_sha256:
        raise HarnessError(f"{config.init} changed since the sweep was planned: run the sweep again")
    return load_checkpoint(config.init, config.variant).train()


class _State:
    """Model, optimisers and scheduler of a trial, and their (de)serialisation."""

    def __init__(self, config: TrialConfig) -> None:
        self.model = _initial_model(config)
        recipe = config.recipe
        main = [p for n, p in self.model.named_parameters() if not n.endswith(".quantiles")]
        aux = [p for n, p in self.model.named_parameters() if n.endswith(".quantiles")]
        self.optimizer = torch.optim.Adam(main, lr=recipe.lr)
        self.aux_optimizer = torch.optim.Adam(aux, lr=AUX_LR)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=stage1_milestones(recipe.stage1_steps, recipe.milestones), gamma=0.1
        )
        self.step = 0
        self.restored_from: list[int] = []
        self._earlier_s = 0.0  # training seconds of the trial's earlier runs (before a restore)
        self._since = time.perf_counter()

    @property
    def train_s(self) -> float:
        """Wall seconds this trial has trained, over every restart."""
        return self._earlier_s + time.perf_counter() - self._since

    def save(self, directory: Path) -> None:
        torch.save({
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "aux_optimizer": self.aux_optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "restored_from": self.restored_from,
            "train_s": self.train_s,
            "rng": {
                "torch": torch.get_rng_state(),
                "python": random.getstate(),
                "numpy": _numpy_rng_state(),
            },
        }, directory / STATE_FILE)

    def load(self, directory: Path) -> None:
        state = read_state(directory / STATE_FILE)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.aux_optimizer.load_state_dict(state["aux_optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.restored_from = [*state["restored_from"], self.step]
        self._earlier_s, self._since = float(state.get("train_s", 0.0)), time.perf_counter()
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        _set_numpy_rng_state(state["rng"]["numpy"])


def _evaluate(model: WeConvene, loss: RateDistortionLoss, config: TrialConfig, device: torch.device) -> dict[str, float]:
    """Validation in eval mode (rounding, not noise): mean bpp, PSNR (and MS-SSIM) over val patches."""
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    recipe = config.recipe
    with torch.no_grad():
        for index, batch in enumerate(val_loader(config.data, recipe.patch, recipe.batch_size)):
            if index >= recipe.val_batches:
                break
            batch = batch.to(device)
            out = loss(model(batch), batch)
            for key in ("bpp", "psnr", "ms_ssim"):
                if key in out:
                    totals[key] = totals.get(key, 0.0) + float(out[key]) * len(batch)
            count += len(batch)
    model.train()
    return {f"val_{k}": v / max(count, 1) for k, v in totals.items()}


def _train_batches(config: TrialConfig, start_step: int, rank: int, world: int):
    """This worker's share of each batch; a restarted trial reseeds the stream by its step so
    it sees new patches, and every worker draws its own stream."""
    seed = config.recipe.seed * 1_000_003 + start_step + rank * 1_000_000_007
    return iter(train_loader(config.data, config.recipe.patch, config.recipe.batch_size // world, seed=seed))


class _Session:
    """Where a trial's checkpoint comes from and its reports go: Tune itself, or Ray Train."""

    def __init__(self, distributed: bool) -> None:
        if distributed:
            import ray.train

            context = ray.train.get_context()
            self.rank, self.world = context.get_world_rank(), context.get_world_size()
            self._api = ray.train
        else:
            from ray import tune

            self.rank, self.world = 0, 1
            self._api = tune

    def get_checkpoint(self):
        return self._api.get_checkpoint()

    def report(self, metrics: dict, state: "_State | None") -> None:
        """Report ``metrics``; with ``state``, rank 0 attaches a checkpoint of it (every rank
        reports: Ray Train synchronises its workers on each report)."""
        if state is None or self.rank:
            self._api.report(metrics)
            return
        with tempfile.TemporaryDirectory() as directory:
            state.save(Path(directory))
            self._api.report(metrics, checkpoint=self._api.Checkpoint.from_directory(directory))


def _prepare(model: WeConvene, session: _Session, precision: str) -> tuple[torch.nn.Module, torch.device]:
    """The module to train with and its device: DDP on each worker of a multi-worker trial. The
    transforms' ``precision`` is applied once the model is on that device, whose layout it picks
    (fp32 runs channels-last on the CPU only: :mod:`harness.model.precision`), and before DDP
    takes the weights."""
    device = _device(session)
    set_precision(model.to(device), precision)
    if session.world == 1:
        return model.train(), device
    import ray.train.torch

    # Each worker fits the entropy bottleneck's quantiles on its own (their auxiliary loss is
    # separate from the main one): DDP leaves them alone and rank 0 exports its own.
    model._ddp_params_and_buffers_to_ignore = [n for n, _ in model.named_parameters() if n.endswith(".quantiles")]
    return ray.train.torch.prepare_model(model.train()), device


def _device(session: _Session) -> torch.device:
    """A trial's device: Ray exposes only the trial's GPUs (none for a CPU trial) through
    CUDA_VISIBLE_DEVICES; each worker of a multi-worker trial has Ray Train's."""
    if session.world == 1:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def train_trial(params: dict) -> None:
    """Ray Tune function trainable: ``params["trial"]`` is a :class:`TrialConfig` as a dict."""
    config = TrialConfig.from_dict(params["trial"])
    if config.workers > 1:
        _fit_workers(config)
    else:
        _train(config, _Session(distributed=False))


def _train_worker(params: dict) -> None:
    """Ray Train's loop on each worker of a multi-worker trial."""
    _train(TrialConfig.from_dict(params["trial"]), _Session(distributed=True))


def _fit_workers(config: TrialConfig) -> None:
    """Run the trial on ``config.workers`` DDP workers; their rank-0 reports reach Tune."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = {"CPU": config.threads, **({"GPU": config.gpus_per_worker} if config.gpus_per_worker else {})}
    TorchTrainer(
        _train_worker,
        train_loop_config={"trial": asdict(config)},
        scaling_config=ScalingConfig(
            num_workers=config.workers, use_gpu=config.gpus_per_worker > 0, resources_per_worker=resources
        ),
        # Named by the trial's inputs: a restarted trial (or --resume) finds its checkpoints here.
        run_config=RunConfig(
            name=f"{config.name}-{config.inputs_hash()[:12]}",
            storage_path=str(Path(config.out) / TRAIN_RUNS),
            callbacks=[TuneReportCallback()],
        ),
    ).fit()


def _train(config: TrialConfig, session: _Session) -> None:
    torch.set_num_threads(max(1, config.threads))
    recipe = config.recipe
    torch.manual_seed(recipe.seed)
    random.seed(recipe.seed)
    np.random.seed(recipe.seed)
    state = _State(config)
    checkpoint = session.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.load(Path(directory))
    losses = {stage: RateDistortionLoss(LossConfig(config.lmbda, config.metric, stage, recipe.w1, recipe.w2))
              for stage in (1, 2)}
    model = state.model
    net, device = _prepare(model, session, recipe.precision)
    _optimizer_to(state, device)
    batches = _train_batches(config, state.step, session.rank, session.world)
    window_start, window_images = time.perf_counter(), 0
    while state.step < recipe.total_steps:
        stage = 1 if state.step < recipe.stage1_steps else 2
        if state.step == recipe.stage1_steps:
            for group in state.optimizer.param_groups:  # stage 2 runs at a fixed lr
                group["lr"] = recipe.lr
        batch = next(batches).to(device, non_blocking=True)
        out = losses[stage](net(batch), batch)
        state.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        state.optimizer.step()
        aux_loss = model.aux_loss()
        state.aux_optimizer.zero_grad(set_to_none=True)
        aux_loss.backward()
        state.aux_optimizer.step()
        if stage == 1:
            state.scheduler.step()
        state.step += 1
        window_images += len(batch) * session.world
        last = state.step == recipe.total_steps
        if state.step % recipe.log_every and state.step % recipe.checkpoint_every and not last:
            continue
        metrics = {
            "metric": config.metric,
            "step": state.step,
            "stage": stage,
            "lmbda": config.lmbda,
            "loss": out["loss"].item(),
            "distortion": out["distortion"].item(),
            "aux_loss": aux_loss.item(),
            "lr": state.optimizer.param_groups[0]["lr"],
            "images_per_s": window_images / max(time.perf_counter() - window_start, 1e-9),
            "restarts": len(state.restored_from),
            "workers": session.world,
            **{key: value.item() for key, value in out.items() if key.startswith("bpp") or key in ("psnr", "mse")},
            **(_evaluate(model, losses[stage], config, device) if session.rank == 0 else {}),
        }
        window_start, window_images = time.perf_counter(), 0
        if last and session.rank == 0:
            metrics.update(_export(state, config, metrics))
        checkpoint_due = state.step % recipe.checkpoint_every == 0 or last
        session.report(metrics, state if checkpoint_due else None)


def _optimizer_to(state: _State, device: torch.device) -> None:
    """Move restored optimiser moments next to the parameters they belong to."""
    for optimizer in (state.optimizer, state.aux_optimizer):
        for moments in optimizer.state.values():
            for key, value in moments.items():
                if torch.is_tensor(value) and key != "step":
                    moments[key] = value.to(device)


def export_model(model: WeConvene, config: TrialConfig, final: dict,
                 restored_from: list[int] = (), train_s: float = 0.0, device: str = "") -> ModelCard:
    """Write ``models/<name>.pt`` and its card (the model on the CPU, entropy tables updated);
    ``final`` holds the last validation metrics, ``train_s`` and ``device`` how long and on
    what it trained. Returns the card."""
    models = models_dir(config.out)
    recipe = config.recipe
    path = models / f"{config.name}.pt"
    digest = save_checkpoint(model, path)
    card = ModelCard(
        name=config.name,
        variant=config.variant,
        metric=config.metric,
        lmbda=config.lmbda,
        stages={
            **_warmup_card(config),
            "1": TrainingStage(recipe.stage1_steps, "eq. 1", recipe.lr,
                               milestones=tuple(stage1_milestones(recipe.stage1_steps, recipe.milestones))),
            "2": _stage2_card(model, config),
        },
        batch_size=recipe.batch_size,
        patch=recipe.patch,
        seed=recipe.seed,
        data=config.data,
        data_sha256=config.data_sha256,
        data_manifest_sha256=sha256_file(Path(config.data) / MANIFEST),
        params=sum(p.numel() for p in model.parameters()),
        fingerprint=digest,
        inputs_hash=config.inputs_hash(),
        restored_from_steps=tuple(restored_from),
        final={k: final[k] for k in ("val_bpp", "val_psnr", "val_ms_ssim") if k in final and math.isfinite(final[k])},
        checkpoint=path.name,
        entropy_path=entropy_path(model),
        train_s=round(train_s, 1),
        device=device,
        precision=recipe.precision,
    )
    write_card(card, card_path(models, config.name))
    return card


def _warmup_card(config: TrialConfig) -> dict[str, TrainingStage]:
    """Stage "0" of a model that started from the sweep's shared warm-up, as the warm-up's card has it."""
    if not config.init:
        return {}
    warmup = read_card(card_path(Path(config.init).parent, Path(config.init).stem))
    trained = warmup.training.get("1")
    if trained is None:
        raise HarnessError(f"{config.init}: its card has no training stage 1, so it is no warm-up of a sweep")
    return {WARMUP: TrainingStage(trained.steps, "eq. 1", trained.lr, lmbda=warmup.lmbda, train_s=warmup.train_s,
                                  checkpoint_sha256=config.init_sha256,
                                  note="shared warm-up: every lambda of the sweep starts from this model")}


def _stage2_card(model: WeConvene, config: TrialConfig) -> TrainingStage:
    """Stage 2 as the card states it: eq. 2's subband reweighting, or (a model without
    subbands, e.g. a CompressAI baseline) a plain fine-tune on eq. 1 at the fixed lr."""
    recipe = config.recipe
    if model.config.subbands:
        return TrainingStage(recipe.stage2_steps, "eq. 2", recipe.lr, w1=recipe.w1, w2=recipe.w2)
    return TrainingStage(recipe.stage2_steps, "eq. 1", recipe.lr,
                         note="plain fine-tune: the model has no subbands to reweight (w1, w2 unused)")


def _export(state: _State, config: TrialConfig, final: dict) -> dict:
    """Export the trained model from the trial's device; returns where it went (for the report)."""
    device = next(state.model.parameters()).device
    where = f"cuda: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else cpu_name()
    workers = f"{config.workers} x " if config.workers > 1 else ""
    card = export_model(state.model.cpu().eval(), config, final, state.restored_from, state.train_s,
                        f"{workers}{where}, {config.threads} thread(s)")
    state.model.to(device).train()
    return {"exported": str(models_dir(config.out) / card.checkpoint)}
