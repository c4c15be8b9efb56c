"""The precisions a model's transforms run in, by name: what ``--precision`` accepts and how a name
is checked, without torch, so that the commands' help and argument errors stay fast. Applying a
precision to a model is :mod:`harness.model.precision`'s."""

from __future__ import annotations

from harness.errors import HarnessError

PRECISIONS = ("fp32", "bf16")
AUTO = "auto"  # bf16 where the device runs it fast, else fp32: resolved on the model's device
CHOICES = (*PRECISIONS, AUTO)  # what --precision accepts


def check_precision(precision: str) -> None:
    """One line for a name that is not a precision (before any model loads)."""
    if precision not in CHOICES:
        raise HarnessError(f"unknown precision {precision!r}: choose one of {', '.join(CHOICES)}")
