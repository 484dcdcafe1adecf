"""The learning-rate schedule of the fit and of the quantized record's refinement, and the fit's Adam beta2,
which scales with the run like the schedule."""
from __future__ import annotations

import math

import torch


def cosine_schedule(opt: torch.optim.Optimizer, iterations: int, end: float = 0.0, *, restart: int = 0):
    """Every lr from its value down to `end` times it on a half cosine over `iterations` steps, then held; with
    `restart`, the first `restart` steps take one half cosine and the rest another, from the full rates."""
    def cosine(t: int, total: int) -> float:
        total = max(total, 1)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))

    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: cosine(t, restart) if t < restart else cosine(t - restart, iterations - restart)
    )


def adam_beta2(beta2: float | None, iterations: int) -> float:
    """fit.lr.beta2, or where it is null the decay whose horizon 1 / (1 - beta2) is a fifteenth of the run's
    `iterations`, between 0.85 and 0.95: 0.85 at 100 and below, 0.95 at 300 and above. At least 0.85, so that
    fit.lr.beta1's 0.9 stays below sqrt(beta2), Adam's condition for bounded steps (0.625, at 40 steps, lost
    1 dB in coarse-to-fine's fine stage when it had an Adam of its own); at most 0.95, where longer runs gained
    nothing from a longer horizon (0.995 at 3000 iterations lost 0.23 dB at 4900 Gaussians)."""
    if beta2 is not None:
        return beta2
    return min(max(1.0 - 15.0 / max(iterations, 1), 0.85), 0.95)
