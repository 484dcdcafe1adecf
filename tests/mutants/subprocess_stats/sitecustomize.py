"""Loaded by every Python a test starts while mutmut collects its per-test map (tests/conftest.py puts this
folder on PYTHONPATH then, and calls `record_forks` in the test's own process): at exit, the functions this
process entered are written where the test's process reads them, so mutmut also sees what a test reaches
through `python -m gs_lightning`, Lightning's ranks and DataLoader workers."""
import atexit
import multiprocessing.util
import os
import sys


def _write_hits() -> None:
    state = sys.modules.get("mutmut.state")
    folder = os.environ.get("GS_MUTMUT_HITS")
    if state is None or not folder:
        return
    hits = state.state()._stats
    if hits:
        with open(os.path.join(folder, f"{os.getpid()}.txt"), "w") as f:
            f.write("\n".join(sorted(hits)))


class _Forks:
    """A forked multiprocessing child (a DataLoader worker) leaves by os._exit, past atexit, but runs
    multiprocessing's finalizers first; its registry is emptied at the fork, so each child registers anew."""

    @staticmethod
    def after_fork(_) -> None:
        multiprocessing.util.Finalize(None, _write_hits, exitpriority=0)


_FORKS = _Forks()  # register_after_fork holds it weakly


def record_forks() -> None:
    multiprocessing.util.register_after_fork(_FORKS, _Forks.after_fork)


if os.environ.get("GS_MUTMUT_HITS"):
    atexit.register(_write_hits)
    record_forks()
