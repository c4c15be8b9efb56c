"""One exclusive lock per output folder, held by every command that writes results into one.

Two commands writing one folder at once lose work: two leaderboards on one run folder
each save ``results.parquet`` from their own rows and the last save wins; two
prepare-data runs delete each other's temporaries. So the leaderboard's run folder,
prepare-data's and train-sweep's ``--out`` and a rerun's report folder are locked for
the whole command, and a second command on the same folder waits (``--wait SECONDS``)
or is refused in one line naming the holder.

The lock is a file, ``FOLDER/.lock``, because ``flock`` locks are local to one node,
or unsupported, on the storage cluster nodes share (NFS, Lustre, CephFS):

- Taking it: the holder (pid, host, machine, a random token, since, command) is written
  to a file of its own, which is then hard-linked to ``.lock``. ``link`` fails when the
  lock exists, atomically also over NFS, where ``O_CREAT|O_EXCL`` has not always been
  (see open(2), "O_EXCL"), and the lock never appears half written.
- While held, a daemon thread refreshes its mtime every :data:`HEARTBEAT_S` seconds.
- A lock whose holder is dead is taken over: on the same machine (one boot of one
  kernel, one pid namespace: containers that share a host name have their own) as soon
  as its pid is gone; from another machine once its heartbeat is older than
  :data:`LEASE_S` (this trusts the nodes' clocks to agree within seconds, as NTP keeps
  them). The taker renames the stale file aside to a name of its own and checks that
  what it moved is the holder it judged; if a faster waiter took over in between, it
  puts that waiter's fresh lock back with ``link``, which fails rather than replace a
  lock that appeared meanwhile. Of two waiters on one stale lock, exactly one wins.
- Reentrant within a process: a rerun holds its report folder and then runs the
  leaderboard on the same folder.
- Released (the file removed) at the end of the ``with`` block, also on an exception or
  Ctrl-C. A holder killed by a signal leaves it behind, and the next command takes it
  over as above.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import shlex
import socket
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from harness.errors import HarnessError

LOCK_NAME = ".lock"
# A holder on another machine whose heartbeat is older than this is taken as dead: twelve
# missed heartbeats, far beyond an NFS server's hiccup or a loaded node's stall.
LEASE_S = 60.0
HEARTBEAT_S = 5.0
POLL_S = 0.5  # a waiting command looks at the lock this often
COMMAND_CHARS = 160  # of the holder's command line kept in the lock (and so in the refusal)


@dataclass(frozen=True)
class Holder:
    """Who holds a folder's lock: what ``.lock`` contains."""

    pid: int
    host: str
    machine: str  # where ``pid`` names this process: boot id and pid namespace (host name elsewhere)
    token: str  # tells this holder's file from a later one of the same pid
    since: str
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.since} ({self.command})"


def check_wait(wait_s: float) -> None:
    """The one check of every stage config's ``wait_s`` (``inf`` waits for as long as it takes)."""
    if not wait_s >= 0:
        raise HarnessError(f"--wait must be a number of seconds >= 0, got {wait_s:g}")


@contextmanager
def folder_lock(folder: Path, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``folder``'s lock (creating the folder) for the ``with`` block.

    A live holder in another process makes this wait up to ``wait_s`` seconds, then
    raise a one-line :class:`HarnessError` naming it; a dead one's lock is taken over.
    """
    folder = Path(folder)
    made = not folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HarnessError(f"cannot lock {folder}: {error.strerror or error}") from None
    key = folder.resolve()
    with _REGISTRY:
        reentered = key in _HELD
    if reentered:
        yield  # the outer block of this process holds the lock and releases it
        return
    path = folder / LOCK_NAME
    mine = _acquire(folder, path, wait_s)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, mine.token, stop), daemon=True,
                            name=f"lock heartbeat {folder}")
    try:
        with _REGISTRY:
            _HELD[key] = mine.token
        beat.start()
        yield
    finally:
        with _REGISTRY:
            _HELD.pop(key, None)
        stop.set()
        if beat.ident is not None:
            beat.join()
        _release(folder, path, mine.token, made)


# ----------------------------------------------------------------------------- who holds what


_HELD: dict[Path, str] = {}  # resolved folder -> token of the lock this process holds
_REGISTRY = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child holds nothing: its parent does (and keeps the heartbeat)."""
    global _REGISTRY
    _HELD.clear()
    _REGISTRY = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


@functools.cache
def _machine() -> str:
    """Where a pid names one process: this boot of this kernel and this pid namespace."""
    try:
        return f"{Path('/proc/sys/kernel/random/boot_id').read_text().strip()}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return socket.gethostname()


def _command() -> str:
    """This process's command line, one line and short: ``harness leaderboard --codecs jpeg ...``."""
    argv = sys.argv or ["python"]
    program = Path(argv[0])
    name = program.parent.name if program.name == "__main__.py" else program.name or "python"
    text = " ".join(shlex.join([name, *argv[1:]]).split())
    return text if len(text) <= COMMAND_CHARS else text[: COMMAND_CHARS - 3] + "..."


def _parse(text: str) -> Holder | None:
    """The holder a lock file names, or None for anything else (empty, damaged, an old format)."""
    try:
        values = json.loads(text)
    except ValueError:
        return None
    types = {f.name: f.type for f in fields(Holder)}
    if not isinstance(values, dict) or set(values) != set(types):
        return None
    if not all(type(values[name]).__name__ == kind for name, kind in types.items()) or values["pid"] < 1:
        return None
    return Holder(**values)


@dataclass(frozen=True)
class _Seen:
    """A lock file as a contender saw it."""

    holder: Holder | None
    inode: tuple[int, int, int]  # (device, inode, size): tells unreadable files apart
    age_s: float  # since its last heartbeat

    def same_file(self, other: "_Seen") -> bool:
        if self.holder is not None or other.holder is not None:
            return self.holder is not None and other.holder is not None and self.holder.token == other.holder.token
        return self.inode == other.inode

    def describe(self, path: Path) -> str:
        if self.holder is not None:
            return str(self.holder)
        return f"an unreadable {path} last written {self.age_s:.0f} s ago"


def _look(path: Path) -> _Seen:
    """The lock file at ``path``; FileNotFoundError when there is none."""
    with open(path, "rb") as handle:
        status = os.fstat(handle.fileno())
        data = handle.read(4096)
    holder = _parse(data.decode("utf-8", errors="replace"))
    return _Seen(holder, (status.st_dev, status.st_ino, status.st_size), time.time() - status.st_mtime)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine is running (a zombie is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _stale(seen: _Seen) -> str | None:
    """Why the holder of ``seen`` is dead, or None while it may be alive."""
    holder = seen.holder
    if holder is not None and holder.machine == _machine():
        return None if _alive(holder.pid) else "its process is gone"
    if seen.age_s > LEASE_S:
        return f"no heartbeat for {seen.age_s:.0f} s (lease {LEASE_S:g} s)"
    return None


# ----------------------------------------------------------------------------- taking and giving back


def _acquire(folder: Path, path: Path, wait_s: float) -> Holder:
    mine = Holder(pid=os.getpid(), host=socket.gethostname(), machine=_machine(), token=secrets.token_hex(8),
                  since=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=_command())
    deadline = time.monotonic() + wait_s
    waiting = False
    while True:
        if _create(folder, path, mine):
            return mine
        try:
            seen = _look(path)
        except FileNotFoundError:
            continue  # released between our attempt and the look
        except OSError as error:
            raise HarnessError(f"cannot lock {folder}: cannot read {path}: {error.strerror or error}") from None
        reason = _stale(seen)
        if reason is not None:
            _take_over(folder, path, seen, reason)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            waited = f" after waiting {wait_s:g} s" if wait_s > 0 else ""
            raise HarnessError(f"{folder} is locked{waited} by {seen.describe(path)}; "
                               "try again later or pass --wait SECONDS")
        if not waiting:
            print(f"waiting up to {wait_s:g} s for {folder}: locked by {seen.describe(path)}", file=sys.stderr,
                  flush=True)
            waiting = True
        time.sleep(min(POLL_S, left))


def _create(folder: Path, path: Path, mine: Holder) -> bool:
    """Link a complete lock file naming ``mine`` to ``path``; False when another lock is there."""
    own = path.with_name(f"{LOCK_NAME}.{mine.token}.new")
    try:
        try:
            handle = open(own, "x")
        except FileNotFoundError:  # the last holder removed the folder, empty, at its end
            folder.mkdir(parents=True, exist_ok=True)
            handle = open(own, "x")
        with handle:
            handle.write(json.dumps(asdict(mine)))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(own, path)
            return True
        except FileExistsError:
            # Over NFS a link that succeeded can answer EEXIST when its reply was lost:
            # then our file has two names (open(2), "O_EXCL").
            return os.stat(own).st_nlink == 2
    except OSError as error:
        raise HarnessError(f"cannot lock {folder}: {error.strerror or error} ({path})") from None
    finally:
        own.unlink(missing_ok=True)


def _take_over(folder: Path, path: Path, judged: _Seen, reason: str) -> None:
    """Remove the stale lock ``judged`` unless another waiter has already replaced it."""
    aside = path.with_name(f"{LOCK_NAME}.{secrets.token_hex(8)}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return  # a faster waiter moved it
    try:
        moved = _look(aside)
        if moved.same_file(judged):
            print(f"{folder}: took over the lock of {judged.describe(path)}: {reason}", file=sys.stderr, flush=True)
            return
        try:
            os.link(aside, path)  # a faster waiter's fresh lock: put it back
        except FileExistsError:
            # A third contender locked the empty name in the instant between: the waiter whose
            # lock we moved finds it gone at release and says so.
            pass
    finally:
        aside.unlink(missing_ok=True)


def _token_of(path: Path) -> str | None:
    try:
        holder = _look(path).holder
    except FileNotFoundError:
        return None
    return holder.token if holder is not None else None


def _heartbeat(path: Path, token: str, stop: threading.Event) -> None:
    """Refresh the lock's mtime while it is ours; never touch a lock another command took over."""
    while not stop.wait(HEARTBEAT_S):
        try:
            if _token_of(path) != token:
                return
            os.utime(path)
        except OSError:
            continue  # a hiccup of shared storage: the lease allows twelve missed beats


def _release(folder: Path, path: Path, token: str, made: bool) -> None:
    try:
        if _token_of(path) == token:
            path.unlink()
        else:
            print(f"warning: {path} was no longer this command's lock at its end (taken over or removed): another "
                  f"command may have written {folder} meanwhile", file=sys.stderr, flush=True)
        if made:
            folder.rmdir()  # a command that wrote nothing leaves no folder behind
    except OSError:
        pass  # the folder holds results (or the lock vanished): nothing more to tidy

