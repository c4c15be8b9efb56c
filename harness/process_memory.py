"""What a process holds in memory: reading it (RSS, its peak, what the machine has free) and
handing freed heap pages, and read pages of mapped files, back to the system, so that the peak
read is what the process used.

Ground floor, without torch: a classical codec's leaderboard cell measures its peak through it
and would otherwise import torch and compressai (~4 s a Ray worker) for two /proc reads. A CUDA
device's figures come from torch, which whoever holds such a device has imported already.

glibc serves allocations below its mmap threshold (which grows, up to 32 MiB, as large blocks are
freed) from heaps it keeps: a tensor of tens of megabytes freed there stays in the process's RSS,
and the next, slightly larger one is placed beside it. The entropy model allocates and frees such
tensors slice after slice, so coding a 6 MP image held ~0.6 GB more than its live tensors (measured
in benchmarks/memory.py's setting). :func:`trim` (``malloc_trim``) returns the free pages;
elsewhere than glibc it does nothing.

Importing torch and compressai makes ~0.5 M objects that live as long as the process, and almost
no garbage; each full pass of Python's cyclic garbage collector walks them all, and the imports
alone set off about eight (~0.9 s a process). :func:`imports_frozen` imports with the collector
off and freezes what was imported (``gc.freeze``): no later pass walks it again.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import mmap
import os
import sys
from pathlib import Path

from harness.errors import HarnessError

GIB = 2**30
_MEMINFO = Path("/proc/meminfo")
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_CGROUP_LIMITS = (  # (limit, usage) files of cgroup v2 and v1
    (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory.current")),
    (Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"), Path("/sys/fs/cgroup/memory/memory.usage_in_bytes")),
)


def size_text(value: int) -> str:
    """``value`` bytes as GiB or MiB, as users write budgets (2.0G, 512M)."""
    return f"{value / 2**30:.2f}G" if value >= 2**30 else f"{value / 2**20:.0f}M"


def _cuda(device) -> bool:
    return str(device).startswith("cuda")


def _torch_cuda():
    # Only a process that made a CUDA device has one to ask about, and it has imported torch.
    return sys.modules["torch"].cuda


def resident_bytes(device="cpu") -> int:
    """What the process holds now: its RSS on the CPU, the tensors allocated on a GPU (``device``:
    a torch device or its name)."""
    if _cuda(device):
        return int(_torch_cuda().memory_allocated(device))
    return _status("VmRSS")


def reset_peak(device="cpu") -> None:
    """Start a new high-water mark: the peak of what follows, in a process that lives on (a Ray
    worker codes many cells), not of its whole life (which ``ru_maxrss`` would give)."""
    if _cuda(device):
        _torch_cuda().reset_peak_memory_stats(device)
    else:
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass  # not Linux: the peak read is the process's whole life's, an upper bound


def peak_bytes(device="cpu") -> int | None:
    """The high-water mark since :func:`reset_peak`: peak RSS on the CPU (VmHWM), peak allocated
    on a GPU; None where neither can be read."""
    if _cuda(device):
        return int(_torch_cuda().max_memory_allocated(device))
    try:
        return _status("VmHWM")
    except HarnessError:
        return None


def process_peak(pid: int) -> int | None:
    """The peak RSS so far of process ``pid`` (a codec's binary); None once it has exited."""
    try:
        return _status("VmHWM", Path(f"/proc/{pid}/status"))
    except HarnessError:
        return None


def _status(field: str, path: Path = _STATUS) -> int:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise HarnessError(f"cannot read {field} from {path}")


def available_bytes() -> int | None:
    """MemAvailable, or what the process's cgroup has left where that is lower; None where
    neither can be read (not Linux)."""
    values = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                values.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    for limit_file, usage_file in _CGROUP_LIMITS:
        try:
            limit, usage = limit_file.read_text().strip(), int(usage_file.read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit():  # "max" (v2), or v1's huge number, when there is no limit
            values.append(max(int(limit) - usage, 0))
    return min(values) if values else None


def huge_pages_for_torch() -> None:
    """Ask torch, before it is imported, to back each tensor of 2 MiB or more with transparent huge
    pages (``THP_MEM_ALLOC_ENABLE``, torch's own switch: 2 MiB alignment and ``MADV_HUGEPAGE``),
    unless the environment says otherwise; the processes this one starts inherit it.

    glibc maps every block above its mmap threshold (32 MiB at most) anew and the kernel faults
    it in page by page: a transform's image-sized tensors (100 MB of bf16 per 128 channels at
    Kodak's full resolution) cost a fault per 4 KiB each time one is made. With 2 MiB pages, g_a
    of kodim01 took a median 1.12 s against 1.22 s in eight pairs of processes, less in seven
    (benchmarks/RESULTS.md, speed.py), at the same peaks. Where the kernel's THP mode is
    ``never``, or torch is already imported, it changes nothing."""
    if "torch" not in sys.modules:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


@contextlib.contextmanager
def imports_frozen():
    """No cyclic garbage collection within the block (a stage's imports); what is alive at its
    end is frozen, out of every later pass's way, and the collector is back as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


@functools.cache
def _libc(name: str):
    """The C library's function ``name``, or None where it has none (malloc_trim is glibc's:
    not on musl or macOS)."""
    library = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(library), name) if library else None
    except (OSError, AttributeError):
        return None


def trim() -> None:
    """Return the heap's free pages to the system (milliseconds; call between large steps)."""
    function = _libc("malloc_trim")
    if function is not None:
        function(0)


class FilePages:
    """The private writable file mappings of this process when made (``torch.load(mmap=True)``'s
    copy-on-write mappings of checkpoints; a snapshot of ``/proc/self/maps``, none elsewhere than
    Linux): which memory is a file's (:meth:`holds`), and handing back the resident pages of bytes
    that a process has read and will not read again (:meth:`release`): they leave its RSS and
    stay in the page cache, and a later read would fault them in again from the file."""

    def __init__(self) -> None:
        spans = []
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/maps").read_text().splitlines():
                fields = line.split(maxsplit=5)
                if len(fields) == 6 and fields[1] == "rw-p" and fields[4] != "0" and fields[5].startswith("/"):
                    start, end = (int(address, 16) for address in fields[0].split("-"))
                    spans.append((start, end))
        self._spans = spans

    def holds(self, address: int) -> bool:
        """Whether ``address`` lies in one of the mappings."""
        return any(start <= address < end for start, end in self._spans)

    def release(self, address: int, size: int) -> None:
        """Drop the resident pages wholly within ``address:address + size`` of one of the mappings
        (``MADV_DONTNEED``). The bytes must be the file's, unwritten since mapped, or no longer
        needed: a page written since was this process's own copy, and its content goes with it."""
        page = mmap.PAGESIZE
        first, last = -(-address // page) * page, (address + size) // page * page
        madvise = _madvise()
        if madvise is None or last <= first:
            return
        if any(start <= first and last <= end for start, end in self._spans):
            madvise(first, last - first, mmap.MADV_DONTNEED)


@functools.cache
def _madvise():
    function = _libc("madvise") if hasattr(mmap, "MADV_DONTNEED") else None
    if function is not None:  # addresses past 2^31: ctypes would pass a plain int as a C int
        function.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    return function
