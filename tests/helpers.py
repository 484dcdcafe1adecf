"""Shared test data: random splat batches with controllable footprints."""
import torch

from gs_lightning.splats import Splats


def random_splats(
    batch: int,
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.7, 6.0),  # range of l11, l22 in pixels
    margin: float = 0.0,  # centres may fall this many pixels outside the image
    keep: float = 1.0,  # fraction of rows that are real (mask True)
    seed: int = 0,
    requires_grad: bool = True,
) -> Splats:
    g = torch.Generator().manual_seed(seed)
    lo, hi = scale
    xy = torch.rand(batch, n, 2, generator=g) * torch.tensor([width + 2 * margin, height + 2 * margin]) - margin
    l11 = lo + (hi - lo) * torch.rand(batch, n, generator=g)
    l22 = lo + (hi - lo) * torch.rand(batch, n, generator=g)
    l21 = torch.randn(batch, n, generator=g) * 0.5 * (l11 + l22) / 2
    chol = torch.stack([l11, l21, l22], dim=-1)
    rgb = torch.randn(batch, n, 3, generator=g) * 0.5
    mask = torch.rand(batch, n, generator=g) < keep
    return Splats(
        xy.requires_grad_(requires_grad), chol.requires_grad_(requires_grad), rgb.requires_grad_(requires_grad), mask
    )
