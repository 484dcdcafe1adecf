"""fit_batch: fit a whole batch of images to splat sets at once (paper 4.2-4.4).

One Adam over every image's parameters, through the batched rasterizer. The
loss is a per-image sum, and Adam is element-wise, so each image's fit is the
same as if it were fitted alone: batching buys speed, never coupling.

What Adam steps is set by `parameterization` (see `_to_params`): ours by
default, or GaussianImage's own, the fitting behind the paper's structured vs
random comparison (4.3). An L1 penalty on the colours drives weak Gaussians
towards zero; at the configured points of the run (fractions of the iterations), a Gaussian whose luminance
0.2126|R| + 0.7152|G| + 0.0722|B| is below the threshold is pruned (its mask
row turns False), so every image ends with its own N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gs_lightning.config import FitConfig
from gs_lightning.fit.init import initialise
from gs_lightning.render import l2_loss, rasterize
from gs_lightning.splats import Splats

LUMA = (0.2126, 0.7152, 0.0722)
LOSSES = ("l2", "l1_ssim")


@dataclass
class FitStats:
    psnr: Tensor  # [B] dB, render clamped to [0, 1]
    n_init: Tensor  # [B]
    n_final: Tensor  # [B]
    iterations: int


def luminance(rgb: Tensor) -> Tensor:  # [..., 3] -> [...]
    return rgb.abs() @ rgb.new_tensor(LUMA)


def psnr_per_image(render: Tensor, images: Tensor) -> Tensor:  # [B, 3, H, W] x2 -> [B]
    return peak_signal_noise_ratio(
        render.clamp(0, 1), images, data_range=1.0, reduction="none", dim=(1, 2, 3)
    )


def _image_loss(splats: Splats, images: Tensor, cfg: FitConfig) -> Tensor:  # -> [B]
    if cfg.loss == "l2":
        # On the CPU one pass per tile renders, takes the residual and runs the backward, in cache: no
        # [B, 3, H, W] render or image gradient (38 MB each at batch 64) goes through memory.
        return l2_loss(splats, images, backend=cfg.backend)
    render = rasterize(splats, images.shape[2], images.shape[3], backend=cfg.backend)
    if cfg.loss == "l1_ssim":
        ssim = structural_similarity_index_measure(render, images, data_range=1.0, reduction="none")
        l1 = F.l1_loss(render, images, reduction="none").mean(dim=(1, 2, 3))
        return (1 - cfg.ssim_weight) * l1 + cfg.ssim_weight * (1 - ssim)
    raise ValueError(f"fit.loss must be one of {LOSSES}, got {cfg.loss!r}")


# What Adam steps, as (xy, diagonal, shear); fit.lr is in these units.
#   log_scale (ours): xy in pixels, log l11 and log l22, l21 in pixels. The log diagonal takes relative
#     steps, so a Gaussian started at 1 pixel reaches 10 within a few hundred steps.
#   gaussianimage: GaussianImage's GaussianImage_Cholesky, the code the paper builds on: atanh of the
#     centre in [-1, 1] image coordinates, and the raw Cholesky factors. With its one learning rate of
#     1e-3 a factor moves by about 1e-3 pixel per step, so a Gaussian keeps roughly the size it started
#     with: under it, random init's 1-pixel Gaussians cannot cover the image in 3000 steps.
PARAMETERIZATIONS = ("log_scale", "gaussianimage")


def _to_params(start: Splats, how: str, size: Tensor) -> list[Tensor]:  # size: [2] (W, H) pixels
    xy, chol = start.xy.detach(), start.chol.detach()
    if how == "log_scale":
        return [xy.clone(), chol[..., [0, 2]].log(), chol[..., 1:2].clone()]
    unit = (2 * xy / size - 1).clamp(-1 + 1e-6, 1 - 1e-6)  # a centre on the border would be atanh(1) = inf
    return [unit.atanh(), chol[..., [0, 2]].clone(), chol[..., 1:2].clone()]


def _to_geometry(
    xy: Tensor,  # [B, N, 2]
    diagonal: Tensor,  # [B, N, 2] l11, l22 (their logs under log_scale)
    shear: Tensor,  # [B, N, 1] l21
    how: str,
    size: Tensor,  # [2] (W, H) pixels
) -> tuple[Tensor, Tensor]:  # centres [B, N, 2] pixels, chol [B, N, 3]
    if how == "log_scale":
        return xy, torch.stack([diagonal[..., 0].exp(), shear[..., 0], diagonal[..., 1].exp()], -1)
    # A raw factor may step through zero. Negating a column of L leaves Sigma = L L^T as it is, so
    # the signs fold into the positive-diagonal factor the rasterizer takes; the floor keeps it > 0.
    l11, l22 = diagonal.unbind(-1)
    chol = torch.stack([l11.abs().clamp(min=1e-3), shear[..., 0] * l11.sign(), l22.abs().clamp(min=1e-3)], -1)
    return (xy.tanh() + 1) / 2 * size, chol


def fit_batch(
    images: Tensor,  # [B, 3, H, W] float in [0, 1]
    cfg: FitConfig,
    *,
    init: Splats | None = None,
    callback=None,  # called as callback(step, loss) every 100 steps
) -> tuple[Splats, FitStats]:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if cfg.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"fit.parameterization must be one of {PARAMETERIZATIONS}, got {cfg.parameterization!r}")
    B, _, H, W = images.shape
    images = images.float().contiguous()
    start = init if init is not None else initialise(images, cfg.num_splats, cfg.init)
    size = torch.tensor([W, H], dtype=torch.float32, device=images.device)
    xy, diagonal, shear = (t.requires_grad_(True) for t in _to_params(start, cfg.parameterization, size))
    rgb = start.rgb.detach().clone().requires_grad_(True)
    mask = start.mask.clone()
    n_init = mask.sum(1)

    opt = torch.optim.Adam(
        [
            {"params": [xy], "lr": cfg.lr.xy},
            {"params": [diagonal], "lr": cfg.lr.diagonal},
            {"params": [shear], "lr": cfg.lr.shear},
            {"params": [rgb], "lr": cfg.lr.rgb},
        ]
    )
    total, end = max(cfg.iterations, 1), cfg.lr.decay_to
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    )
    prune_steps = {round(a * cfg.iterations) for a in cfg.prune.at}

    def current() -> Splats:
        return Splats(*_to_geometry(xy, diagonal, shear, cfg.parameterization, size), rgb, mask)

    for step in range(cfg.iterations):
        if step in prune_steps and cfg.prune.threshold > 0:
            with torch.no_grad():
                mask &= luminance(rgb) >= cfg.prune.threshold
        loss = _image_loss(current(), images, cfg)
        if cfg.prune.l1_weight > 0:
            real = mask.float()
            l1 = (rgb.abs().sum(-1) * real).sum(1) / real.sum(1).clamp(min=1)
            loss = loss + cfg.prune.l1_weight * l1
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        sched.step()
        if callback is not None and step % 100 == 0:
            callback(step, loss.detach())

    with torch.no_grad():
        final = current().detach()
        psnr = psnr_per_image(rasterize(final, H, W, backend=cfg.backend), images)
    return final, FitStats(psnr=psnr, n_init=n_init, n_final=final.mask.sum(1), iterations=cfg.iterations)
