"""Initial splat sets (paper 4.3): structured (grid) and random (the baseline).

Structured: n Gaussians on a grid whose cells tile the image exactly (rows of
near-equal cell counts, so any n and any aspect ratio work), each isotropic
with the largest circle that fits its cell (sigma = half the shorter cell
side), coloured with its cell's mean colour. The render is an unnormalised
sum, so neighbouring Gaussians overlap and the raw cell mean would come out
too bright (x pi/2 on a square grid); the colour is divided by the grid's
average weight, 2 pi sigma^2 / cell area, so the initial render reproduces the
cell mean on a flat region.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from gs_lightning.splats import Splats


def grid_rows(n: int, height: int, width: int) -> list[int]:
    """Cells per row for n cells over an height x width image: rows of near-equal counts."""
    if n <= 0:
        raise ValueError(f"num_splats must be positive, got {n}")
    rows = max(1, min(n, round(math.sqrt(n * height / width))))
    base, extra = divmod(n, rows)
    # Spread the longer rows evenly so no band of the image is denser.
    return [base + (1 if (r * extra) // rows != ((r + 1) * extra) // rows else 0) for r in range(rows)]


def _grid_cells(n: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Cell boxes as (x0, y0, x1, y1) in pixels [n, 4], and the cell's row index [n]."""
    counts = grid_rows(n, height, width)
    boxes, row_of = [], []
    for r, c in enumerate(counts):
        y0, y1 = r * height / len(counts), (r + 1) * height / len(counts)
        xs = torch.linspace(0, width, c + 1)
        boxes.append(torch.stack([xs[:-1], torch.full((c,), y0), xs[1:], torch.full((c,), y1)], -1))
        row_of += [r] * c
    return torch.cat(boxes), torch.tensor(row_of)


def _cell_means(images: Tensor, boxes: Tensor) -> Tensor:
    """Mean colour of each cell: [B, n, 3], from an integral image (cells may split pixels: round edges)."""
    B, _, H, W = images.shape
    integral = F.pad(images.cumsum(2).cumsum(3), (1, 0, 1, 0))  # [B, 3, H+1, W+1]
    x0 = boxes[:, 0].round().long().clamp(0, W - 1)
    y0 = boxes[:, 1].round().long().clamp(0, H - 1)
    x1 = torch.maximum(boxes[:, 2].round().long().clamp(1, W), x0 + 1)
    y1 = torch.maximum(boxes[:, 3].round().long().clamp(1, H), y0 + 1)
    total = integral[:, :, y1, x1] - integral[:, :, y0, x1] - integral[:, :, y1, x0] + integral[:, :, y0, x0]
    area = ((x1 - x0) * (y1 - y0)).to(images.dtype)
    return (total / area).transpose(1, 2)  # [B, n, 3]


def structured_init(images: Tensor, n: int) -> Splats:  # images [B, 3, H, W] in [0, 1]
    B, _, H, W = images.shape
    boxes, _ = _grid_cells(n, H, W)
    boxes = boxes.to(images.device)
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], -1)  # [n, 2]
    sigma = torch.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2  # [n]
    # A Gaussian integrates to 2 pi sigma^2, so the grid's weight averages 2 pi sigma^2 / cell area per pixel.
    cell_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    rgb = _cell_means(images, boxes) / (2 * math.pi * sigma**2 / cell_area)[None, :, None]
    chol = torch.stack([sigma, torch.zeros_like(sigma), sigma], -1)
    return Splats(
        centre.expand(B, n, 2).contiguous(),
        chol.expand(B, n, 3).contiguous(),
        rgb.contiguous(),
        torch.ones(B, n, dtype=torch.bool, device=images.device),
    )


def random_init(images: Tensor, n: int, *, generator: torch.Generator | None = None) -> Splats:
    """GaussianImage's initialisation: uniform centres, L = U(0, 1) + diag(0.5) pixels, colours U(0, 1)."""
    B, _, H, W = images.shape
    dev = images.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    xy = rand(B, n, 2) * torch.tensor([W, H], dtype=torch.float32, device=dev)
    chol = rand(B, n, 3) + torch.tensor([0.5, 0.0, 0.5], device=dev)
    return Splats(xy, chol, rand(B, n, 3), torch.ones(B, n, dtype=torch.bool, device=dev))


INITS = {"structured": structured_init, "random": random_init}


def initialise(images: Tensor, n: int, method: str) -> Splats:
    if method not in INITS:
        raise ValueError(f"fit.init must be one of {sorted(INITS)}, got {method!r}")
    return INITS[method](images, n)
