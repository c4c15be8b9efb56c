"""What ``harness train-sweep`` is asked to do: the sweep's config, each default and check that
needs no file in one place, and the folder its models go to; importable without torch (the
command's help and argument errors, and a rerun plan's checks, stay fast).
:mod:`harness.train.sweep` runs it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.configs import build
from harness.errors import HarnessError
from harness.lock import check_wait
from harness.paper import PAPER_LAMBDAS
from harness.pixels.msssim import MS_SSIM_MIN_SIDE
from harness.train.recipe import TrainingRecipe, split
from harness.zoo.registry import model_config
from harness.zoo.variants import DEFAULT_VARIANT


@dataclass(frozen=True)
class SweepConfig:
    data: Path
    metric: str = "mse"
    lambdas: tuple[float, ...] = ()
    variant: str = DEFAULT_VARIANT
    recipe: TrainingRecipe = field(default_factory=TrainingRecipe)  # every trial's, precision resolved
    out: Path = Path("runs/sweep")
    address: str | None = None
    resume: str = "no"  # "yes": continue the interrupted sweep; "auto": continue it if there is one
    gpus_per_trial: float = 0.0
    cpus_per_trial: int = 1  # per worker when a trial has several
    workers_per_trial: int = 0  # DDP workers per trial; 0: one per GPU when --gpus-per-trial > 1, else 1
    max_failures: int = 3
    # Steps of one shared model at the largest λ (stage-1 loss, constant lr) that every λ's trial
    # starts from; 0: each trial from scratch, as the paper trains.
    warmup_steps: int = 0
    wait_s: float = 0.0  # wait this long for another command's lock on ``out``

    def __post_init__(self) -> None:
        """Every check that needs no file: a bad sweep fails before Ray starts (the recipe
        checked itself when it was made)."""
        check_wait(self.wait_s)
        recipe = self.recipe
        if self.resume not in ("no", "yes", "auto"):
            raise HarnessError(f"resume must be no, yes or auto, got {self.resume!r}")
        if self.metric not in PAPER_LAMBDAS:
            raise HarnessError(f"unknown metric {self.metric!r}: choose {' or '.join(PAPER_LAMBDAS)}")
        bad = [lmbda for lmbda in self.chosen_lambdas if not (math.isfinite(lmbda) and lmbda > 0)]
        if bad:
            raise HarnessError(f"every lambda must be a positive number, got {', '.join(f'{b:g}' for b in bad)}")
        if len(set(self.chosen_lambdas)) != len(self.chosen_lambdas):
            raise HarnessError("the lambda list has duplicates")
        if self.warmup_steps < 0:
            raise HarnessError(f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        if self.workers_per_trial < 0 or self.gpus_per_trial < 0 or self.cpus_per_trial < 1:
            raise HarnessError("--workers-per-trial and --gpus-per-trial must be >= 0, --cpus-per-trial >= 1")
        if self.max_failures < 0:
            raise HarnessError(f"--max-failures must be >= 0, got {self.max_failures}")
        workers = self.workers
        if workers > 1 and not float(self.gpus_per_trial / workers).is_integer():
            raise HarnessError(f"--gpus-per-trial {self.gpus_per_trial:g} does not split into whole GPUs over "
                               f"{workers} workers: give one GPU (or a whole number) per worker")
        if workers == 1 and self.gpus_per_trial > 1:
            raise HarnessError(f"--gpus-per-trial {self.gpus_per_trial:g} with one worker: a worker drives one device")
        if recipe.batch_size % workers:
            raise HarnessError(f"--batch-size {recipe.batch_size} does not split evenly over {workers} workers")
        stride = model_config(self.variant).stride
        if recipe.patch % stride:
            raise HarnessError(f"--patch {recipe.patch} must be a multiple of the model stride {stride}")
        if self.metric == "ms-ssim" and recipe.patch < MS_SSIM_MIN_SIDE:
            raise HarnessError(f"MS-SSIM training needs --patch >= {MS_SSIM_MIN_SIDE}, got {recipe.patch}")

    @property
    def chosen_lambdas(self) -> tuple[float, ...]:
        return self.lambdas or PAPER_LAMBDAS.get(self.metric, ())

    @property
    def workers(self) -> int:
        if self.workers_per_trial:
            return self.workers_per_trial
        return int(self.gpus_per_trial) if self.gpus_per_trial > 1 else 1


def sweep_config(values: Mapping[str, Any], where: str = "") -> SweepConfig:
    """A :class:`SweepConfig` from flat keys, the recipe's fields beside the rest, as the CLI
    and a rerun plan give them; ``where`` names the plan section in its errors."""
    return build(SweepConfig, split(values, where), where)


def models_dir(out: str | Path) -> Path:
    """Where a sweep exports its models and cards: the folder ``leaderboard --models`` takes."""
    return Path(out) / "models"
