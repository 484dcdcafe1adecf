"""Atomic writes: a file appears under its final name only once it is complete.

Every writer of the project (texts, fitted shards, input shards, checkpoints) writes a temporary beside
the target and renames it into place. os.replace is atomic within a filesystem, so a kill at any moment
leaves the old file, the new one, or none, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

from gs_lightning.errors import UserError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def no_space_named(path: str | os.PathLike):
    """A full disk (or quota) while writing `path` becomes a UserError naming it, not a traceback."""
    try:
        yield
    except OSError as e:
        if e.errno in NO_SPACE:
            raise UserError(str(path), "no space left on the device: free some (or give another folder) and rerun; "
                                       "what was finished is kept, nothing half-written is") from None
        raise


class AtomicFile:
    """`tmp` to write, then `commit()` to rename it to `path`, or `abort()` to drop it.

    unique: a temporary per process, for files that several DDP ranks may write at once (with the same
    content). Otherwise the temporary has a fixed name, so a rerun after a kill overwrites the stale one.
    """

    def __init__(self, path: str | os.PathLike, *, unique: bool = False):
        self.path = Path(path)
        # unique by host too: ranks on two nodes (containers) may have one pid, and write one shared folder
        self.tmp = self.path.with_name(self.path.name + (f".{socket.gethostname()}.{os.getpid()}.tmp" if unique
                                                         else ".tmp"))
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def commit(self) -> None:
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        self.commit() if exc_type is None else self.abort()


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with no_space_named(path), AtomicFile(path, unique=True) as tmp:
        tmp.write_text(text)


LOCK = ".lock"
# Set by launchers for the processes of a run: only the run's first process (all of these 0, or unset) locks.
RANK_VARIABLES = ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK")


def first_process() -> bool:
    return all(os.environ.get(v, "0") == "0" for v in RANK_VARIABLES)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, key: str):
    """One writer at a time in a folder: the first process of a run holds folder/.lock (host, pid) while it
    works. Another run there is refused, naming the holder; a lock whose process on this host is gone (killed,
    preempted) is taken over. `key`: the config key that names the folder, for the error."""
    import json
    import time

    if not first_process():
        yield
        return
    path = Path(folder) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            holder = {}
        # Its own pid is a holder gone: a container restarted after a kill hands the new process the old pid.
        if holder.get("host") == me["host"] and holder.get("pid") not in (None, me["pid"]) and _alive(holder["pid"]):
            raise UserError(key, f"another run is writing into {folder} (pid {holder['pid']} on this host, since "
                                 f"{holder.get('since')}); wait for it to end, or give another folder") from None
        if holder.get("host") not in (None, me["host"]):
            raise UserError(key, f"another run is writing into {folder} (pid {holder.get('pid')} on "
                                 f"{holder['host']}, since {holder.get('since')}); wait for it, or, if that job is "
                                 f"gone, delete {path} and rerun") from None
        write_text_atomic(path, json.dumps(me))  # its holder is gone: take it over
    else:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text()).get("pid") == me["pid"]:
                path.unlink()
        except (OSError, ValueError):
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
