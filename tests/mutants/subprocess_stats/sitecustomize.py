"""Loaded by every Python a test starts while mutmut collects its per-test map (tests/conftest.py puts this
folder on PYTHONPATH then): at exit, the functions this process entered are written where the test's process
reads them, so mutmut also sees what a test reaches through `python -m gs_lightning` and Lightning's ranks."""
import atexit
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


atexit.register(_write_hits)
