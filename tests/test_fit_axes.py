"""fit.parameterization=axes, the default: each centre stepped along its own Gaussian's axes, against Adam
written out by hand over the dense reference's gradients."""
import math
from dataclasses import replace

import pytest
import torch
from conftest import shipped_fit_config
from helpers import smooth_photos

from gs_lightning.fit.config import PruneConfig
from gs_lightning.fit.fitter import fit_batch
from gs_lightning.fit.parameterization import axes_to_pixels
from gs_lightning.render import CUTOFF, render_reference
from gs_lightning.splats import Splats


def cholesky_matrix(chol: torch.Tensor) -> torch.Tensor:  # [..., 3] l11, l21, l22 -> [..., 2, 2] L
    zero = torch.zeros_like(chol[..., 0])
    return torch.stack([torch.stack([chol[..., 0], zero], -1), torch.stack([chol[..., 1], chol[..., 2]], -1)], -2)


def test_axes_to_pixels_is_the_cholesky_factor_and_its_transpose():
    chol = torch.tensor([[[2.0, -0.5, 0.3], [1.0, 3.0, 4.0]]])
    v = torch.tensor([[[1.0, 2.0], [-1.5, 0.25]]])
    L = cholesky_matrix(chol)
    torch.testing.assert_close(axes_to_pixels(chol, v), (L @ v[..., None])[..., 0])
    torch.testing.assert_close(axes_to_pixels(chol, v, transpose=True), (L.transpose(-1, -2) @ v[..., None])[..., 0])
    assert axes_to_pixels(chol, v)[0, 0].tolist() == pytest.approx([2.0, 0.1])  # (l11 x, l21 x + l22 y) by hand


def turned_start() -> tuple[torch.Tensor, Splats]:
    """A 14x18 image and four turned, stretched Gaussians off their best places, so every gradient is large."""
    image = smooth_photos([3], 14, 18)
    xy = torch.tensor([[[4.0, 3.5], [13.0, 4.0], [5.5, 10.0], [12.5, 9.5]]])
    chol = torch.tensor([[[3.0, 1.5, 1.2], [1.4, -2.0, 2.5], [2.2, 0.8, 0.9], [1.8, -1.1, 2.8]]])
    rgb = torch.tensor([[[0.6, 0.3, 0.2], [0.2, 0.5, 0.7], [0.4, 0.4, 0.1], [0.3, 0.6, 0.5]]])
    return image, Splats(xy, chol, rgb, torch.ones(1, 4, dtype=torch.bool))


def adam_in_axes_by_hand(image: torch.Tensor, start: Splats, T: int, lr, beta1: float, beta2: float) -> torch.Tensor:
    """T steps written out: Adam on log l11, log l22, l21 and rgb as they are; on each centre, Adam on L^T g
    (g: the MSE's gradient in pixels) and the step taken as L s, L from the step's own geometry."""
    _, _, H, W = image.shape
    params = [start.xy.clone(), start.chol[..., [0, 2]].log(), start.chol[..., 1:2].clone(), start.rgb.clone()]
    rates = [lr.xy, lr.diagonal, lr.shear, lr.rgb]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t in range(T):
        p = [q.clone().requires_grad_(True) for q in params]
        chol = torch.stack([p[1][..., 0].exp(), p[2][..., 0], p[1][..., 1].exp()], -1)
        mse = (render_reference(Splats(p[0], chol, p[3], start.mask), H, W, cutoff=CUTOFF) - image).square().mean()
        grads = list(torch.autograd.grad(mse, p))
        L = cholesky_matrix(chol.detach())
        grads[0] = (L.transpose(-1, -2) @ grads[0][..., None])[..., 0]
        factor = lr.decay_to + (1 - lr.decay_to) * 0.5 * (1 + math.cos(math.pi * t / T))
        for i, g in enumerate(grads):
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
            step = (m[i] / (1 - beta1 ** (t + 1))) / ((v[i] / (1 - beta2 ** (t + 1))).sqrt() + 1e-8)
            if i == 0:
                step = (L @ step[..., None])[..., 0]
            params[i] = params[i] - rates[i] * factor * step
    return params[0]


def test_axes_steps_each_centre_as_adam_on_l_transpose_g_taken_as_l_times_its_step():
    image, start = turned_start()
    T = 8
    cfg = shipped_fit_config(num_splats=0, iterations=T, solve_colours=False, backend="torch")
    assert cfg.parameterization == "axes"  # the default
    end, _ = fit_batch(image, cfg, init=start)
    want = adam_in_axes_by_hand(image, start, T, cfg.lr, cfg.lr.beta1, 0.85)  # beta2 null at 8 steps: 0.85
    torch.testing.assert_close(end.xy, want, atol=1e-4, rtol=0)
    # the oracle tells the frame from pixel steps: log_scale at the same rate lands elsewhere
    pixels, _ = fit_batch(image, replace(cfg, parameterization="log_scale"), init=start)
    assert (pixels.xy - want).abs().max() > 0.05


def test_a_round_gaussian_of_sigma_s_steps_as_pixel_steps_at_s_times_the_rate():
    """With L = s I (the shape held still) Adam sees s g, whose normalised step is g's, and takes it s times
    over: the axes fit at rate r is log_scale's at rate s r, step for step."""
    image, start = turned_start()
    s = 3.0
    start = Splats(start.xy, torch.tensor([s, 0.0, s]).expand(1, 4, 3).contiguous(), start.rgb, start.mask)
    cfg = shipped_fit_config(num_splats=0, iterations=20, solve_colours=False)
    cfg = replace(cfg, lr=replace(cfg.lr, diagonal=1e-12, shear=1e-12))
    axes, _ = fit_batch(image, cfg, init=start)
    pixels, _ = fit_batch(image, replace(cfg, parameterization="log_scale", lr=replace(cfg.lr, xy=s * cfg.lr.xy)),
                          init=start)
    torch.testing.assert_close(axes.xy, pixels.xy, atol=1e-4, rtol=0)
    assert (axes.xy - start.xy).abs().max() > 1.0  # the centres did move


def test_under_axes_an_image_leaving_the_batch_is_fitted_as_if_alone():
    """fit.target_psnr drops finished images from the work mid-run: the frames must leave with them, and the
    fit repeats to the bit."""
    imgs = smooth_photos((0, 1, 2), 32)
    for b, contrast in enumerate((0.25, 0.5, 1.0)):  # the first image leaves first: the rows after it shift
        imgs[b] = imgs[b] * contrast + (1 - contrast) / 2
    cfg = shipped_fit_config(num_splats=36, iterations=60, target_psnr=36.0)
    both, st = fit_batch(imgs, cfg)
    assert len(set(st.iterations.tolist())) == 3, st.iterations  # the images stop at different steps
    assert st.iterations[0] < st.iterations[1:].min()  # the first row leaves first: the rows after it move up
    again, _ = fit_batch(imgs, cfg)
    assert torch.equal(both.xy, again.xy) and torch.equal(both.chol, again.chol)
    for b in range(3):
        alone, st1 = fit_batch(imgs[b:b + 1], cfg)
        assert st1.iterations.item() == st.iterations[b].item()
        torch.testing.assert_close(both.xy[b], alone.xy[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both.chol[b], alone.chol[0], rtol=1e-5, atol=1e-5)
