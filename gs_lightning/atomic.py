"""Atomic writes: a file appears under its final name only once it is complete.

Every writer of the project (texts, fitted shards, input shards, checkpoints) writes a temporary beside
the target and renames it into place. os.replace is atomic within a filesystem, so a kill at any moment
leaves the old file, the new one, or none, never half of one.
"""
from __future__ import annotations

import os
from pathlib import Path


class AtomicFile:
    """`tmp` to write, then `commit()` to rename it to `path`, or `abort()` to drop it.

    unique: a temporary per process, for files that several DDP ranks may write at once (with the same
    content). Otherwise the temporary has a fixed name, so a rerun after a kill overwrites the stale one.
    """

    def __init__(self, path: str | os.PathLike, *, unique: bool = False):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + (f".{os.getpid()}.tmp" if unique else ".tmp"))
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
    with AtomicFile(path, unique=True) as tmp:
        tmp.write_text(text)
