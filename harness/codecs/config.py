"""Codec configurations: ``codecs/<id>.toml`` files, one per codec.

Each file has an optional ``[defaults]`` table and one ``[configs.<name>]``
table per configuration (``quick`` and ``paper`` are the two profiles every
codec provides; more may be added and selected as ``--codecs id:name``). A
configuration is the defaults overlaid with its table; its ``ladder`` lists the
quality points (QP, quality, crf or target bpp, as the codec defines) and
everything else is handed to the codec class.

The config hash covers every setting that can change a bitstream (all but the
ladder itself, ``timeout_s`` and ``threads``), so results stay reusable when a
point is added to a ladder and are recomputed when a preset changes. A learned
curve's config carries its :class:`~harness.codecs.curve.CurveSettings` (the
checkpoints per λ and the model's facts) as a typed record to the cells; its hash
covers the facts, the checkpoints being versioned per point (``Codec.version_at``).
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.codecs import CODECS, codec_class
from harness.codecs.base import Codec
from harness.codecs.curve import CurveSettings
from harness.errors import HarnessError
from harness.hashing import sha256_bytes

_UNHASHED = frozenset({"ladder", "timeout_s", "threads"})
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "codecs"


@dataclass(frozen=True)
class CodecConfig:
    codec: str
    config: str
    ladder: tuple[float, ...]
    settings_json: str  # canonical JSON of the settings (hashable, picklable)
    curve: CurveSettings | None = None  # a learned curve's checkpoints and facts; None for a classical codec

    @property
    def settings(self) -> dict[str, Any]:
        return json.loads(self.settings_json)

    @property
    def config_hash(self) -> str:
        hashed = {k: v for k, v in self.settings.items() if k not in _UNHASHED}
        if self.curve is not None:
            hashed.update(self.curve.hashed())
        return sha256_bytes(json.dumps({"codec": self.codec, **hashed}, sort_keys=True).encode())[:16]

    def instance(self) -> Codec:
        """The classical codec this config sets up (a learned curve's: :func:`harness.codecs.learned.instance`)."""
        if self.curve is not None:
            raise HarnessError(f"{self.label} is a learned curve: its cells run on the leaderboard's learned workers")
        return codec_class(self.codec)(self.settings)

    @property
    def label(self) -> str:
        return f"{self.codec}:{self.config}"


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise HarnessError(f"cannot parse codec configuration {path}: {error}") from None


def load_config(codec: str, config: str, directory: Path = DEFAULT_DIR, timeout_s: float | None = None) -> CodecConfig:
    """The ``config`` table of ``<directory>/<codec>.toml`` merged over its defaults."""
    codec_class(codec)
    path = directory / f"{codec}.toml"
    if not path.is_file():
        raise HarnessError(f"no configuration file {path} for codec {codec!r}")
    data = _read(path)
    configs = data.get("configs", {})
    if config not in configs:
        raise HarnessError(f"{path} has no [configs.{config}]; available: {', '.join(sorted(configs)) or 'none'}")
    settings = {**data.get("defaults", {}), **configs[config]}
    if timeout_s is not None:
        settings["timeout_s"] = timeout_s
    ladder = settings.get("ladder")
    if not isinstance(ladder, list) or not ladder or not all(isinstance(q, (int, float)) for q in ladder):
        raise HarnessError(f"{path} [configs.{config}] needs a non-empty numeric ladder = [...]")
    return CodecConfig(codec, config, tuple(float(q) for q in ladder), json.dumps(settings, sort_keys=True))


def resolve_codecs(specs: tuple[str, ...], profile: str, directory: Path = DEFAULT_DIR,
                   timeout_s: float | None = None) -> list[CodecConfig]:
    """``id`` or ``id:config`` specs (empty: every codec with a ``profile`` config) → configs."""
    if not specs:
        specs = tuple(c for c in CODECS if (directory / f"{c}.toml").is_file())
        if not specs:
            raise HarnessError(f"no codec configuration files in {directory}")
    resolved = []
    for spec in specs:
        codec, _, config = spec.partition(":")
        resolved.append(load_config(codec.strip(), (config or profile).strip(), directory, timeout_s))
    return resolved
