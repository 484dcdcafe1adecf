"""The learning-rate schedule of the fit and of the quantized record's refinement."""
from __future__ import annotations

import math

import torch


def cosine_schedule(opt: torch.optim.Optimizer, iterations: int, end: float = 0.0):
    """Every lr from its value down to `end` times it on a half cosine over `iterations` steps, then held."""
    total = max(iterations, 1)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    )
