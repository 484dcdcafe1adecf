"""SplatStem, the paper's "GS stem": per-splat features -> tokens of the ViT width (paper 5.1, Fig. 5).

    centre (x, y)     -> Fourier features  sin/cos(2^k pi x), sin/cos(2^k pi y), k < num_freqs, and x, y
    covariance L L^T  -> log of the principal standard deviations, and sin/cos of twice the orientation
                         (an ellipse is the same under a half turn, so 2 theta is the continuous angle)
    colour            -> r, g, b
    -> gated sigmoid linear  Linear(f) * sigmoid(Linear_g(f))
    -> z-score normalisation (LayerNorm, no affine) -> Linear to the ViT width

Splats come in the unit square (units="unit", as fitted shards store them), xy [B, N, 2].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gs_lightning.splats import Splats


def covariance_features(chol: Tensor) -> Tensor:  # [..., 3] (l11, l21, l22) -> [..., 4]
    """(log sigma_1, log sigma_2, sin 2 theta, cos 2 theta) of Sigma = L L^T, sigma_1 >= sigma_2."""
    l11, l21, l22 = chol.unbind(-1)
    a, b, c = l11 * l11, l11 * l21, l21 * l21 + l22 * l22  # Sigma = [[a, b], [b, c]]
    half_diff = 0.5 * (a - c)
    radius = torch.sqrt(half_diff * half_diff + b * b)
    lam1 = 0.5 * (a + c) + radius
    lam2 = (l11 * l22).square() / lam1  # det / lam1: stable for thin ellipses
    two_theta = torch.atan2(b, half_diff)
    return torch.stack([0.5 * lam1.log(), 0.5 * lam2.log(), two_theta.sin(), two_theta.cos()], -1)


class FourierFeatures(nn.Module):
    def __init__(self, *, num_freqs: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(num_freqs), persistent=False)

    @property
    def out_dim(self) -> int:
        return 2 + 4 * len(self.freqs)

    def forward(self, xy: Tensor) -> Tensor:  # [..., 2] -> [..., 2 + 4F]
        angles = xy[..., None] * self.freqs  # [..., 2, F]
        return torch.cat([xy, angles.sin().flatten(-2), angles.cos().flatten(-2)], -1)


class GatedLinear(nn.Module):
    """Linear(x) * sigmoid(Linear_g(x)): the splat decides which of its features pass."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.value = nn.Linear(dim_in, dim_out)
        self.gate = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.value(x) * torch.sigmoid(self.gate(x))


class SplatStem(nn.Module):
    def __init__(self, *, width: int, hidden: int, num_freqs: int):
        super().__init__()
        self.fourier = FourierFeatures(num_freqs=num_freqs)
        self.gated = GatedLinear(self.fourier.out_dim + 4 + 3, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)  # z-score across the feature dimension
        self.proj = nn.Linear(hidden, width)

    def forward(self, splats: Splats) -> Tensor:  # -> [B, N, width], zero on padding rows
        splats.expect_units("unit", "SplatStem")
        real = splats.mask[..., None]
        # The splat features in float32 whatever autocast runs (bf16-mixed): sin(2^7 pi x) needs more than
        # bf16's 8 bits of x, and so does the eigen-split of a thin ellipse's covariance.
        with torch.autocast(splats.xy.device.type, enabled=False):
            # Padding may hold anything: compute on a harmless unit splat there, then zero it.
            xy = torch.where(real, splats.xy, 0.0).float()
            chol = torch.where(real, splats.chol, splats.chol.new_tensor([1.0, 0.0, 1.0])).float()
            rgb = torch.where(real, splats.rgb, 0.0).float()
            f = torch.cat([self.fourier(xy), covariance_features(chol), rgb], -1)
        return self.proj(self.norm(self.gated(f))) * real
