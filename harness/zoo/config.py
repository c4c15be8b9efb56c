"""What ``harness model-info`` is asked to do: its config, importable without torch (the command's
help and argument errors stay fast); :mod:`harness.zoo.info` answers it."""

from __future__ import annotations

from dataclasses import dataclass

from harness.zoo.registry import model_config
from harness.zoo.variants import DEFAULT_VARIANT


@dataclass(frozen=True)
class ModelInfoConfig:
    variant: str = DEFAULT_VARIANT
    as_json: bool = False

    def __post_init__(self) -> None:
        model_config(self.variant)  # an unknown variant or bad width option fails here, in one line
