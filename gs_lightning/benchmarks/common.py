"""Timing helpers shared by the benchmarks."""
import contextlib
import os
import time

import torch

from gs_lightning.render import SIMD_ENV


@contextlib.contextmanager
def simd_path(name: str):
    """Runs the CPU backend on SIMD path `name` (render.SIMD_ENV) inside the block."""
    before = os.environ.get(SIMD_ENV)
    os.environ[SIMD_ENV] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ[SIMD_ENV]
        else:
            os.environ[SIMD_ENV] = before


@contextlib.contextmanager
def num_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def interleaved_seconds(fns: dict, *, reps: int = 5, warmup: int = 1) -> dict:
    """Fastest time of each fn, timed in turn within every repetition. On a shared
    VM, other tenants only ever add time, so the minimum is the best estimate of the
    uncontended cost, and interleaving exposes every variant to the same noise."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for k, r in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if k == 0:
            print("  ".join("-" * w for w in widths))
