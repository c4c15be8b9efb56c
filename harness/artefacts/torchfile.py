"""Reading torch files that nobody vouches for (checkpoints, published state dicts).

``torch.load(weights_only=True)`` runs no pickled code, but its errors pass on advice that
must not reach a user (that ``weights_only=False`` "will likely succeed": it would run the
file's code), span many lines, and do not say what the file is. :func:`load` says it in our
words. A torch file also declares each tensor's shape apart from the bytes it holds: a
tensor of stride 0 claims any shape on one element, and copying it into a model built to its
shape allocates what the file never held. :func:`check_storage` refuses such tensors, so the
sizes a small file declares are never materialised.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import Tensor

from harness.errors import HarnessError

_ZIP = b"PK\x03\x04"  # torch.save's format since torch 1.6
_PICKLE = b"\x80"  # a pickle's PROTO opcode: torch's legacy format, or a bare pickle


def load(path: Path, what: str, remedy: str = "", mapped: bool = True) -> object:
    """``torch.load(path, weights_only=True)`` on the CPU, memory-mapped where the format allows and
    ``mapped``; a file it cannot read is a one-line HarnessError "PATH is not WHAT (what it is
    instead)", then ``: remedy`` when given. The one reader of torch files in the harness:
    checkpoints, published weights, training states. (A mapping is released only with its last
    tensor; read, not mapped, each tensor is its own allocation, freed on its own.)"""
    try:
        with path.open("rb") as file:
            head = file.read(4)
    except OSError as error:
        raise HarnessError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols on stderr
            # A zip file's tensors are read in place, memory-mapped (pages shared with the page
            # cache, read when touched) instead of copied; torch's legacy format cannot be mapped.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mapped and head.startswith(_ZIP))
    except Exception as error:  # torch.load fails on foreign files in many ways (KeyError, EOFError, ...)
        raise HarnessError(f"{path} is not {what} ({_what_it_is(head, error)})" + (f": {remedy}" if remedy else "")) from None


def _what_it_is(head: bytes, error: Exception) -> str:
    if not head:
        return "an empty file"
    if isinstance(error, pickle.UnpicklingError) and head.startswith((_ZIP, _PICKLE)):
        return "a pickle of other types than tensors and plain values"
    if head.startswith(_ZIP):
        return "a truncated or damaged torch file"
    return "not a torch file"


def check_storage(state: dict[str, Tensor], name: str) -> None:
    """Refuse a tensor whose shape spans more elements than the file stored for it."""
    for key, tensor in state.items():
        if not isinstance(tensor, Tensor):
            continue
        stored = tensor.untyped_storage().nbytes() - tensor.storage_offset() * tensor.element_size()
        if stored < tensor.numel() * tensor.element_size():  # stride 0 or overlapping: values repeat
            raise HarnessError(f"{name}: tensor {key} declares shape {tuple(tensor.shape)} but the file stores "
                               f"{max(stored, 0) // tensor.element_size()} of its {tensor.numel()} values")


# Entropy tables: sized by the weights' training, not by the model's widths.
TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def check_shapes(expected: dict[str, torch.Size], state: dict[str, Tensor], name: str, variant: str) -> None:
    """Refuse ``state`` unless its tensors are ``expected``'s, key for key and shape for shape
    (the entropy tables, sized by the weights' training, excepted); one line naming what differs."""
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(TABLE_BUFFERS))
    unexpected = sorted(set(state) - set(expected))
    resized = sorted(k for k in set(expected) & set(state)
                     if not k.endswith(TABLE_BUFFERS) and expected[k] != state[k].shape)
    if missing or unexpected or resized:
        parts = [f"{len(keys)} tensor(s) {what} (e.g. {keys[0]})" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("of another shape", resized)) if keys]
        raise HarnessError(f"{name} does not hold {variant} weights: {', '.join(parts)}")
