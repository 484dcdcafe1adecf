"""What Adam steps during a fit: each parameterization maps splats to (xy, diagonal, shear) tensors and back.
fit.lr is in its units; fit.parameterization names one of PARAMETERIZATIONS.

log_scale      xy in pixels, log l11 and log l22, l21 in pixels. The log diagonal takes relative steps, so a
               Gaussian started at 1 pixel reaches 10 within a few hundred steps.
axes           (the default) log_scale, but Adam steps each centre in its own Gaussian's frame: the centre's
               gradient g goes to Adam as L^T g and Adam's step s comes back as L s (L: the Cholesky factor at
               that step, Sigma = L L^T), so fit.lr.xy is in sigmas. L maps the unit circle onto the
               Gaussian's 1-sigma ellipse, so a turned, stretched Gaussian moves further along its long axis
               than across it, and a small one takes small steps. Adam's moments carry over in the frame's
               units from step to step. On held-out photos it gained 0.29-0.39 dB at 300 iterations and
               0.47-0.80 dB at 100 over pixel steps (README "Fitting").
gaussianimage  GaussianImage's GaussianImage_Cholesky, the code the paper builds on: atanh of the centre in
               [-1, 1] image coordinates, and the raw Cholesky factors. With its one learning rate of 1e-3 a
               factor moves by about 1e-3 pixel per step, so a Gaussian keeps roughly the size it started
               with: under it, random init's 1-pixel Gaussians cannot cover the image in 3000 steps.
"""
from __future__ import annotations

import torch
from torch import Tensor

from gs_lightning.splats import Splats


class LogScale:
    steps_in_axes = False

    @staticmethod
    def to_params(start: Splats, size: Tensor) -> list[Tensor]:  # size: [2] (W, H) pixels
        xy, chol = start.xy.detach(), start.chol.detach()
        return [xy.clone(), chol[..., [0, 2]].log(), chol[..., 1:2].clone()]

    @staticmethod
    def to_geometry(
        xy: Tensor,  # [B, N, 2] pixels
        diagonal: Tensor,  # [B, N, 2] log l11, log l22
        shear: Tensor,  # [B, N, 1] l21
        size: Tensor,  # [2] (W, H) pixels
    ) -> tuple[Tensor, Tensor]:  # centres [B, N, 2] pixels, chol [B, N, 3]
        return xy, torch.stack([diagonal[..., 0].exp(), shear[..., 0], diagonal[..., 1].exp()], -1)


class GaussianImage:
    steps_in_axes = False

    @staticmethod
    def to_params(start: Splats, size: Tensor) -> list[Tensor]:
        xy, chol = start.xy.detach(), start.chol.detach()
        unit = (2 * xy / size - 1).clamp(-1 + 1e-6, 1 - 1e-6)  # a centre on the border would be atanh(1) = inf
        return [unit.atanh(), chol[..., [0, 2]].clone(), chol[..., 1:2].clone()]

    @staticmethod
    def to_geometry(
        xy: Tensor,  # [B, N, 2] atanh of the centre in [-1, 1]
        diagonal: Tensor,  # [B, N, 2] l11, l22
        shear: Tensor,  # [B, N, 1] l21
        size: Tensor,  # [2] (W, H) pixels
    ) -> tuple[Tensor, Tensor]:
        # A raw factor may step through zero. Negating a column of L leaves Sigma = L L^T as it is, so
        # the signs fold into the positive-diagonal factor the rasterizer takes; the floor keeps it > 0.
        l11, l22 = diagonal.unbind(-1)
        chol = torch.stack([l11.abs().clamp(min=1e-3), shear[..., 0] * l11.sign(), l22.abs().clamp(min=1e-3)], -1)
        return (xy.tanh() + 1) / 2 * size, chol


class Axes(LogScale):
    steps_in_axes = True


def axes_to_pixels(
    chol: Tensor,  # [B, N, 3] l11, l21, l22
    v: Tensor,  # [B, N, 2]
    *,
    transpose: bool = False,
) -> Tensor:  # [B, N, 2]: L v, or L^T v with transpose
    l11, l21, l22 = chol.unbind(-1)
    x, y = v.unbind(-1)
    if transpose:
        return torch.stack([l11 * x + l21 * y, l22 * y], -1)
    return torch.stack([l11 * x, l21 * x + l22 * y], -1)


PARAMETERIZATIONS = {"log_scale": LogScale, "axes": Axes, "gaussianimage": GaussianImage}
