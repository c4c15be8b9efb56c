"""File-name-safe names made from user text (dataset specs, run names)."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slug(text: str, empty: str = "run") -> str:
    """``text`` with every run of characters other than ASCII letters, digits, ``.``, ``_`` and
    ``-`` replaced by one ``_`` (leading and trailing ``_`` dropped); ``empty`` if nothing is left.

    Used for run folders and report file names alike, so a dataset called ``folder:~/my photos``
    gives the same ``folder_my_photos`` in both."""
    return _UNSAFE.sub("_", text).strip("_") or empty
