"""How a command-line flag becomes a field of a stage's frozen config: the option builders
that set a field only when the user gives its flag (so the config's default, shown in
``--help``, applies otherwise), the parser whose usage errors are one line, and the parsers of
flag values. :mod:`harness.cli` registers the commands with them.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from harness.configs import default_of, field_names


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors are one line and exit 2."""

    def error(self, message: str) -> None:  # argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def command(sub, name: str, help: str, examples: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help,
        description=help,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(shown(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def option(parser: argparse.ArgumentParser, flag: str, config: type, help: str, *, field: str | None = None,
            default_text: str | None = None, **kwargs) -> None:
    """An option for field ``field`` (default: the flag's name) of the stage's ``config``
    dataclass. It is set only when the user gives it, so the config's default applies
    otherwise, and the help shows that default (or ``default_text``)."""
    name = field or flag.lstrip("-").replace("-", "_")
    text = default_text if default_text is not None else shown(default_of(config, name))
    parser.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=f"{help} (default: {text})", **kwargs)


def switch(parser: argparse.ArgumentParser, flag: str, field: str, help: str, value: Any) -> None:
    """A switch that sets ``field`` to ``value`` when given, and leaves the config's default otherwise."""
    parser.add_argument(flag, dest=field, action="store_const", const=value, default=argparse.SUPPRESS, help=help)


def given(args: argparse.Namespace, *configs: type) -> dict[str, Any]:
    """The fields of ``configs`` that the user set on the command line."""
    return {name: getattr(args, name) for name in field_names(*configs) if hasattr(args, name)}


def resize_arg(value: str) -> int | None:
    if value.lower() == "none":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a side length in pixels or 'none', got {value!r}") from None


def ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def scale_range(value: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX, got {value!r}") from None
    return low, high


def names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())


def floats(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {value!r}") from None


_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)(?:I?B)?", re.IGNORECASE)


def memory_size(value: str) -> int:
    """Bytes of a size like 2G, 512M, 1.5GiB or 4096 (K, M, G, T: powers of 1024, as Docker and Ray read them)."""
    match = _SIZE.fullmatch(value.strip())
    size = float(match.group(1)) * 1024 ** " KMGT".index(match.group(2).upper() or " ") if match else 0
    if size < 1:
        raise argparse.ArgumentTypeError(f"expected a memory size like 2G, 512M or 1.5G, got {value!r}")
    return int(size)
