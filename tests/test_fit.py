"""Fitting: init against hand-computed layouts, fit_batch properties, and the fit command end to end."""
import json
import math
import os
import re
import signal
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_FIT
from helpers import image_bytes, random_splats, smooth_photo, smooth_photos

from gs_lightning.errors import UserError
from gs_lightning.fit.config import FitConfig, PruneConfig
from gs_lightning.data.shards import resize_center_crop, write_image_shard
from gs_lightning.fit.fitter import fit_batch, fit_images, solve_colours
from gs_lightning.fit.init import (_cell_means, adaptive_init, detail_density, grid_rows, oriented_init, random_init,
                                   structured_init)
from gs_lightning.fit.parameterization import PARAMETERIZATIONS
from gs_lightning.render import CUTOFF, cuda_backend_available, rasterize, render_reference
from gs_lightning.splats import Splats

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("n, h, w", [(400, 224, 224), (37, 40, 70), (1, 10, 10), (1000, 50, 300), (7, 300, 20)])
def test_grid_rows_cover_n_cells_in_the_image_aspect(n, h, w):
    rows = grid_rows(n, h, w)
    assert sum(rows) == n and min(rows) >= 1 and max(rows) - min(rows) <= 1
    # cells are near square: rows / mean cells per row ~ h / w, within one row of rounding
    assert abs(len(rows) - (n * h / w) ** 0.5) <= 1 or len(rows) in (1, n)


def test_structured_init_on_a_2x2_grid_by_hand():
    img = torch.zeros(1, 3, 20, 20)
    img[:, 0, :, :10] = 1.0  # left half red
    img[:, 2, :, 10:] = 0.5  # right half half-blue
    s = structured_init(img, 4)
    torch.testing.assert_close(s.xy[0], torch.tensor([[5.0, 5.0], [15.0, 5.0], [5.0, 15.0], [15.0, 15.0]]))
    torch.testing.assert_close(s.chol[0], torch.tensor([[5.0, 0.0, 5.0]] * 4))  # sigma = half the 10 px cell
    # colours: cell means over the grid's average weight, 2 pi sigma^2 / cell area = pi / 2 here
    density = 2 * np.pi * 25 / 100
    want = torch.tensor([[1.0, 0, 0], [0, 0, 0.5], [1.0, 0, 0], [0, 0, 0.5]]) / density
    torch.testing.assert_close(s.rgb[0], want.float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n, h, w", [(400, 64, 64), (150, 48, 80)])
def test_structured_init_reproduces_a_flat_image(n, h, w):
    """On a flat image the initial render averages to the colour away from the border (the normalisation);
    a lattice of Gaussians with sigma = half the shorter cell side ripples by ~5% between cell centres and
    corners on square cells, ~7% on the 4.8 x 5.3 px cells of the non-square case."""
    img = torch.full((1, 3, h, w), 0.6)
    s = structured_init(img, n)
    out = render_reference(s, h, w)
    inner = out[..., h // 4 : -h // 4, w // 4 : -w // 4]
    assert (inner.mean() - 0.6).abs() < 0.006
    assert (inner - 0.6).abs().max() < 0.08 * 0.6


def photo(h: int, w: int, seed: int = 0) -> torch.Tensor:  # [1, 3, h, w] in [0, 1]
    return smooth_photos([seed], h, w)


@pytest.mark.parametrize("n, h, w", [(64, 32, 32), (37, 40, 70), (7, 300, 20), (1, 10, 10)])
def test_adaptive_init_on_a_flat_image_is_the_structured_grid(n, h, w):
    """With no detail anywhere the density is uniform, so the cells are the structured grid's."""
    img = torch.full((1, 3, h, w), 0.4)
    a, s = adaptive_init(img, n, floor=0.3, scale=1.0), structured_init(img, n)
    torch.testing.assert_close(a.xy, s.xy, atol=1e-3, rtol=0)
    assert a.mask.all() and a.xy.shape == (1, n, 2)
    cell = torch.minimum(a.chol[..., 0], a.chol[..., 2])  # anisotropic: the half sides; structured: the shorter
    torch.testing.assert_close(cell, s.chol[..., 0], atol=1e-3, rtol=0)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_adaptive_init_puts_gaussians_where_the_detail_is(axis):
    """A flat half and a textured half, side by side or one above the other: rows and columns both adapt."""
    img = photo(48, 96) if axis == "x" else photo(96, 48)
    flat = (..., slice(None), slice(0, 48)) if axis == "x" else (..., slice(0, 48), slice(None))
    img[flat] = img[flat].mean(dim=(2, 3), keepdim=True)
    s = adaptive_init(img, 200, floor=0.3, scale=1.0)
    textured = (s.xy[0, :, 0 if axis == "x" else 1] >= 48).sum().item()
    assert textured > 0.65 * 200, textured  # the uniform grid would put half there
    assert ((s.xy >= 0) & (s.xy <= torch.tensor([img.shape[3], img.shape[2]], dtype=torch.float32))).all()
    s.check()


def test_adaptive_cells_hold_equal_shares_of_the_detail():
    """By brute force over the pixels: the rows of cells split the density's y-marginal into equal shares, and
    each row's cells split the density over that row's band (pixel rows cut by fractions) into equal shares."""
    h, w, n, floor = 30, 24, 20, 0.3
    img = photo(h, w, seed=4)
    img[..., :14, :] = img[..., :14, :].mean(dim=(2, 3), keepdim=True)  # a flat top: rows of unequal height
    rows, cols = len(grid_rows(n, h, w)), grid_rows(n, h, w)[0]
    s = adaptive_init(img, n, floor=floor, scale=1.0)
    p = detail_density(img, n, floor)[0].double()  # [H, W]
    centres = s.xy[0].double().reshape(rows, cols, 2)

    def edges(mid: torch.Tensor) -> list[float]:  # cells tile from 0: each centre halves its cell
        e = [0.0]
        for c in mid.tolist():
            e.append(2 * c - e[-1])
        return e

    def share(profile: torch.Tensor, t: float) -> float:  # the integral of a per-pixel profile from 0 to t
        i = min(int(t), len(profile) - 1)
        return float(profile[:i].sum() + (t - i) * profile[i])

    y = edges(centres[:, 0, 1])
    assert y[-1] == pytest.approx(h, abs=1e-3)
    marginal = p.sum(1)
    for r in range(rows):
        assert share(marginal, y[r]) == pytest.approx(r / rows * float(marginal.sum()), rel=1e-4, abs=1e-3)
        weight = torch.tensor([max(0.0, min(i + 1, y[r + 1]) - max(i, y[r])) for i in range(h)], dtype=p.dtype)
        band = (weight[:, None] * p).sum(0)  # [W]: the density over the band, column by column
        x = edges(centres[r, :, 0])
        for k in range(cols + 1):
            assert share(band, x[k]) == pytest.approx(k / cols * float(band.sum()), rel=1e-4, abs=1e-3), (r, k)


def test_the_detail_density_has_mean_one_and_its_floor():
    """Normalised to mean 1, then mixed with the uniform floor: the mean stays 1, no pixel is under the floor,
    and a flat image is uniform."""
    img = photo(40, 56, seed=2)
    p = detail_density(img, 50, 0.3)
    torch.testing.assert_close(p.mean(dim=(1, 2)), torch.ones(1))
    assert p.min() >= 0.3 - 1e-6 and p.max() > 1.1
    for floor in (0.3, 0.0):
        flat = detail_density(torch.full((1, 3, 20, 20), 0.4), 50, floor)
        torch.testing.assert_close(flat, torch.ones_like(flat))


@pytest.mark.parametrize("init", [adaptive_init, lambda x, n, **kw: oriented_init(x, n, max_aspect=4.0, **kw)],
                         ids=["adaptive", "oriented"])
def test_a_blank_image_gets_the_even_cells_at_any_floor(init):
    """A blank image (a placeholder of web data) has no detail to follow: with no uniform floor
    (fit.adaptive_floor=0) its cells are the even ones a floor gives it, not 0 / 0, and the photo beside it keeps
    its own."""
    images = torch.cat([torch.zeros(1, 3, 40, 56), photo(40, 56, seed=4)])
    bare, floored = init(images, 50, floor=0.0, scale=1.0), init(images, 50, floor=0.3, scale=1.0)
    torch.testing.assert_close(bare.xy[0], floored.xy[0])
    torch.testing.assert_close(bare.chol[0], floored.chol[0])
    assert torch.isfinite(bare.xy).all() and not torch.allclose(bare.xy[1], floored.xy[1])


def test_cell_means_clamp_boxes_to_the_image():
    """A box past an edge takes the pixels at that edge: the last column, the first row."""
    img = photo(12, 16, seed=1)
    boxes = torch.tensor([[17.0, 0.0, 20.0, 12.0], [0.0, -5.0, 16.0, -2.0]])
    means = _cell_means(img, boxes)[0]
    torch.testing.assert_close(means[0], img[0, :, :, -1].mean(1))
    torch.testing.assert_close(means[1], img[0, :, 0, :].mean(1))


@pytest.mark.parametrize("init", [lambda x: adaptive_init(x, 50, floor=0.3, scale=1.0),
                                  lambda x: oriented_init(x, 50, floor=0.3, scale=1.0, max_aspect=4.0)],
                         ids=["adaptive", "oriented"])
def test_adaptive_init_is_deterministic_and_each_image_its_own(init):
    imgs = torch.cat([photo(40, 56, seed=i) for i in range(3)])
    imgs[2] = imgs[2] * 0.1 + 0.45  # a faint image beside strong ones: its own share of its own gradients
    one, two, alone = (init(x) for x in (imgs, imgs, imgs[2:3]))
    for name in ("xy", "chol", "rgb"):
        assert torch.equal(getattr(one, name), getattr(two, name))
        assert torch.equal(getattr(one, name)[2:3], getattr(alone, name)), name  # to the bit: fits amplify ulps
    assert not torch.allclose(one.xy[0], one.xy[1])  # it does look at the image


def test_oriented_init_keeps_the_adaptive_cells_and_each_gaussians_area():
    """Only the shapes differ: the same centres and colours, and sigma_1 sigma_2 = det L is the adaptive one's."""
    img = photo(40, 56, seed=3)
    o, a = oriented_init(img, 60, floor=0.3, scale=0.8, max_aspect=4.0), adaptive_init(img, 60, floor=0.3, scale=0.8)
    torch.testing.assert_close(o.xy, a.xy, rtol=0, atol=0)
    torch.testing.assert_close(o.chol[..., 0] * o.chol[..., 2], a.chol[..., 0] * a.chol[..., 2])
    torch.testing.assert_close(o.rgb, a.rgb)
    o.check()
    assert (o.chol[..., 1].abs() > 1e-3).any()  # some are turned


def test_oriented_init_lies_along_a_straight_edge():
    """A soft edge at 30 degrees: the Gaussians of the cells it crosses point along it, stretched to the cap
    (their gradients have one direction, so the tensor's smaller eigenvalue is ~0); cells it misses are circles."""
    h = w = 64
    phi = math.radians(30)
    along, normal = torch.tensor([math.cos(phi), math.sin(phi)]), torch.tensor([-math.sin(phi), math.cos(phi)])
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    t = ((torch.stack([xs, ys], -1) - torch.tensor([w / 2, h / 2])) @ normal)  # [h, w] signed distance
    img = (0.5 + 0.5 * torch.tanh(t / 4)).expand(1, 3, h, w).contiguous()
    s = oriented_init(img, 64, floor=0.3, scale=1.0, max_aspect=3.0)
    L = torch.zeros(64, 2, 2)
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = s.chol[0].unbind(-1)
    var, vec = torch.linalg.eigh(L @ L.transpose(1, 2))  # ascending: [:, 1] the long axis
    aspect = (var[:, 1] / var[:, 0]).sqrt()
    dist = ((s.xy[0] - torch.tensor([w / 2, h / 2])) @ normal).abs()
    inner = (s.xy[0] > 8).all(-1) & (s.xy[0] < w - 8).all(-1)  # away from the border's zero differences
    on = inner & (dist < 2)
    off = dist > 20
    assert on.sum() >= 3 and off.sum() >= 4
    cosine = (vec[on, :, 1] @ along).abs()
    assert (cosine > math.cos(math.radians(3))).all(), cosine
    torch.testing.assert_close(aspect[on], torch.full((int(on.sum()),), 3.0), rtol=1e-3, atol=0)
    torch.testing.assert_close(aspect[off], torch.ones(int(off.sum())), rtol=1e-2, atol=0)


def test_oriented_init_against_the_structure_tensor_by_brute_force():
    """Each Gaussian's Sigma, built from torch.linalg.eigh of its cell's mean gradient outer product summed
    over the pixels one by one: the larger eigenvalue's eigenvector gets variance area / aspect, the other
    area * aspect, with aspect = (larger + e) / (smaller + e) capped, e = 1e-4 + 5% of the mean larger one."""
    h, w, n, scale, cap = 30, 24, 20, 0.8, 3.0
    img = photo(h, w, seed=5)
    s = oriented_init(img, n, floor=0.3, scale=scale, max_aspect=cap)
    cells = adaptive_init(img, n, floor=0.3, scale=1.0)  # its sigmas are the half sides
    x = img[0].double()
    dx, dy = torch.zeros_like(x), torch.zeros_like(x)
    dx[:, :, :-1], dy[:, :-1, :] = x[:, :, 1:] - x[:, :, :-1], x[:, 1:, :] - x[:, :-1, :]
    tensors, areas = [], []
    for (cx, cy), (hx, _, hy) in zip(cells.xy[0].tolist(), cells.chol[0].tolist()):
        x0, x1 = round(cx - hx), max(round(cx + hx), round(cx - hx) + 1)  # the cell's pixels, as _cell_means
        y0, y1 = round(cy - hy), max(round(cy + hy), round(cy - hy) + 1)
        J = torch.zeros(2, 2, dtype=torch.float64)
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                g = torch.stack([dx[:, yy, xx], dy[:, yy, xx]], -1)  # [3 channels, 2]
                J += g.T @ g
        tensors.append(J / ((x1 - x0) * (y1 - y0)))
        areas.append(scale * hx * scale * hy)
    val, vec = torch.linalg.eigh(torch.stack(tensors))  # ascending
    e = 1e-4 + 0.05 * val[:, 1].mean()
    aspect = ((val[:, 1] + e) / (val[:, 0] + e)).clamp(max=cap)
    area = torch.tensor(areas, dtype=torch.float64)
    var = torch.stack([area * aspect, area / aspect], -1)  # along the smaller eigenvalue's vector, the larger's
    want = vec @ torch.diag_embed(var) @ vec.transpose(1, 2)
    L = torch.zeros(n, 2, 2, dtype=torch.float64)
    L[:, 0, 0], L[:, 1, 0], L[:, 1, 1] = s.chol[0].double().unbind(-1)
    torch.testing.assert_close(L @ L.transpose(1, 2), want, rtol=1e-4, atol=1e-4)
    assert (aspect > 1.5).sum() >= 3  # the photo does turn some


def test_least_squares_colours_equal_a_dense_solve():
    """solve_colours (conjugate gradients through the rasterizer) against torch.linalg.lstsq on the design
    matrix built column by column from the dense reference: the render of Gaussian i alone at colour 1."""
    B, N, H, W = 2, 12, 14, 18
    splats = random_splats(B, N, H, W, scale=(1.0, 4.0), requires_grad=False, seed=3)
    images = torch.rand(B, 3, H, W)
    ridge = 0.01
    got = solve_colours(splats, images, steps=60, ridge=ridge)
    for b in range(B):
        one = Splats(splats.xy[b:b + 1].expand(N, N, 2), splats.chol[b:b + 1].expand(N, N, 3),
                     torch.eye(N)[..., None].expand(N, N, 3), torch.ones(N, N, dtype=torch.bool))
        A = render_reference(one, H, W, cutoff=CUTOFF)[:, 0].reshape(N, H * W).T.double()  # [HW, N]
        # the ridge as extra rows: |A c - y|^2 + ridge * sum_i pi l11 l22 c_i^2
        d = (ridge * torch.pi * splats.chol[b, :, 0] * splats.chol[b, :, 2]).sqrt().double()
        y = images[b].reshape(3, H * W).T.double()  # [HW, 3]
        want = torch.linalg.lstsq(torch.cat([A, torch.diag(d)]), torch.cat([y, torch.zeros(N, 3).double()])).solution
        torch.testing.assert_close(got[b].double(), want, atol=2e-4, rtol=1e-3)


def test_the_fit_solves_colours_with_its_configured_ridge(fit_cfg):
    """fit.solve_ridge reaches the solve: with steps too small to move anything, the fit's colours are
    solve_colours' at that ridge (a large one, so that it shows), not at the default's."""
    img = photo(24, 24)
    cfg = fit_cfg(num_splats=20, iterations=1, solve_ridge=3.0, solve_steps=30, init="structured")
    cfg.lr.xy = cfg.lr.diagonal = cfg.lr.shear = cfg.lr.rgb = 1e-12
    fitted, _ = fit_batch(img, cfg)
    start = structured_init(img, 20)
    torch.testing.assert_close(fitted.rgb, solve_colours(start, img, steps=30, ridge=3.0), atol=1e-5, rtol=1e-4)
    assert not torch.allclose(fitted.rgb, solve_colours(start, img, steps=30, ridge=FitConfig().solve_ridge),
                              atol=1e-3)


def test_least_squares_colours_beat_the_init_and_leave_padding_alone():
    img = photo(32, 32)
    s = structured_init(img, 36)
    s.mask[0, :4] = False
    c = solve_colours(s, img, steps=20, ridge=FitConfig().solve_ridge)
    assert (c[0, :4] == 0).all()
    err = lambda rgb: (rasterize(Splats(s.xy, s.chol, rgb, s.mask), 32, 32) - img).square().mean()  # noqa: E731
    assert err(c) < 0.8 * err(s.rgb)


def test_fit_recovers_an_image_made_of_gaussians(fit_cfg):
    """An image that *is* a splat set is fitted to high PSNR by as many splats."""
    truth = Splats(
        torch.tensor([[[8.0, 8.0], [24.0, 10.0], [10.0, 22.0], [22.0, 24.0]]]),
        torch.tensor([[[4.0, 0.0, 4.0], [5.0, 1.0, 3.0], [3.0, -1.0, 4.0], [4.0, 0.5, 5.0]]]),
        torch.tensor([[[0.8, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.3, 0.9], [0.6, 0.6, 0.2]]]),
        torch.ones(1, 4, dtype=torch.bool),
    )
    image = rasterize(truth, 32, 32).clamp(0, 1)
    _, stats = fit_batch(image, fit_cfg(num_splats=16, iterations=400))
    assert stats.psnr.item() > 35


def test_an_all_black_image_scores_a_finite_psnr(fit_cfg):
    """A blank image (DataComp has them) is rendered exactly: its PSNR is capped, not inf, which JSON cannot hold
    and which would make a folder's mean infinite; the photo beside it in the batch is scored as usual."""
    from gs_lightning.fit.fitter import PSNR_MAX, psnr_per_image

    images = torch.cat([torch.zeros(1, 3, 32, 32), smooth_photos((0,), 32)])
    splats, stats = fit_batch(images, fit_cfg(num_splats=16, iterations=20))
    assert stats.psnr[0].item() == PSNR_MAX and 10 < stats.psnr[1].item() < PSNR_MAX
    json.dumps(stats.psnr.tolist(), allow_nan=False)  # raises on inf
    assert psnr_per_image(rasterize(splats, 32, 32)[1:], images[1:]).item() == pytest.approx(stats.psnr[1].item())


def test_batched_fit_is_the_same_as_fitting_each_image_alone(fit_cfg):
    imgs = smooth_photos((0, 1), 32)
    cfg = fit_cfg(num_splats=36, iterations=60, prune=PruneConfig(l1_weight=0.01, threshold=0.1, at=[0.5]))
    both, st = fit_batch(imgs, cfg)
    alone, st1 = fit_batch(imgs[1:], cfg)
    torch.testing.assert_close(both.xy[1], alone.xy[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(both.rgb[1], alone.rgb[0], rtol=1e-5, atol=1e-5)
    assert torch.equal(both.mask[1], alone.mask[0])
    torch.testing.assert_close(st.psnr[1], st1.psnr[0], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and cuda_backend_available()),
                    reason="needs a CUDA device and a CUDA build")
def test_a_fit_on_cuda_reaches_the_psnr_of_the_cpu_fit(fit_cfg):
    """fit_batch on CUDA tensors, pruning and colour solves included (its loss is rasterize + the mean there: the
    fused l2_loss is the CPU's), fits each image to the CPU fit's PSNR: the same maths, summed in another order."""
    imgs = smooth_photos(range(4), 64)
    cfg = fit_cfg(num_splats=64, iterations=100, prune=PruneConfig())
    _, cpu = fit_batch(imgs, cfg)
    splats, gpu = fit_batch(imgs.cuda(), cfg)
    assert splats.xy.is_cuda and gpu.psnr.is_cuda
    torch.testing.assert_close(gpu.psnr.cpu(), cpu.psnr, rtol=0, atol=0.2)
    assert torch.equal(gpu.n_init.cpu(), cpu.n_init)


def test_fit_to_quality_stops_each_image_as_if_it_were_fitted_alone(fit_cfg):
    """Images reach fit.target_psnr at different steps; each stops at the first step its PSNR reaches the
    target, keeps the splats that reached it, and is fitted exactly as it would be alone."""
    imgs = torch.cat([photo(32, 32, seed=i) for i in (0, 1, 2)])
    for b, contrast in enumerate((1.0, 0.5, 0.25)):  # lower contrast, smaller errors: the target comes sooner
        imgs[b] = imgs[b] * contrast + (1 - contrast) / 2
    cfg = fit_cfg(num_splats=36, iterations=60, target_psnr=41.0)
    seen = []
    both, st = fit_batch(imgs, cfg, callback=lambda step, psnr: seen.append(psnr), callback_every=1)
    used = st.iterations.tolist()
    assert len(set(used)) == 3 and min(used) < 60, used  # the test needs images stopping at different steps
    trace = torch.stack(seen)  # [steps + 1, B]
    for b, k in enumerate(used):
        alone, st1 = fit_batch(imgs[b:b + 1], cfg)
        assert st1.iterations.item() == k
        torch.testing.assert_close(both.xy[b], alone.xy[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(both.rgb[b], alone.rgb[0], rtol=1e-5, atol=1e-5)
        if k < 60:
            assert trace[k, b] >= 41.0 > trace[k - 1, b]
            assert (trace[k:, b] == trace[k, b]).all()  # frozen: it leaves the work
            assert st.psnr[b] >= 41.0  # the clamped render is no worse


def test_reported_psnr_is_the_psnr_of_the_returned_splats(fit_cfg):
    img = smooth_photos([0], 24, 40)
    splats, stats = fit_batch(img, fit_cfg(num_splats=30, iterations=50))
    mse = (rasterize(splats, 24, 40).clamp(0, 1) - img).square().mean()
    assert stats.psnr.item() == pytest.approx(-10 * torch.log10(mse).item(), abs=1e-3)


@pytest.mark.parametrize("how", ["axes", "log_scale", "gaussianimage"])
def test_parameterizations_start_from_the_init_they_are_given(how):
    img = torch.rand(2, 3, 30, 50)
    size = torch.tensor([50.0, 30.0])
    for start in (structured_init(img, 40), random_init(img, 40, generator=torch.Generator().manual_seed(1))):
        p = PARAMETERIZATIONS[how]
        xy, chol = p.to_geometry(*p.to_params(start, size), size)
        torch.testing.assert_close(xy, start.xy, atol=1e-3, rtol=0)
        torch.testing.assert_close(chol, start.chol)


def test_gaussianimage_factors_through_zero_keep_the_covariance():
    """Raw factors may step through zero: the folded, positive-diagonal L has the same Sigma = L L^T."""
    raw = torch.tensor([[[-2.0, 0.7, 1.5], [3.0, -1.0, -0.5], [-1.0, 2.0, -4.0], [0.0, 1.0, 2.0]]])  # l11, l21, l22
    _, chol = PARAMETERIZATIONS["gaussianimage"].to_geometry(torch.zeros(1, 4, 2), raw[..., [0, 2]], raw[..., 1:2],
                                                             torch.tensor([8.0, 8.0]))

    def sigma(c):  # [..., 3] -> [..., 2, 2]
        L = torch.stack([torch.stack([c[..., 0], torch.zeros_like(c[..., 0])], -1), c[..., 1:3]], -2)
        return L @ L.transpose(-1, -2)

    torch.testing.assert_close(sigma(chol[:, :3]), sigma(raw[:, :3]))
    assert chol[0, 3, 0] == 1e-3  # an exact zero is floored, so the rasterizer's l11 > 0 check holds
    Splats(torch.full((1, 4, 2), 4.0), chol, torch.ones(1, 4, 3), torch.ones(1, 4, dtype=torch.bool)).check()


def test_under_gaussianimage_random_gaussians_keep_their_size_and_under_ours_they_grow(fit_cfg):
    """The mechanism behind the paper's wide random-vs-structured gap (benchmarks/fit.py shows the PSNR):
    GaussianImage's raw factors at lr 1e-3 move ~1e-3 pixel per step, our log scales take relative steps."""
    img = smooth_photos([0], 64)
    start = random_init(img, 16, generator=torch.Generator().manual_seed(0))  # 0.5-1.5 pixel Gaussians
    growth = {}
    for names in ([], ["gaussianimage"]):  # the shipped configs
        cfg = fit_cfg(names, num_splats=16, iterations=150)
        end, _ = fit_batch(img, cfg, init=start)
        growth[cfg.parameterization] = (end.chol[..., [0, 2]] / start.chol[..., [0, 2]]).median().item()
        if cfg.parameterization == "gaussianimage":
            assert (end.chol - start.chol).abs().max() < 2 * 150 * cfg.lr.diagonal
    assert growth["gaussianimage"] < 1.3 and growth["axes"] > 2, growth


def test_unknown_parameterization_is_named(fit_cfg):
    with pytest.raises(ValueError, match="fit.parameterization.*'logscale'"):
        fit_batch(torch.rand(1, 3, 8, 8), fit_cfg(num_splats=4, iterations=1, parameterization="logscale"))


def test_images_that_are_not_float_in_zero_one_are_named(fit_cfg):
    """A uint8 or 0-255 image would fit on the wrong scale and a NaN pixel fail deep in the init: each is named."""
    cfg = fit_cfg(num_splats=4, iterations=1)
    img = smooth_photos([0, 1], 8)
    with pytest.raises(ValueError, match=r"got torch.uint8 \(divide 8-bit images by 255\)"):
        fit_batch((img * 255).to(torch.uint8), cfg)
    scaled = img.clone()
    scaled[1] *= 255
    with pytest.raises(ValueError, match=rf"image 1 holds values from {scaled[1].min():g} to {scaled[1].max():g}$"):
        fit_batch(scaled, cfg)
    nan = img.clone()
    nan[1, 0, 3, 4] = float("nan")
    with pytest.raises(ValueError, match=r"image 1 holds NaN or inf$"):
        fit_batch(nan, cfg)
    fit_batch(img, cfg)  # the same images in [0, 1] fit


def test_an_init_that_is_not_one_pixel_set_per_image_is_named(fit_cfg):
    img = smooth_photos([0, 1], 16)
    cfg = fit_cfg(num_splats=8, iterations=1)
    start = structured_init(img, 8)
    with pytest.raises(ValueError, match=r"fit_batch's init takes splats in 'pixels' units, got 'unit'"):
        fit_batch(img, cfg, init=Splats.from_unit_rows(start.unit_rows(16, 16), start.mask))
    with pytest.raises(ValueError, match="init must hold one splat set per image on cpu, got 1 on cpu for 2 images"):
        fit_batch(img, cfg, init=Splats(start.xy[:1], start.chol[:1], start.rgb[:1], start.mask[:1]))


# ---- the fit command -------------------------------------------------------------


def bad_input_shard(path: Path) -> list[str]:
    """A shard with every kind of awkward image; returns the keys that are readable."""
    good = smooth_photo(40, 60)
    grey = good.mean(-1).astype(np.uint8)
    rgba = np.concatenate([good, np.full((40, 60, 1), 128, np.uint8)], -1)
    cmyk = np.concatenate([255 - good, np.zeros((40, 60, 1), np.uint8)], -1)
    deep = (grey.astype(np.uint16) * 257).astype(np.uint16)
    jpeg = image_bytes(good, "JPEG")
    samples = [
        {"key": "good", "jpg": jpeg, "txt": "a good photo", "json": json.dumps({"uid": "1"})},
        {"key": "corrupt", "jpg": b"\xff\xd8\xff\xe0" + b"garbage" * 50, "txt": "corrupt"},
        {"key": "truncated", "jpg": jpeg[: len(jpeg) // 2], "txt": "truncated"},
        {"key": "grey", "jpg": image_bytes(grey, "JPEG"), "txt": "grey"},
        {"key": "rgba", "png": image_bytes(rgba, "PNG"), "txt": "rgba"},
        {"key": "cmyk", "jpg": image_bytes(cmyk, "JPEG", mode="CMYK"), "txt": "cmyk"},
        {"key": "deep", "png": image_bytes(deep, "PNG", mode="I;16"), "txt": "16-bit"},
        {"key": "tiny", "png": image_bytes(good[:5, :5], "PNG"), "txt": "5x5", "cls": 3},
        {"key": "nocaption", "jpg": jpeg},
    ]
    write_image_shard(path, samples)
    return ["good", "grey", "rgba", "cmyk", "deep", "tiny", "nocaption"]


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


def test_fit_skips_unreadable_images_and_keeps_every_readable_one(tmp_path, capsys):
    from gs_lightning.cli import fit

    readable = bad_input_shard(tmp_path / "in" / "00000.tar")
    with pytest.warns(UserWarning) as record:
        fit([f"fit.input={tmp_path}/in/00000.tar", f"fit.output={tmp_path}/out", "fit.batch_size=3", *TINY_FIT])
    out = read_tar(tmp_path / "out" / "00000.tar")
    assert sorted(out) == sorted(readable)
    messages = " ".join(str(w.message) for w in record)
    assert "00000.tar/corrupt" in messages and "00000.tar/truncated" in messages
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_fitted"] == len(readable) and summary["images_skipped"] == 2
    # the record format: float16 [N, 8] in the unit square, caption and class passed through
    arr = np.load(__import__("io").BytesIO(out["good"]["splats.npy"]))
    assert arr.dtype == np.float16 and arr.shape == (16, 8)
    assert out["good"]["txt"] == b"a good photo" and out["tiny"]["cls"] == b"3"
    rec = json.loads(out["tiny"]["json"])
    assert rec["source_size"] == [5, 5] and rec["n_final"] == 16 and rec["iterations"] == 5
    assert summary["iterations_mean"] == summary["iterations_max"] == 5 and summary["images_at_cap"] == len(readable)
    assert "skipped 2" in capsys.readouterr().out


def test_missing_input_names_the_key_and_points_to_the_embedded_photos(tmp_path):
    from gs_lightning.cli import fit
    from gs_lightning.data.shards import DataPathError

    with pytest.raises(DataPathError, match=r"fit\.input: .*nowhere.*fit\.input=embedded"):
        fit([f"fit.input={tmp_path}/nowhere/{{00000..00001}}.tar", *TINY_FIT])


def test_unknown_key_is_named():
    from gs_lightning.cli import fit

    with pytest.raises(UserError, match=r"^fit\.num_splat: unknown config key"):
        fit(["fit.num_splat=3"])


def test_a_folders_skips_name_their_files_and_each_batch_reports_its_own(tmp_path):
    """A skip found after a shard's first batch was written is reported with the batch it came in, not lost with
    one already written: with a batch of one, b.png (b.jpg's key, which is kept) and the unreadable c.jpg come
    after two batches. A folder's skip names the file, which its key (`_` for `.`) may not."""
    from gs_lightning.cli import fit

    (tmp_path / "in").mkdir()
    for name, data in [("a.jpg", image_bytes(smooth_photo(20, 20), "JPEG")), ("b.jpg", image_bytes(smooth_photo(20, 20, 1), "JPEG")),
                       ("b.png", image_bytes(smooth_photo(20, 20, 2), "PNG")), ("c.v2.jpg", b"not an image")]:
        (tmp_path / "in" / name).write_bytes(data)
    with pytest.warns(UserWarning):
        fit([f"fit.input={tmp_path}/in", f"fit.output={tmp_path}/out", "fit.batch_size=1", *TINY_FIT])
    skipped = json.loads((tmp_path / "out" / "summary.json").read_text())["skipped"]
    assert len(skipped) == 2, skipped
    assert skipped[0].startswith("00000.tar/b: duplicate key: ") and f"{tmp_path}/in/b.png" in skipped[0]
    assert skipped[1].startswith(f"00000.tar/c_v2: {tmp_path}/in/c.v2.jpg: cannot decode image")
    assert sorted(read_tar(tmp_path / "out" / "00000.tar")) == ["a", "b"]


@pytest.mark.parametrize("sig, group", [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, False),
                                        (signal.SIGINT, True)],
                         ids=["SIGKILL", "SIGTERM", "SIGINT", "SIGINT_to_the_group_with_a_worker"])
def test_a_stopped_fit_resumes_without_partial_shards(tmp_path, sig, group):
    """Stop a fit after its first shard lands, while the next one is open; rerun; finished shards are kept
    byte for byte.

    SIGTERM (a cluster's preemption) and SIGINT (Ctrl-C) stop at once, with exit status 128 + signal and no
    temporary left; SIGKILL cannot be handled, and a temporary never has a final name. The signal comes from the
    fault hook (tests/stop_at.py) right after the first sample is written into the second shard, every time.
    Ctrl-C at a terminal reaches the whole process group, a dataloader worker too (`group`), which stays quiet:
    the main process stops the run."""
    for i in range(3):
        write_image_shard(tmp_path / "in" / f"{i:05d}.tar", [
            {"key": f"{i}_{k}", "png": image_bytes(smooth_photo(24, 24, seed=10 * i + k), "PNG"), "txt": "x"}
            for k in range(4)
        ])
    fit_args = ["fit", f"fit.input={tmp_path}/in/{{00000..00002}}.tar", f"fit.output={tmp_path}/out",
                "fit.batch_size=1", "fit.num_splats=16", "fit.iterations=20", "fit.image_size=24",
                f"fit.num_workers={int(group)}", "trainer.accelerator=cpu"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    signame = sig.name[3:] + ("-GROUP" if group else "")
    hook = [sys.executable, "tests/stop_at.py", "signal-in-next-shard", "00000.tar", signame, "--"]
    out = subprocess.run(hook + fit_args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                         start_new_session=True)  # a group of its own: the signal to it never reaches pytest
    assert out.returncode in (128 + sig, -signal.SIGKILL), (out.returncode, out.stderr[-2000:])
    done = sorted(p.name for p in (tmp_path / "out").glob("*.tar"))
    assert done == ["00000.tar"]  # the first shard landed, the second was open
    assert len(read_tar(tmp_path / "out" / "00000.tar")) == 4  # whatever is under a final name is complete
    if sig != signal.SIGKILL:
        assert out.returncode == 128 + sig and "stopped by" in out.stderr
        assert not list((tmp_path / "out").glob("*.tmp")), "a stopped fit leaves no temporary"
        assert "Traceback" not in out.stderr
    else:
        assert list((tmp_path / "out").glob("00001.tar*.tmp")), "the killed fit had the second shard open"
    kept = {name: (tmp_path / "out" / name).read_bytes() for name in done}
    args = [sys.executable, "-m", "gs_lightning", *fit_args]
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    for name, data in kept.items():
        assert (tmp_path / "out" / name).read_bytes() == data
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tar")) == ["00000.tar", "00001.tar", "00002.tar"]
    assert not list((tmp_path / "out").glob("*.tmp"))
    for name in ("00001.tar", "00002.tar"):
        assert len(read_tar(tmp_path / "out" / name)) == 4
    # the summary and sizes.json are of the folder: the shard fitted before the stop counts too
    sizes = json.loads((tmp_path / "out" / "sizes.json").read_text())
    assert sizes == {"00000.tar": 4, "00001.tar": 4, "00002.tar": 4}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["images_fitted"] == 12


def test_hostile_and_duplicate_keys_are_skipped_named_and_counted(tmp_path):
    """Keys come from strangers' tars: nothing may climb out of a folder, and a key is fitted once."""
    jpeg = image_bytes(smooth_photo(20, 20), "JPEG")
    members = [("k1", "first"), ("k1", "adjacent duplicate"), ("k2", "two"), ("k1", "later duplicate"),
               ("../../escape", "up"), ("/abs", "absolute"), ("ctl\x01key", "control"), ("a\\b", "backslash"),
               ("sub/dir", "a folder inside the tar, as webdataset allows")]
    (tmp_path / "in").mkdir()
    with tarfile.open(tmp_path / "in" / "00000.tar", "w") as tar:
        for key, caption in members:
            for ext, data in (("jpg", jpeg), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, __import__("io").BytesIO(data))
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "fit", f"fit.input={tmp_path}/in/00000.tar",
                          f"fit.output={tmp_path}/out", *TINY_FIT], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    with tarfile.open(tmp_path / "out" / "00000.tar") as tar:
        names = tar.getnames()
    assert all(not n.startswith("/") and ".." not in n.split("/") and n.isprintable() for n in names), names
    fitted = read_tar_keys(tmp_path / "out" / "00000.tar")
    assert fitted == {"k1": "first", "k2": "two", "sub/dir": "a folder inside the tar, as webdataset allows"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_fitted"] == 3 and summary["images_skipped"] == 6
    skipped = " ".join(summary["skipped"])
    for key in ("00000.tar/k1: duplicate", "00000.tar/../../escape", "00000.tar//abs", "00000.tar/ctl\x01key",
                "00000.tar/a\\b"):
        assert key in skipped, (key, skipped)
    assert "skipping 00000.tar/../../escape" in out.stderr and "skipping 00000.tar/'ctl\\x01key'" in out.stderr


def test_a_compressed_shard_and_an_image_file_fit_to_plain_shards_the_summary_counts(tmp_path):
    """fit.input may name a .tar.gz shard and image files: their fitted shards are plain tars (x.tar.gz ->
    x.tar, the images -> 00000.tar), which the summary, sizes.json and a reader of the output all find."""
    jpeg = image_bytes(smooth_photo(20, 20), "JPEG")
    with tarfile.open(tmp_path / "in.tar.gz", "w:gz") as tar:
        for member, data in (("k1.jpg", jpeg), ("k1.txt", b"a caption")):
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    (tmp_path / "photo.jpg").write_bytes(jpeg)
    out = subprocess.run([sys.executable, "-m", "gs_lightning", "fit", f"fit.input={tmp_path}/in.tar.gz,"
                          f"{tmp_path}/photo.jpg", f"fit.output={tmp_path}/out", *TINY_FIT], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["images_fitted"] == 2 and summary["images_skipped"] == 0, summary
    assert json.loads((tmp_path / "out" / "sizes.json").read_text()) == {"00000.tar": 1, "in.tar": 1}
    assert read_tar_keys(tmp_path / "out" / "in.tar") == {"k1": "a caption"}
    from gs_lightning.data.shards import DataPathError, existing_sources

    sources = existing_sources(f"{tmp_path}/out/*.tar", "data.splats.train")
    assert [(s.name, [r.key for r in s.samples([])]) for s in sources] == [("00000.tar", ["photo"]), ("in.tar", ["k1"])]
    with pytest.raises(DataPathError, match=r"it holds shards \(00000.tar, in.tar\): give them as '.*/out/\*.tar'"):
        existing_sources(str(tmp_path / "out"), "data.splats.train")  # the folder, named as an image folder


def read_tar_keys(path: Path) -> dict[str, str]:
    """{key: caption} of a fitted shard, keys split at the first dot of the member's base name."""
    out = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            if m.name.endswith(".txt"):
                out[m.name[: -len(".txt")]] = tar.extractfile(m).read().decode()
    return out


def test_a_rerun_into_the_same_output_must_fit_the_same_way(tmp_path):
    """A rerun resumes into fit.output, so other fitting settings there would mix two kinds of splats."""
    from gs_lightning.cli import fit

    for i in range(2):
        write_image_shard(tmp_path / "in" / f"{i:05d}.tar", [
            {"key": f"{i}_0", "png": image_bytes(smooth_photo(24, 24, seed=i), "PNG"), "txt": "x"}])
    out = [f"fit.output={tmp_path}/out", *TINY_FIT]
    fit([f"fit.input={tmp_path}/in/00000.tar", *out])
    first = (tmp_path / "out" / "00000.tar").read_bytes()
    with pytest.raises(UserError, match=r"fit\.num_splats was 16, now 32; fit\.parameterization was 'axes', "
                                          r"now 'gaussianimage'"):
        fit([f"fit.input={tmp_path}/in/00000.tar", *out, "fit.num_splats=32", "fit.parameterization=gaussianimage"])
    # more shards, another batch size: the same kind of fit, so it goes on
    fit([f"fit.input={tmp_path}/in/{{00000..00001}}.tar", *out, "fit.batch_size=2"])
    assert (tmp_path / "out" / "00000.tar").read_bytes() == first and (tmp_path / "out" / "00001.tar").exists()


def test_a_rerun_whose_shard_holds_other_images_is_refused_and_a_moved_one_resumes(tmp_path, capsys):
    """Image folders are chunked into 00000.tar, ... by file order, so a second folder fitted into the first
    one's output meets 00000.tar done: it is refused, naming both, not kept as done. The same images moved
    elsewhere are the same shard, and resume."""
    from gs_lightning.cli import fit

    for day, seed in (("day1", 0), ("day2", 5)):
        for i in range(2):
            (tmp_path / day).mkdir(exist_ok=True)
            (tmp_path / day / f"{day}_{i}.png").write_bytes(image_bytes(smooth_photo(24, 24, seed=seed + i), "PNG"))
    out = [f"fit.output={tmp_path}/out", *TINY_FIT]
    fit([f"fit.input={tmp_path}/day1", *out])
    first = (tmp_path / "out" / "00000.tar").read_bytes()
    with pytest.raises(UserError, match=r"fit\.input: its shard 00000\.tar is 2 image files, day2_0 \.\. day2_1 "
                                          r".* was made from 2 image files, day1_0 \.\. day1_1 .*new fit\.output"):
        fit([f"fit.input={tmp_path}/day2", *out])
    (tmp_path / "day1").rename(tmp_path / "moved")
    capsys.readouterr()
    fit([f"fit.input={tmp_path}/moved", *out])
    assert "all 1 shards of" in capsys.readouterr().out
    assert (tmp_path / "out" / "00000.tar").read_bytes() == first
    assert sorted(read_tar(tmp_path / "out" / "00000.tar")) == ["day1_0", "day1_1"]


def test_fit_benchmark_tables_and_plots(tmp_path, capsys):
    from gs_lightning.benchmarks import fit as bench

    bench.main(["--section", "budgets", "--photos", "1", "--budgets", "2", "4", "--counts", "16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "structured (paper)" in out and "default" in out and "log_scale" in out and "16 Gaussians at 3000 it." not in out
    assert (tmp_path / "fit_quality.png").stat().st_size > 10_000
    bench.main(["--section", "paper", "--photos", "1", "--iterations", "4", "--counts", "16", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "paper recipe (" in out and "gaussianimage recipe (" in out
    assert (tmp_path / "fit_paper.png").stat().st_size > 10_000


def time_section(out: str) -> tuple[dict, dict]:
    """bench-fit's time section at 4 Gaussians in 2 rounds, as printed: (route, setting) -> [(ms, PSNR) of
    round 1, of round 2] from the progress lines ("  1/2     4 default   60 it.  ..."), and (route, setting) ->
    [ms, PSNR, reaches, factor] from the table's rows ("4 default 60 it. ...", not the summary "4 Gaussians:")."""
    rounds = {}
    for r, route, setting, ms, psnr in re.findall(r"^  ([12])/2 +4 (\S+) +(.+?) +([\d.]+) ms/image +([\d.]+) dB$",
                                                  out, re.M):
        assert len(rounds.setdefault((route, setting), [])) == int(r) - 1  # round 2 after round 1
        rounds[route, setting].append((float(ms), psnr))
    table = {}
    for r in (line.split(None, 2) for line in out.splitlines()):
        if len(r) == 3 and r[0] == "4" and r[1] != "Gaussians:":
            setting, *rest = r[2].rsplit(None, 4)
            table[r[1], setting] = rest
    return rounds, table


def test_fit_benchmark_time_to_quality_runs_every_route_against_the_target(tmp_path, capsys):
    from gs_lightning.benchmarks import fit as bench

    images = smooth_photos((0, 1), 16)
    bench.time_to_quality(images, tmp_path, counts=(4,), batch=2, rounds=2)
    rounds, rows = time_section(capsys.readouterr().out)
    recipe, init, budgets = bench.REFERENCE
    table = {s: v for (route, s), v in rows.items() if route in ("default", "coarse-to-fine")}
    reference = {s: v for (route, s), v in rows.items() if route == init}
    assert set(reference) == {f"{T} it." for T in budgets}
    routes = {bench.coarse_label(*route) for route in bench.COARSE}
    assert set(table) == {f"{T} it." for T in bench.TIME_BUDGETS} | routes
    assert reference[f"{budgets[-1]} it."][2:] == ["yes", "1.00x"]  # the target
    target = float(reference[f"{budgets[-1]} it."][1])
    own = fit_batch(images, replace(bench.recipe_config(recipe, num_splats=4), init=init, iterations=budgets[-1]))
    assert target == pytest.approx(own[1].psnr.mean().item(), abs=0.006)  # the reference's fit, not the default's
    assert (recipe, init) == ("log_scale", "adaptive")  # the default when the goal was set
    levels, fine, restart = next(route for route in bench.COARSE if route[2])  # the route runs its own settings
    cfg = replace(bench.recipe_config("default", num_splats=4), coarse_iterations=levels, iterations=fine)
    for r in (restart, not restart):
        psnr = fit_batch(images, replace(cfg, coarse_restart=r))[1].psnr.mean().item()
        shown = float(table[bench.coarse_label(levels, fine, restart)][1])
        assert (shown == pytest.approx(psnr, abs=0.006)) == (r == restart)
    for key, ((first, psnr), (second, again)) in rounds.items():  # the fastest round's time, their one PSNR
        assert rows[key][:2] == [f"{min(first, second):.1f}", psnr] and again == psnr
    assert len(rounds) == len(rows) == len(bench.TIME_BUDGETS) + len(routes) + len(budgets)
    for _, psnr, reached, factor in [*table.values(), *reference.values()]:  # a factor exactly where it is reached
        assert (factor != "-") == (reached == "yes")
        if float(psnr) != target:  # equal to two decimals: either side of the target
            assert (reached == "yes") == (float(psnr) > target)
    assert (tmp_path / "fit_time.png").stat().st_size > 10_000


def test_fit_benchmark_time_to_quality_keeps_each_routes_fastest_round(tmp_path, capsys, monkeypatch):
    """On a clock the fits themselves advance (the k-th fit takes 1 + 7k mod 5 s), with PSNRs that tell the
    route and the round apart, each route shows its fastest round's time with that round's PSNR, and a route
    whose rounds differ says so. --rounds reaches the section; less than one round is refused."""
    from types import SimpleNamespace

    from gs_lightning.benchmarks import fit as bench

    clock, calls = [0.0], []

    def fake_fit(stack, cfg):  # [B, 3, H, W] -> (None, stats with psnr [B])
        calls.append(cfg)
        clock[0] += 1 + 7 * len(calls) % 5
        differs = cfg.iterations == 200 and not cfg.coarse_iterations  # the default's 200 it.: each round its own
        psnr = 20 + cfg.iterations / 100 + (len(calls) if differs else 0)
        return None, SimpleNamespace(psnr=torch.full((len(stack),), float(psnr)))

    monkeypatch.setattr(bench, "fit_batch", fake_fit)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    bench.time_to_quality(smooth_photos((0, 1), 16), tmp_path, counts=(4,), batch=2, rounds=2)
    out = capsys.readouterr().out
    rounds, table = time_section(out)
    assert len(rounds) == len(table) == len(bench.TIME_BUDGETS) + len(bench.COARSE) + len(bench.REFERENCE[2])
    assert any(b[0] < a[0] for a, b in rounds.values()) and any(a[0] < b[0] for a, b in rounds.values())
    for key, both in rounds.items():
        ms, psnr = min(both)
        assert table[key][:2] == [f"{ms:.1f}", psnr]
    first, second = rounds["default", "200 it."]
    assert second[0] < first[0] and second[1] != first[1]  # its time and PSNR both from its second round
    assert "note: at 4 Gaussians, default 200 it.: the rounds' PSNRs differ" in out
    assert out.count("PSNRs differ") == 1
    with pytest.raises(ValueError, match="rounds=0"):
        bench.time_to_quality(smooth_photos((0,), 16), tmp_path, counts=(4,), batch=2, rounds=0)

    seen = {}
    monkeypatch.setattr(bench, "time_to_quality", lambda *a, **kw: seen.update(kw))
    bench.main(["--section", "time", "--photos", "1", "--counts", "4", "--rounds", "3", "--out", str(tmp_path)])
    assert seen == {"rounds": 3}
    with pytest.raises(SystemExit):
        bench.main(["--section", "time", "--photos", "1", "--rounds", "0"])
    assert "--rounds: '0' is no count of 1 or more" in capsys.readouterr().err


def test_fit_benchmark_throughput_times_both_recipes_on_each_path(capsys):
    from gs_lightning.benchmarks import fit as bench
    from gs_lightning.render import simd_paths

    bench.throughput(torch.rand(1, 3, 32, 32), iterations=2, batch=2)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    timed = {(r[0], r[-3]) for r in rows if len(r) >= 5 and r[0] in ("default", "paper")}
    assert timed == {(r, p) for r in ("default", "paper") for p in (simd_paths()[0], "scalar")}


def test_fit_benchmark_reads_a_folder_of_images_as_fit_does(tmp_path, capsys):
    """An image that does not decode is left out and named with the reason; the rest are read as fit reads
    them."""
    from PIL import Image

    from gs_lightning.benchmarks.fit import SIZE, named_photos

    for i, (h, w) in enumerate([(300, 400), (250, 250), (224, 500)]):
        Image.fromarray(smooth_photo(h, w, seed=i)).save(tmp_path / f"{i}.png")
    (tmp_path / "0a.jpg").write_bytes(b"\xff\xd8 cut off")
    (tmp_path / "notes.txt").write_text("not an image")
    names, got = named_photos(2, str(tmp_path))
    assert names == ["0", "1"] and got.shape == (2, 3, SIZE, SIZE)
    want = smooth_photos([0], 300, 400)[0]
    torch.testing.assert_close(got[0], resize_center_crop(want, SIZE), atol=1 / 255, rtol=0)
    assert "left out 1: 0a (cannot decode image" in capsys.readouterr().out


def test_fit_benchmark_names_a_shard_sample_with_no_image(tmp_path, capsys):
    from gs_lightning.benchmarks.fit import named_photos

    photo = smooth_photo(224, 224, seed=0)
    write_image_shard(str(tmp_path / "00000.tar"), [{"key": "a", "txt": "a caption, no image"},
                                                    {"key": "b", "png": image_bytes(photo, "PNG")}])
    names, got = named_photos(None, str(tmp_path / "00000.tar"))
    assert names == ["b"]
    torch.testing.assert_close(got[0], torch.from_numpy(photo).permute(2, 0, 1).float() / 255, rtol=0, atol=1e-6)
    assert "left out 1: a (no image member (jpg, jpeg, png, webp))" in capsys.readouterr().out


def test_photo_sets_link_each_named_photo_once_and_name_what_is_missing(tmp_path):
    """The held-out sets are found by name under the packages' folder: "<name>.<ext>" or "<name>_by_<author>",
    never a larger rendition (Elephants_3840x2160), and the benchmark reads what they link."""
    from gs_lightning.benchmarks.fit import named_photos
    from gs_lightning.benchmarks.photos import SETS, write_sets

    root, names = tmp_path / "backgrounds", SETS["test"] + SETS["third"]
    for i, name in enumerate(names):
        file = root / ("nature" if i % 2 else "") / (f"{name}_by_Someone.jpg" if name in SETS["third"] else
                                                       f"{name}.{'png' if i % 3 else 'jpg'}")
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(image_bytes(smooth_photo(64, 80, seed=i), "PNG"))
    (root / "Elephants_3840x2160.jpg").write_bytes(b"another rendition")
    (root / "Aqua.txt").write_text("not a photo")
    hopper = root / "grace_hopper.jpg"
    hopper.rename(tmp_path / "grace_hopper.jpg")
    written = write_sets(tmp_path / "out", root, {"grace_hopper": tmp_path / "grace_hopper.jpg"})
    assert {k: len(v) for k, v in written.items()} == {"test": 13, "third": 13}
    assert sorted(p.name for p in (tmp_path / "out" / "third").iterdir()) == sorted(f"{n}_by_Someone.jpg"
                                                                                  for n in SETS["third"])
    assert (tmp_path / "out" / "test" / "Elephants.jpg").resolve() == root / "nature" / "Elephants.jpg"
    assert (tmp_path / "out" / "test" / "grace_hopper.jpg").resolve() == tmp_path / "grace_hopper.jpg"
    keys, images = named_photos(None, str(tmp_path / "out" / "test"))
    assert len(keys) == 13 and images.shape[0] == 13
    before = {p: p.resolve() for p in (tmp_path / "out").rglob("*")}
    (tmp_path / "out" / "test" / "Garden.jpg").symlink_to(root / "nature" / "Elephants.jpg")  # another set's link
    write_sets(tmp_path / "out", root, {"grace_hopper": tmp_path / "grace_hopper.jpg"})  # a rerun: the set's alone
    assert {p: p.resolve() for p in (tmp_path / "out").rglob("*")} == before
    (tmp_path / "out" / "third" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"third holds notes.txt, which no link of this set replaces"):
        write_sets(tmp_path / "out", root, {"grace_hopper": tmp_path / "grace_hopper.jpg"})
    assert (tmp_path / "out" / "third" / "notes.txt").read_text() == "mine"

    (root / "Garden.jpg").write_bytes(b"a second Garden")
    next(root.rglob("Wine_by_*")).unlink()
    with pytest.raises(SystemExit, match=r"more than one photo named Garden \(.*Garden.jpg, .*Garden.png\)"):
        write_sets(tmp_path / "again", root, {"grace_hopper": tmp_path / "grace_hopper.jpg"})
    (root / "Garden.jpg").unlink()
    with pytest.raises(SystemExit, match="no photo named Wine. Install the packages: sudo apt-get install "
                                         "mate-backgrounds"):
        write_sets(tmp_path / "again", root, {"grace_hopper": tmp_path / "grace_hopper.jpg"})
    assert not (tmp_path / "again").exists()  # every set found before any is written


def test_fit_images_reports_the_psnr_of_the_float16_rows_it_stores(fit_cfg):
    """fit.record=fp16: the PSNR stated is that of the rows the record decodes to, whose centres float16 holds to
    2^-11 of the image side; the float32 fit scores a little higher, and is not what a reader gets."""
    from gs_lightning.codec import RECORDS
    from gs_lightning.fit.fitter import psnr_per_image
    from gs_lightning.splats import Splats

    images = smooth_photos([0, 1], 96)
    cfg = fit_cfg(num_splats=900, iterations=30, record="fp16")
    splats, stats = fit_images(images, cfg)
    _, unrounded = fit_batch(images, cfg)
    record = RECORDS["fp16"]
    stored = Splats.from_rows([record.decode(record.encode(r)).astype(np.float32) for r in splats.to_rows(96, 96)],
                              96, 96)
    read = psnr_per_image(rasterize(stored, 96, 96), images)
    torch.testing.assert_close(stats.psnr, read, rtol=0, atol=1e-4)
    assert (unrounded.psnr - read).min() > 1e-3  # the rounding is seen at this size
