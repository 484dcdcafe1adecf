"""The fit: images to splat sets, a whole batch at once (paper 4.2-4.4).

fit_images is the entry point: fit_batch, then, for the quantized record, the refinement through what it
stores (fit/refine.py). fit_batch runs one Adam over every image's parameters, through the batched
rasterizer. The loss is a per-image sum, and Adam is element-wise, so each image's fit is the same as if it
were fitted alone: batching buys speed, never coupling.

What Adam steps is set by fit.parameterization (fit/parameterization.py). An L1 penalty on the colours
drives weak Gaussians towards zero; at the configured points of the run (fractions of the iterations), a
Gaussian whose luminance 0.2126|R| + 0.7152|G| + 0.0722|B| is below the threshold is pruned (its mask row
turns False), so every image ends with its own N.

Beyond the paper: the colours may start from a least-squares solve for the init's geometry (fit.solve_colours,
again after each prune); the cosine decay spans the run (unless fit.coarse_restart), and Adam's
second-moment horizon is a fifteenth of it; with fit.target_psnr each image stops at the first step whose
render reaches it, keeping those splats, and its rows leave every tensor (Adam's moments included), so a
finished image costs nothing more and the others go on exactly as they would alone; and with
fit.coarse_iterations the run starts with steps on the images averaged down (coarse-to-fine), which cost a
fraction of a full-resolution one, under the same Adam.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio

from gs_lightning.codec import RECORDS
from gs_lightning.fit.config import FitConfig
from gs_lightning.fit.init import initialise
from gs_lightning.fit.parameterization import PARAMETERIZATIONS, axes_to_pixels
from gs_lightning.fit.refine import quantized_render, refine_quantized
from gs_lightning.fit.schedule import adam_beta2, cosine_schedule
from gs_lightning.render import l2_loss, rasterize
from gs_lightning.splats import Splats

LUMA = (0.2126, 0.7152, 0.0722)


@dataclass
class FitStats:
    """Per image of a fitted batch, [B] each: what the fit's records (shard json, summary) report."""

    psnr: Tensor  # dB of what is stored, render clamped to [0, 1]
    n_init: Tensor  # splats the init placed
    n_final: Tensor  # splats kept after pruning
    iterations: Tensor  # Adam steps taken (fewer than fit.iterations if the image reached fit.target_psnr)

    def image(self, i: int) -> dict:
        """Image i's figures as plain numbers, under these field names."""
        return {"psnr": round(float(self.psnr[i]), 3), "n_init": int(self.n_init[i]), "n_final": int(self.n_final[i]),
                "iterations": int(self.iterations[i])}


def luminance(rgb: Tensor) -> Tensor:  # [..., 3] -> [...]
    return rgb.abs() @ rgb.new_tensor(LUMA)


# A render equal to its image (an all-black one: every splat pruned, nothing left to differ) would score inf,
# which JSON cannot hold and which would make a whole folder's mean PSNR infinite.
PSNR_MAX = 100.0


def psnr_per_image(render: Tensor, images: Tensor) -> Tensor:  # [B, 3, H, W] x2 -> [B]
    return peak_signal_noise_ratio(
        render.clamp(0, 1), images, data_range=1.0, reduction="none", dim=(1, 2, 3)
    ).clamp(max=PSNR_MAX)


def solve_colours(
    splats: Splats,  # geometry to hold fixed; its rgb is the solve's starting point
    images: Tensor,  # [B, 3, H, W]
    *,
    steps: int,
    ridge: float,
    backend: str = "auto",
) -> Tensor:  # [B, N, 3]
    """The colours that minimise |render - image|^2 + ridge * sum_i pi l11 l22 |c_i|^2 for this geometry.

    The render is linear in the colours, render = A c (A: [HW, N] Gaussian weights, the same for each
    channel), so this is a least-squares problem. Its normal equations (A^T A + ridge D) c = A^T y are N x N
    per image, but A^T A is sparse (a Gaussian overlaps only its neighbours), so we never form it: conjugate
    gradients needs only the products A^T (A c - y), which are the colour gradient of the fitting loss
    (l2_loss, |A c - y|^2 over 3HW): on the CPU one fused pass per tile, the cost of one fitting step.
    D = pi l11 l22 is each Gaussian's energy integral of w^2 (diag(A^T A) away from the border): the Jacobi
    preconditioner, and the ridge's scale, so the ridge weighs big and small Gaussians alike. The small ridge
    keeps Gaussians that nearly coincide from taking huge opposite colours. Each (image, channel) is its own
    system: the steps are batched, never coupled.
    """
    B, _, H, W = images.shape
    xy, chol, mask = splats.xy.detach(), splats.chol.detach(), splats.mask
    diag = torch.where(mask, math.pi * chol[..., 0] * chol[..., 2], 1.0)[..., None]  # [B, N, 1]
    zeros = torch.zeros_like(images)

    def gram(c: Tensor, y: Tensor) -> Tensor:  # A^T (A c - y), as 3HW/2 times l2_loss's gradient in c
        with torch.enable_grad():
            c = c.detach().requires_grad_(True)
            loss = l2_loss(Splats(xy, chol, c, mask), y, backend=backend).sum()
            return torch.autograd.grad(loss, c)[0] * (1.5 * H * W)

    def normal(c: Tensor) -> Tensor:  # (A^T A + ridge D) c
        return gram(c, zeros) + ridge * diag * c

    def dot(a: Tensor, b: Tensor) -> Tensor:  # [B, N, 3] x2 -> [B, 1, 3], per image and channel
        return (a * b).sum(1, keepdim=True)

    c = torch.where(mask[..., None], splats.rgb.detach(), 0.0)
    r = -gram(c, images) - ridge * diag * c
    z = r / diag
    p, rz = z, dot(r, z)
    for _ in range(steps):
        q = normal(p)
        alpha = rz / dot(p, q).clamp(min=1e-30)  # a converged system has rz = 0: alpha = 0, it stays put
        c, r = c + alpha * p, r - alpha * q
        z = r / diag
        rz, rz_old = dot(r, z), rz
        p = z + rz / rz_old.clamp(min=1e-30) * p
    return c


def _render_loss(splats: Splats, images: Tensor, cfg: FitConfig, *, l1: bool = True
                 ) -> tuple[Tensor, Tensor]:  # -> loss, mse [B]
    """One step's forward: each image's MSE (+ the colours' L1 unless l1=False), and the MSE alone for the
    PSNR. On the CPU one pass per tile renders, takes the residual and runs the backward, in cache: no
    [B, 3, H, W] render or image gradient (38 MB each at batch 64) goes through memory."""
    mse = l2_loss(splats, images, backend=cfg.backend)
    loss = mse
    if l1 and cfg.prune.l1_weight > 0:
        real = splats.mask.float()
        mean_abs = (splats.rgb.abs().sum(-1) * real).sum(1) / real.sum(1).clamp(min=1)
        loss = loss + cfg.prune.l1_weight * mean_abs
    return loss, mse.detach()


def _keep_rows(opt: torch.optim.Optimizer, keep: Tensor) -> list[Tensor]:
    """Drop finished images from every parameter, its gradient and Adam's moments, so Adam goes on for the
    rest exactly as before (its step count is shared) and never moves a finished image. The parameters are
    new leaf tensors (autograd remembers a leaf's shape), in the optimizer's order; returns them."""
    out = []
    for group in opt.param_groups:
        old = group["params"][0]
        new = old.detach()[keep].requires_grad_(True)
        if old.grad is not None:
            new.grad = old.grad[keep]
        state = opt.state.pop(old, {})
        opt.state[new] = {k: v if k == "step" else v[keep] for k, v in state.items()}
        group["params"] = [new]
        out.append(new)
    return out


def fit_start(images: Tensor, cfg: FitConfig) -> Splats:  # images [B, 3, H, W] float in [0, 1]
    """fit.init's splats for these images, their colours solved for its geometry where fit.solve_colours."""
    start = initialise(images, cfg)
    if cfg.solve_colours:
        start = replace(start, rgb=colours_for(start, images, cfg))
    return start


def coarse_factors(coarse_iterations: list[int]) -> list[int]:
    """What each coarse step averages the images down by, in step order: level k of K runs its steps at
    2^(K-k)x, coarsest first ([2, 1] -> [4, 4, 2])."""
    K = len(coarse_iterations)
    return [2 ** (K - k) for k, steps in enumerate(coarse_iterations) for _ in range(steps)]


def _check_pixels(images: Tensor) -> None:  # [B, 3, H, W]
    """Raise ValueError naming the first image that is not float in [0, 1]: a uint8 or 0-255 image would fit
    on the wrong scale without a word, and a NaN pixel fail deep in the init."""
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [0, 1], got {images.dtype} (divide 8-bit images by 255)")
    bad = ~((images >= 0) & (images <= 1)).flatten(1).all(1)  # NaN fails both
    if bad.any():
        b = int(bad.nonzero()[0])
        v = images[b][images[b].isfinite()]
        what = "NaN or inf" if v.numel() < images[b].numel() else f"values from {v.min():g} to {v.max():g}"
        raise ValueError(f"images must be float in [0, 1]: image {b} holds {what}")


def fit_batch(
    images: Tensor,  # [B, 3, H, W] float in [0, 1]
    cfg: FitConfig,
    *,
    init: Splats | None = None,  # a start to fit from, colours and all, instead of fit_start's
    callback=None,  # callback(step, psnr [B]): each image's PSNR (unclamped render) at that full-resolution step
    callback_every: int = 100,
) -> tuple[Splats, FitStats]:
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    _check_pixels(images)
    if init is not None:
        init.check_layout("init")
        init.expect_units("pixels", "fit_batch's init")
        if init.xy.shape[0] != images.shape[0] or init.xy.device != images.device:
            raise ValueError(f"init must hold one splat set per image on {images.device}, got "
                             f"{init.xy.shape[0]} on {init.xy.device} for {images.shape[0]} images")
    if cfg.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"fit.parameterization must be one of {sorted(PARAMETERIZATIONS)}, got "
                         f"{cfg.parameterization!r}")
    how = PARAMETERIZATIONS[cfg.parameterization]
    B, _, H, W = images.shape
    K = len(cfg.coarse_iterations)
    if 2**K > min(H, W):
        raise ValueError(f"fit.coarse_iterations: {K} levels average the images down {2**K}x, more than "
                         f"{H}x{W} images allow")
    images = images.float().contiguous()
    start = init if init is not None else fit_start(images, cfg)
    size = torch.tensor([W, H], dtype=torch.float32, device=images.device)
    xy, diagonal, shear = (t.requires_grad_(True) for t in how.to_params(start, size))
    rgb = start.rgb.detach().clone().requires_grad_(True)
    mask = start.mask.clone()
    n_init = mask.sum(1)

    # Coarse-to-fine: the run's first steps render the splats scaled down f x against the images averaged down
    # f x (a coarse pixel averages f x f finer ones, so its centre is at 1/f of their coordinates, and a
    # Gaussian's peak weight is 1 at any size: the colours stay). One Adam and one beta2 span every step, so
    # the full-resolution steps go on from the coarse ones' moments; so does one cosine decay, unless
    # fit.coarse_restart starts a second one at full resolution. Pruning, its L1 penalty and fit.target_psnr
    # are for full resolution: they wait for it.
    factors = coarse_factors(cfg.coarse_iterations)
    averaged = {f: F.avg_pool2d(images, f) for f in set(factors)}
    coarse = len(factors)
    total = coarse + cfg.iterations

    opt = torch.optim.Adam(
        [
            {"params": [xy], "lr": cfg.lr.xy},
            {"params": [diagonal], "lr": cfg.lr.diagonal},
            {"params": [shear], "lr": cfg.lr.shear},
            {"params": [rgb], "lr": cfg.lr.rgb},
        ],
        betas=(cfg.lr.beta1, adam_beta2(cfg.lr.beta2, total)),
    )
    sched = cosine_schedule(opt, total, end=cfg.lr.decay_to, restart=coarse if cfg.coarse_restart else 0)
    prune_steps = {coarse + round(a * cfg.iterations) for a in cfg.prune.at}

    def current() -> Splats:
        return Splats(*how.to_geometry(xy, diagonal, shear, size), rgb, mask)

    # Fit to quality: an image that reaches fit.target_psnr keeps the splats that reached it and leaves the
    # work (its rows leave every tensor), so the batch shrinks as its images finish.
    active = torch.arange(B, device=images.device)  # the batch's images still fitting, in the rows' order
    done = Splats(start.xy.new_zeros(B, start.xy.shape[1], 2), start.chol.new_ones(B, start.xy.shape[1], 3),
                  start.rgb.new_zeros(start.rgb.shape), mask.clone())
    used = torch.full((B,), cfg.iterations, device=images.device)
    psnr_now = images.new_zeros(B)
    target = cfg.target_psnr
    work = images
    for step in range(total + 1):  # the last pass only measures
        if step in prune_steps and cfg.prune.threshold > 0 and step < total:
            with torch.no_grad():
                mask &= luminance(rgb) >= cfg.prune.threshold
                if cfg.solve_colours:  # the survivors take over the pruned ones' share of the image
                    rgb.copy_(colours_for(current(), work, cfg))
        splats = current()
        if step < coarse:
            f = factors[step]
            scaled = Splats(splats.xy / f, splats.chol / f, splats.rgb, splats.mask)
            loss = _render_loss(scaled, averaged[f], cfg, l1=False)[0]
            finished = torch.zeros_like(active, dtype=torch.bool)
        else:
            last = step == total
            with torch.set_grad_enabled(not last):
                loss, mse = _render_loss(splats, work, cfg)
            psnr_now[active] = (-10 * mse.log10()).clamp(max=PSNR_MAX)
            if last:
                finished = torch.ones_like(mse, dtype=torch.bool)
            else:
                finished = psnr_now[active] >= (target if target is not None else math.inf)
            if finished.any():
                for name in ("xy", "chol", "rgb", "mask"):
                    getattr(done, name)[active[finished]] = getattr(splats, name).detach()[finished]
                used[active[finished]] = step - coarse
            if callback is not None and ((step - coarse) % callback_every == 0 or last):
                callback(step - coarse, psnr_now.clone())
            if last or finished.all():
                break
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        frame = splats.chol.detach()
        if finished.any():
            keep = ~finished
            xy, diagonal, shear, rgb = _keep_rows(opt, keep)
            active, mask, work, frame = active[keep], mask[keep], work[keep], frame[keep]
        if how.steps_in_axes:  # Adam sees the centre in this step's axes, and its step goes back to pixels
            xy.grad = axes_to_pixels(frame, xy.grad, transpose=True)
            before = xy.detach().clone()
        opt.step()
        if how.steps_in_axes:
            with torch.no_grad():
                xy.copy_(before + axes_to_pixels(frame, xy - before))
        sched.step()

    with torch.no_grad():
        psnr = psnr_per_image(rasterize(done, H, W, backend=cfg.backend), images)
    return done, FitStats(psnr=psnr, n_init=n_init, n_final=done.mask.sum(1), iterations=used)


def colours_for(splats: Splats, images: Tensor, cfg: FitConfig) -> Tensor:  # images [B, 3, H, W] -> [B, N, 3]
    """The least-squares colours for the splats' geometry, solved as fit.solve_steps and fit.solve_ridge say."""
    return solve_colours(splats, images, steps=cfg.solve_steps, ridge=cfg.solve_ridge, backend=cfg.backend)


def fit_images(
    images: Tensor,  # [B, 3, H, W] float in [0, 1]
    cfg: FitConfig,
    **progress,  # fit_batch's callback and callback_every
) -> tuple[Splats, FitStats]:
    """The fit: fit_batch, then, for the quantized record, the refinement through what it stores. stats.psnr is
    that of what is stored, the record's rows (stats.iterations stays the fit's own)."""
    splats, stats = fit_batch(images, cfg, **progress)
    H, W = images.shape[-2:]
    if cfg.record == "quantized":
        splats = refine_quantized(images, splats, cfg.refine_iterations, cfg.refine_lr, cfg.backend)
        with torch.no_grad():
            stats.psnr = psnr_per_image(quantized_render(splats, H, W, cfg.backend), images.float())
        return splats, stats
    # float16 rows hold a centre to 2^-11 of the image side (0.1 px at 224): at thousands of small splats that
    # costs dBs (2.1 at 4900 splats on the embedded photos), which the float32 render's PSNR would not show
    record = RECORDS[cfg.record]
    stored = [record.decode(record.encode(rows)).astype("float32") for rows in splats.to_rows(H, W)]
    with torch.no_grad():
        stats.psnr = psnr_per_image(rasterize(Splats.from_rows(stored, H, W).to(images.device), H, W,
                                              backend=cfg.backend), images.float())
    return splats, stats
