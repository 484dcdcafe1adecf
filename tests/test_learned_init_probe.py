"""notebooks/learned_init_probe.py: the probe's targets and its refinement are inverse maps, so what the
predictor learns is exactly the move from a start to its fit."""
import importlib.util
from dataclasses import replace
from pathlib import Path

import torch
from helpers import random_splats

from gs_lightning.fit.config import FitConfig

PROBE = Path(__file__).resolve().parents[1] / "notebooks" / "learned_init_probe.py"


def probe():
    spec = importlib.util.spec_from_file_location("learned_init_probe", PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_refinement_by_the_targets_lands_on_the_fit():
    p = probe()
    start = random_splats(2, 12, 32, 32, scale=(1.0, 4.0), margin=-4.0, requires_grad=False, seed=1)
    g = torch.Generator().manual_seed(2)
    # a fit near its start: centres moved by under a pixel, each factor turned and stretched a little
    fitted = replace(start, xy=start.xy + torch.rand(2, 12, 2, generator=g) - 0.5,
                     chol=start.chol * (0.8 + 0.4 * torch.rand(2, 12, 3, generator=g)))
    t = p.targets(start, fitted)  # [B, N, 5]
    assert t.shape == (2, 12, 5) and t.abs().max() < 3  # within the clamp: nothing cut
    moved = p.refine(torch.rand(2, 3, 32, 32), start, lambda features: t, FitConfig())
    torch.testing.assert_close(moved.xy, fitted.xy, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(moved.chol, fitted.chol, atol=1e-4, rtol=1e-4)
    # and no move is the start itself
    still = p.refine(torch.rand(2, 3, 32, 32), start, lambda features: torch.zeros(2, 12, 5), FitConfig())
    torch.testing.assert_close(still.chol, start.chol, atol=1e-5, rtol=1e-5)
