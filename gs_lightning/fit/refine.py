"""Quantization-aware refinement: a few Adam steps through the quantized record's round trip.

After the fit, the splats go through the quantized record's round trip (codec.round_trip) at every step,
and the render of what would be stored is compared with the image; the gradient passes the rounding
straight through (STE) to the unquantized values, which learn to land on codes that render well. What Adam steps is each column of the
record's quantization domain in units of its quantization step (codes), so one learning rate
(fit.refine_lr, in codes per step) suits positions, log scales, shear and colours alike.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from gs_lightning.codec import bounds, column_bits, from_domain, round_trip, steps, to_domain
from gs_lightning.fit.schedule import cosine_schedule
from gs_lightning.render import rasterize
from gs_lightning.splats import Splats


def quantized_render(splats: Splats, height: int, width: int, backend: str = "auto") -> Tensor:  # [B, 3, H, W]
    """The render of what the quantized record stores for `splats` (differentiable through the STE)."""
    rows = round_trip(splats.unit_rows(height, width), splats.mask)
    return rasterize(Splats.from_unit_rows(rows, splats.mask, height, width), height, width, backend=backend)


def refine_quantized(
    images: Tensor,  # [B, 3, H, W] the fitted images
    splats: Splats,  # their fit, pixels
    iterations: int,
    lr: float,  # codes per step
    backend: str = "auto",
) -> Splats:
    """The splats after `iterations` steps of quantization-aware refinement (unquantized: a codec stores them).
    The lr decays (cosine) to zero, and each image keeps the step whose stored render was closest to it, so
    that the refinement never makes what is stored worse than quantizing the fit directly."""
    B, _, H, W = images.shape
    mask = splats.mask
    q0 = to_domain(splats.unit_rows(H, W)).detach()
    lo, hi = bounds(q0, mask)
    step = steps(lo, hi, column_bits().to(q0.device))[:, None]  # [B, 1, 8]
    codes = ((q0 - lo[:, None]) / step).requires_grad_(True)  # continuous; rounded inside `round_trip`
    opt = torch.optim.Adam([codes], lr=lr)
    sched = cosine_schedule(opt, iterations)
    best, best_mse = codes.detach().clone(), torch.full((B,), float("inf"), device=codes.device)

    def current(c: Tensor) -> Splats:
        return Splats.from_unit_rows(from_domain(lo[:, None] + c * step), mask, H, W)

    for t in range(iterations + 1):  # the last pass only scores the final step
        render = quantized_render(current(codes), H, W, backend)
        with torch.no_grad():  # what psnr_per_image scores: the clamped render of what is stored
            mse = (render.clamp(0, 1) - images).square().mean(dim=(1, 2, 3))
            better = mse < best_mse
            best[better], best_mse[better] = codes.detach()[better], mse[better]
        if t == iterations:
            break
        loss = F.mse_loss(render, images, reduction="none").mean(dim=(1, 2, 3)).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return current(best).detach()
