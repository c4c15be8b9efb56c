"""Building a stage's frozen config from what a user gave: command-line flags or a plan section.

Every default and every value check of a stage lives in its config dataclass
(``PatchRecipe``, ``PrepareConfig``, ``SweepConfig``, ``LeaderboardConfig``, ...):
``__post_init__`` is the one validation. The CLI and the rerun plan only pass
the values the user set, through :func:`build`, so the same input gives the
same one-line error whichever way it came in.

:func:`build` turns what TOML or JSON can hold into the field's declared type
(a list into a tuple, a string into a ``Path``) and refuses unknown keys and
values of the wrong kind with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

from harness.errors import HarnessError

T = TypeVar("T")

_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path", dict: "a table"}


def field_names(*classes: type) -> set[str]:
    """The constructor keys of one or more config dataclasses."""
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of the config dataclass ``cls`` (for help texts)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _convert(hint: Any, value: Any, key: str) -> Any:
    """``value`` as the type ``hint`` declares, or a :class:`HarnessError` naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except HarnessError as error:
                errors.append(error)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise HarnessError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is typing.Literal:
        if value not in args:
            raise HarnessError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is dict:
        hint = dict
    if hint is Any:
        return value
    if hint is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise HarnessError(f"{key} must be {_KINDS.get(hint, getattr(hint, '__name__', str(hint)))}, got {value!r}")


def build(cls: type[T], values: Mapping[str, Any], where: str = "") -> T:
    """``cls(**values)`` with unknown keys refused and each value converted to its field's type.

    ``where`` (e.g. ``"plan section [leaderboard]"``) prefixes every error, so a
    plan's user learns which section to fix; the config's own checks give the
    same message from the CLI and from a plan.
    """
    prefix = f"{where}: " if where else ""
    allowed = field_names(cls)
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise HarnessError(f"{prefix}unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
    hints = typing.get_type_hints(cls)
    try:
        return cls(**{key: _convert(hints[key], value, key) for key, value in values.items()})
    except HarnessError as error:
        if not prefix:
            raise
        raise HarnessError(f"{prefix}{error}") from None
