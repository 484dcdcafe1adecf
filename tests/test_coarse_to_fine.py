"""Coarse-to-fine (fit.coarse_iterations): the 2x scaling against the dense reference, the levels' order, a
coarse step against its definition written out, a given start's colours, batching, and the config's checks."""
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from conftest import shipped_fit_config
from helpers import random_splats, smooth_photos

from gs_lightning.config import load_fit_config
from gs_lightning.errors import UserError
from gs_lightning.fit.config import PruneConfig
from gs_lightning.fit.fitter import coarse_factors, fit_batch, fit_images, psnr_per_image
from gs_lightning.render import rasterize, render_reference
from gs_lightning.splats import Splats


def photos(*seeds: int, size: int = 32) -> torch.Tensor:  # [len(seeds), 3, size, size]
    return smooth_photos(seeds, size)


@pytest.mark.parametrize("row, col", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_splats_scaled_2x_draw_the_coarse_image_at_the_finer_pixel_centres(row, col):
    """Fine pixel (2i + row, 2j + col) has its centre at coarse point (i + 0.5 + (row - 0.5) / 2, ...): the
    splats doubled in xy and L, drawn at 2h x 2w, must show there what the coarse splats, moved by the
    opposite offset, show at pixel (i, j) of h x w. Dense reference on both sides, colours unchanged."""
    coarse = random_splats(2, 12, 10, 14, seed=3, requires_grad=False)
    fine = render_reference(replace(coarse, xy=coarse.xy * 2, chol=coarse.chol * 2), 20, 28)
    shift = torch.tensor([(col - 0.5) / 2, (row - 0.5) / 2])
    want = render_reference(replace(coarse, xy=coarse.xy - shift), 10, 14)
    torch.testing.assert_close(fine[..., row::2, col::2], want, rtol=1e-4, atol=1e-5)


def test_each_coarse_step_runs_its_level_coarsest_first():
    assert coarse_factors([2, 1]) == [4, 4, 2]
    assert coarse_factors([3]) == [2, 2, 2]
    assert coarse_factors([1, 2, 1]) == [8, 4, 4, 2]
    assert coarse_factors([]) == []


def test_a_coarse_step_is_a_step_of_the_splats_scaled_down_on_the_averaged_images():
    """One coarse step, written out: a fit of the averaged images from the start halved, one step, doubled.
    Adam's first step is lr * g / |g| whatever g's scale, and under the default's axes the centre (in sigmas),
    the log diagonal and the colours step alike at either scale (l21 is held: it steps lr pixels at full
    resolution, lr half-pixels at half). The L1
    penalty, pruning and the PSNR target wait for full resolution: a config that would prune everything or stop
    at once still runs the coarse step, and every image stops at the first full-resolution pass (0 steps)."""
    images = photos(0, 1)
    start = random_splats(2, 12, 32, 32, seed=4, requires_grad=False)
    cfg = shipped_fit_config(num_splats=12, iterations=2)
    assert cfg.parameterization == "axes"
    cfg = replace(cfg, lr=replace(cfg.lr, shear=1e-12))
    halved = replace(start, xy=start.xy / 2, chol=start.chol / 2)
    level, _ = fit_batch(F.avg_pool2d(images, 2), replace(cfg, prune=PruneConfig.off(), iterations=1), init=halved)
    eager = replace(cfg, coarse_iterations=[1], target_psnr=1e-3,
                    prune=PruneConfig(l1_weight=10.0, threshold=100.0, at=[0.5]))
    end, stats = fit_batch(images, eager, init=start)
    torch.testing.assert_close(end.xy, level.xy * 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(end.chol, level.chol * 2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(end.rgb, level.rgb, rtol=1e-5, atol=1e-5)
    assert not torch.equal(end.rgb, start.rgb)
    assert end.mask.all() and stats.iterations.tolist() == [0, 0]


def test_a_given_start_keeps_its_colours():
    """fit.solve_colours solves the colours of fit.init's start (fit_start), not of a start handed in: after one
    Adam step (its first moves every parameter by its lr) each colour is within lr of where it began."""
    images = photos(2)
    start = replace(random_splats(1, 9, 32, 32, seed=1, requires_grad=False), rgb=torch.full((1, 9, 3), 5.0))
    cfg = shipped_fit_config(num_splats=9, iterations=1)
    assert cfg.solve_colours
    end, _ = fit_batch(images, cfg, init=start)
    assert (end.rgb - 5.0).abs().max() <= cfg.lr.rgb * 1.001
    assert (end.rgb - 5.0).abs().min() >= cfg.lr.rgb * 0.999


def test_an_image_fitted_coarse_to_fine_in_a_batch_is_the_image_fitted_alone_and_a_rerun_repeats():
    """With pruning, and a PSNR target that the images reach at different full-resolution steps (the PSNR
    the middle image has after 8 of them), so rows leave the batch after the coarse steps."""
    images = photos(3, 4, 5)
    cfg = shipped_fit_config(num_splats=16, iterations=20, coarse_iterations=[40, 20],
                             prune=PruneConfig(l1_weight=0.01, threshold=0.05, at=[0.5]))
    seen = []
    fit_images(images, cfg, callback=lambda step, psnr: seen.append(psnr[1].item()), callback_every=1)
    cfg = replace(cfg, target_psnr=seen[8])
    batch, stats = fit_images(images, cfg)
    assert stats.iterations[1] == 8 and len(set(stats.iterations.tolist())) > 1, stats.iterations
    alone, stats1 = fit_images(images[1:2], cfg)
    for name in ("xy", "chol", "rgb", "mask"):
        torch.testing.assert_close(getattr(batch, name)[1:2], getattr(alone, name), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.psnr[1:2], stats1.psnr, rtol=1e-4, atol=1e-4)
    again, _ = fit_images(images, cfg)
    for name in ("xy", "chol", "rgb", "mask"):
        assert torch.equal(getattr(again, name), getattr(batch, name)), name


def test_the_progress_callback_counts_full_resolution_steps():
    seen = []
    cfg = shipped_fit_config(num_splats=9, iterations=4, coarse_iterations=[3])
    fit_batch(photos(0), cfg, callback=lambda step, psnr: seen.append(step), callback_every=2)
    assert seen == [0, 2, 4]


def test_coarse_levels_lift_a_short_fit():
    """20 full-resolution steps, and 200 at half resolution before the same 20: a clearly better fit of every
    image (each coarse step moves the Gaussians over a quarter of the pixels)."""
    images = photos(6, 7, 8, size=64)
    cfg = shipped_fit_config(num_splats=24, iterations=20)
    _, plain = fit_batch(images, cfg)
    splats, coarse = fit_batch(images, replace(cfg, coarse_iterations=[200]))
    assert (coarse.psnr > plain.psnr + 3.0).all(), (plain.psnr, coarse.psnr)
    torch.testing.assert_close(coarse.psnr, psnr_per_image(rasterize(splats, 64, 64), images))
    assert coarse.iterations.tolist() == [20, 20, 20]  # the full-resolution fit's own steps


def test_more_levels_than_the_image_allows_are_named():
    with pytest.raises(ValueError, match=r"fit.coarse_iterations: 3 levels .* 8x, more than 6x6"):
        fit_batch(torch.rand(1, 3, 6, 6), shipped_fit_config(num_splats=1, coarse_iterations=[5, 5, 5]))
    with pytest.raises(UserError, match=r"fit.coarse_iterations.*16x, more than fit.image_size 8"):
        load_fit_config([], ["fit.image_size=8", "fit.coarse_iterations=[1,1,1,1]"])
    with pytest.raises(UserError, match=r"fit.coarse_iterations\[1\].*>= 1"):
        load_fit_config([], ["fit.coarse_iterations=[5,0]"])
    assert load_fit_config(["coarse"]).coarse_iterations == [150]
