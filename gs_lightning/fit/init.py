"""Initial splat sets: structured (the paper's grid, 4.3), adaptive and oriented (ours), random (the baseline).

Structured: n Gaussians on a grid whose cells tile the image exactly (rows of
near-equal cell counts, so any n and any aspect ratio work), each isotropic
with the largest circle that fits its cell (sigma = half the shorter cell
side), coloured with its cell's mean colour. The render is an unnormalised
sum, so neighbouring Gaussians overlap and the raw cell mean would come out
too bright (x pi/2 on a square grid); the colour is divided by the grid's
average weight, 2 pi sigma^2 / cell area, so the initial render reproduces the
cell mean on a flat region.

Adaptive: the same rows of cells, warped so that every cell holds an equal share of a detail density
(smoothed colour gradient magnitude, mixed with a uniform floor): the rows split the density's
y-marginal into equal parts, and the cells of a row split that band's x-profile. Cells are small where
the image is busy and large where it is flat; each Gaussian is axis-aligned with the half-sides of its
cell, coloured like the structured init. Deterministic (no sampling), batched, any n and aspect ratio.

Oriented: the adaptive cells, each Gaussian turned and stretched along the edges in its cell. The cell's mean
structure tensor (the colour gradient's outer product) has its larger eigenvalue across the edges and the
smaller along them; their ratio, capped, is the Gaussian's aspect (sigma along over sigma across), and the
product of its sigmas stays the adaptive one's, so the colour normalisation and a flat region's render are
unchanged. A cell with no direction (a flat one, or texture alike in every direction) keeps a circle.
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
    """Mean colour of each cell: [B, n, 3], from an integral image (cells may split pixels: round edges).

    boxes: [n, 4] for every image alike, or [B, n, 4] per image."""
    B, _, H, W = images.shape
    integral = F.pad(images.cumsum(2).cumsum(3), (1, 0, 1, 0)).permute(0, 2, 3, 1)  # [B, H+1, W+1, 3]
    boxes = boxes.expand(B, *boxes.shape[-2:])
    x0 = boxes[..., 0].round().long().clamp(0, W - 1)
    y0 = boxes[..., 1].round().long().clamp(0, H - 1)
    x1 = torch.maximum(boxes[..., 2].round().long().clamp(1, W), x0 + 1)
    y1 = torch.maximum(boxes[..., 3].round().long().clamp(1, H), y0 + 1)
    b = torch.arange(B, device=images.device)[:, None]
    total = integral[b, y1, x1] - integral[b, y0, x1] - integral[b, y1, x0] + integral[b, y0, x0]
    area = ((x1 - x0) * (y1 - y0)).to(images.dtype)
    return total / area[..., None]  # [B, n, 3]


def _splats_of_cells(images: Tensor, boxes: Tensor, chol: Tensor) -> Splats:
    """A Gaussian per cell, at its centre, coloured with the cell mean over the Gaussian's average weight
    on the cell (2 pi l11 l22 / cell area), so the render of a flat region is its colour.

    boxes: [B, n, 4] (x0, y0, x1, y1) pixels; chol: [B, n, 3]."""
    B, n = boxes.shape[:2]
    centre = torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2], -1)
    cell_area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    rgb = _cell_means(images, boxes) / (2 * math.pi * chol[..., 0] * chol[..., 2] / cell_area)[..., None]
    return Splats(centre.contiguous(), chol.contiguous(), rgb.contiguous(),
                  torch.ones(B, n, dtype=torch.bool, device=images.device))


def structured_init(images: Tensor, n: int) -> Splats:  # images [B, 3, H, W] in [0, 1]
    B, _, H, W = images.shape
    boxes, _ = _grid_cells(n, H, W)
    boxes = boxes.to(images.device).expand(B, n, 4)
    sigma = torch.minimum(boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]) / 2  # [B, n]
    return _splats_of_cells(images, boxes, torch.stack([sigma, torch.zeros_like(sigma), sigma], -1))


def _gradients(images: Tensor) -> tuple[Tensor, Tensor]:  # [B, 3, H, W] -> dx, dy [B, 3, H, W]
    """Forward differences, 0 past the last column (dx) and the last row (dy)."""
    dx = F.pad(images[..., :, 1:] - images[..., :, :-1], (0, 1))
    dy = F.pad(images[..., 1:, :] - images[..., :-1, :], (0, 0, 0, 1))
    return dx, dy


def detail_density(images: Tensor, n: int, floor: float) -> Tensor:  # [B, 3, H, W] -> [B, H, W]
    """Where Gaussians should go: the colour gradient magnitude, blurred over about a cell (the spacing of
    n Gaussians), normalised to mean 1 and mixed with a uniform floor (its share) so flat regions keep some."""
    B, _, H, W = images.shape
    dx, dy = _gradients(images)
    grad = (dx.square() + dy.square()).sum(1).sqrt()  # [B, H, W]
    sigma = 0.5 * math.sqrt(H * W / n)

    def blur(size: int) -> Tensor:  # [size, size], rows sum to 1: the border renormalised
        i = torch.arange(size, device=images.device, dtype=images.dtype)
        k = torch.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
        return k / k.sum(1, keepdim=True)

    # A blur by matrix products, not conv2d: conv2d's result for an image depends on the batch around it
    # (its kernels block by batch size), and an image must be fitted the same in any batch.
    grad = blur(H) @ grad @ blur(W).T
    mean = grad.mean(dim=(1, 2), keepdim=True)
    # A flat image (a blank placeholder) has its detail nowhere, so evenly everywhere: under fit.adaptive_floor=0
    # an all-zero density would leave its cells' edges 0 / 0.
    grad = torch.where(mean > 1e-12, grad / mean.clamp(min=1e-12), torch.ones_like(grad))
    return (1 - floor) * grad + floor


def _inverse_cdf(cdf: Tensor, q: Tensor) -> Tensor:
    """Positions (in cells of the CDF's grid, 0..K) at which a piecewise-linear CDF reaches q.

    cdf: [..., K + 1] non-decreasing from 0 to 1 at the cell edges; q: [..., M] in [0, 1]."""
    K = cdf.shape[-1] - 1
    i = (torch.searchsorted(cdf.contiguous(), q.contiguous(), right=True) - 1).clamp(0, K - 1)
    lo, hi = cdf.gather(-1, i), cdf.gather(-1, i + 1)
    return i + ((q - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)


def _adaptive_cells(images: Tensor, n: int, floor: float) -> Tensor:  # [B, 3, H, W] -> boxes [B, n, 4]
    """Cells of equal detail (see the module docstring), as (x0, y0, x1, y1) pixels in the structured grid's
    order; floor: the density's uniform share."""
    B, _, H, W = images.shape
    dev = images.device
    counts = torch.tensor(grid_rows(n, H, W), device=dev)
    R, C = len(counts), int(counts.max())
    p = detail_density(images, n, floor)  # [B, H, W]
    # Rows: equal shares of the y-marginal.
    rows_cdf = F.pad(p.sum(2).cumsum(1), (1, 0))  # [B, H + 1]
    rows_cdf = rows_cdf / rows_cdf[:, -1:]
    y_edges = _inverse_cdf(rows_cdf, torch.linspace(0, 1, R + 1, device=dev).expand(B, R + 1))  # [B, R + 1]
    # Each band's x-profile: the integral of p over the band, from p's running sum down the rows
    # (piecewise linear in y, so a band may start or end inside a pixel row).
    down = F.pad(p.cumsum(1), (0, 0, 1, 0))  # [B, H + 1, W]
    y0, frac = y_edges.floor().clamp(max=H - 1), y_edges - y_edges.floor().clamp(max=H - 1)
    at_edge = down.gather(1, y0.long()[..., None].expand(B, R + 1, W)) + frac[..., None] * p.gather(
        1, y0.long().clamp(max=H - 1)[..., None].expand(B, R + 1, W))  # [B, R + 1, W]
    band = (at_edge[:, 1:] - at_edge[:, :-1]).clamp(min=0) + 1e-12  # [B, R, W]
    cols_cdf = F.pad(band.cumsum(2), (1, 0))
    cols_cdf = cols_cdf / cols_cdf[..., -1:]  # [B, R, W + 1]
    # Cell edges of row r at fractions k / counts[r], k = 0..counts[r] (rows have C or C - 1 cells).
    k = torch.arange(C + 1, device=dev)
    q = (k[None, :] / counts[:, None]).clamp(max=1).expand(B, R, C + 1)
    x_edges = _inverse_cdf(cols_cdf, q)  # [B, R, C + 1]
    real = (k[None, :C] < counts[:, None]).reshape(-1)  # [R * C]: which (row, cell) slots are cells
    boxes = torch.stack([x_edges[..., :-1], y_edges[:, :-1, None].expand(B, R, C),
                         x_edges[..., 1:], y_edges[:, 1:, None].expand(B, R, C)], -1)
    return boxes.reshape(B, R * C, 4)[:, real]


def _half_sides(boxes: Tensor, scale: float) -> Tensor:  # [B, n, 4] -> [B, n, 2] sigma_x, sigma_y pixels
    return scale * (boxes[..., 2:] - boxes[..., :2]).clamp(min=0.5) / 2


def adaptive_init(images: Tensor, n: int, *, floor: float, scale: float) -> Splats:
    """Cells of equal detail, one axis-aligned Gaussian each; scale: sigma over the half cell side."""
    boxes = _adaptive_cells(images, n, floor)
    half = _half_sides(boxes, scale)
    return _splats_of_cells(images, boxes, torch.stack([half[..., 0], torch.zeros_like(half[..., 0]),
                                                        half[..., 1]], -1))


def oriented_init(images: Tensor, n: int, *, floor: float, scale: float, max_aspect: float) -> Splats:
    """The adaptive cells, each Gaussian along its cell's edges (see the module docstring); max_aspect: the cap
    on sigma along over sigma across."""
    boxes = _adaptive_cells(images, n, floor)
    area = _half_sides(boxes, scale).prod(-1)  # [B, n] sigma_1 sigma_2, the adaptive Gaussian's
    dx, dy = _gradients(images)
    outer = torch.stack([(dx * dx).sum(1), (dx * dy).sum(1), (dy * dy).sum(1)], 1)  # [B, 3, H, W]
    a, b, c = _cell_means(outer, boxes).unbind(-1)  # [B, n] each: the cell's mean Jxx, Jxy, Jyy
    root = ((a - c).square() / 4 + b.square()).sqrt()
    across, along = (a + c) / 2 + root, ((a + c) / 2 - root).clamp(min=0)  # the eigenvalues
    # A cell whose gradients are weak against the image's typical cell has no reliable direction: the floor,
    # a share of that typical energy, keeps it near a circle.
    floor_energy = 1e-4 + 0.05 * across.mean(1, keepdim=True)  # [B, 1], each image its own
    aspect = ((across + floor_energy) / (along + floor_energy)).clamp(max=max_aspect)
    # The larger eigenvalue's direction theta (across the edges), by its double angle: cos 2 theta and
    # sin 2 theta are ratios, where atan2, cos and sin would round an image differently in another batch
    # (vectorised and scalar paths). A circle (root 0) takes any direction: 0 and 0 give Sigma = area I.
    root = root.clamp(min=1e-30)
    cos2, sin2 = (a - c) / 2 / root, b / root
    var_across, var_along = area / aspect, area * aspect
    sxx = var_across * (1 + cos2) / 2 + var_along * (1 - cos2) / 2  # Sigma = R diag(across, along) R^T
    sxy = (var_across - var_along) * sin2 / 2
    l11 = sxx.sqrt()
    l21 = sxy / l11
    l22 = area / l11  # det Sigma = area^2 = (l11 l22)^2
    return _splats_of_cells(images, boxes, torch.stack([l11, l21, l22], -1))


def random_init(images: Tensor, n: int, *, generator: torch.Generator | None = None) -> Splats:
    """GaussianImage's initialisation: uniform centres, L = U(0, 1) + diag(0.5) pixels, colours U(0, 1)."""
    B, _, H, W = images.shape
    dev = images.device

    def rand(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    xy = rand(B, n, 2) * torch.tensor([W, H], dtype=torch.float32, device=dev)
    chol = rand(B, n, 3) + torch.tensor([0.5, 0.0, 0.5], device=dev)
    return Splats(xy, chol, rand(B, n, 3), torch.ones(B, n, dtype=torch.bool, device=dev))


# fit.init's choices: each takes the images and the `fit` config (num_splats and the init's own keys).
INITS = {
    "oriented": lambda images, cfg: oriented_init(images, cfg.num_splats, floor=cfg.adaptive_floor,
                                                  scale=cfg.adaptive_scale, max_aspect=cfg.oriented_max_aspect),
    "adaptive": lambda images, cfg: adaptive_init(images, cfg.num_splats, floor=cfg.adaptive_floor,
                                                  scale=cfg.adaptive_scale),
    "structured": lambda images, cfg: structured_init(images, cfg.num_splats),
    "random": lambda images, cfg: random_init(images, cfg.num_splats,
                                              generator=torch.Generator().manual_seed(cfg.seed)),
}


def initialise(images: Tensor, cfg) -> Splats:  # images [B, 3, H, W]; cfg: FitConfig
    if cfg.init not in INITS:
        raise ValueError(f"fit.init must be one of {sorted(INITS)}, got {cfg.init!r}")
    return INITS[cfg.init](images, cfg)
