"""The training recipe of one trial (paper §III-C): its one home, nested in both the sweep's
config and each trial's.

A sweep hands its :class:`TrainingRecipe` to every λ's trial as it is (the precision
resolved on the trial's device: ``auto`` never reaches a trial), so a recipe field, its
default and its check are declared once. The CLI and a rerun plan keep setting the fields
by their flat names (``--stage1-steps``, ``stage1_steps = ...``): :func:`split` takes them
out of the flat keys, as :func:`harness.data.shards.prepare_config` does for the patch recipe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.configs import build, field_names
from harness.errors import HarnessError
from harness.precisions import PRECISIONS, check_precision
from harness.paper import PAPER_ITERATIONS, PAPER_MILESTONES, PAPER_STAGE2_STEPS

# What a trial runs in unless told otherwise.
FP32 = PRECISIONS[0]


@dataclass(frozen=True)
class TrainingRecipe:
    """How one λ's model is trained (defaults: the paper's, at full length)."""

    stage1_steps: int = PAPER_ITERATIONS
    stage2_steps: int = PAPER_STAGE2_STEPS
    batch_size: int = 8  # the global batch, split evenly over a trial's workers
    patch: int = 256
    lr: float = 1e-4
    milestones: tuple[float, ...] = PAPER_MILESTONES  # stage-1 lr /= 10 at these fractions of stage1_steps
    w1: float = 1.1
    w2: float = 0.9
    checkpoint_every: int = 1000
    log_every: int = 100
    val_batches: int = 4
    seed: int = 0
    # g_a, h_a and g_s under bf16 autocast (harness.model.precision); the entropy models, the
    # likelihoods, the loss and the optimiser stay float32. auto: bf16 where it runs fast
    # (a sweep's recipe only: a trial's is resolved on its device).
    precision: str = FP32

    def __post_init__(self) -> None:
        """Every check of the recipe alone; those that also need the variant, the metric or the
        workers are :class:`~harness.train.config.SweepConfig`'s."""
        check_precision(self.precision)
        if self.stage1_steps < 1 or self.stage2_steps < 0:
            raise HarnessError(f"--stage1-steps must be >= 1 and --stage2-steps >= 0, got {self.stage1_steps}, "
                               f"{self.stage2_steps}")
        if any(not 0 < f < 1 for f in self.milestones):
            raise HarnessError(f"--milestones are fractions of stage 1 in (0, 1), got {list(self.milestones)}")
        if not (self.lr > 0 and self.w1 >= 0 and self.w2 >= 0):
            raise HarnessError(f"--lr must be > 0 and --w1, --w2 >= 0, got {self.lr:g}, {self.w1:g}, {self.w2:g}")
        if self.val_batches < 1:
            raise HarnessError(f"--val-batches must be >= 1, got {self.val_batches}")
        if self.batch_size < 1 or self.checkpoint_every < 1 or self.log_every < 1:
            raise HarnessError("--batch-size, --checkpoint-every and --log-every must be >= 1")

    @property
    def total_steps(self) -> int:
        return self.stage1_steps + self.stage2_steps


def split(values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Flat keys (a recipe's fields beside a config's own) with the recipe's built into one
    ``recipe`` value: what :func:`harness.configs.build` of a config that nests it takes."""
    keys = field_names(TrainingRecipe)
    recipe = build(TrainingRecipe, {k: v for k, v in values.items() if k in keys}, where)
    return {**{k: v for k, v in values.items() if k not in keys}, "recipe": recipe}
