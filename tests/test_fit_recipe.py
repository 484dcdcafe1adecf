"""The fitting recipe against oracles computed by hand: the L1 penalty, the schedule, pruning, shear, random init.

The probe: a Gaussian placed far off the image gets no gradient from the render, only from the L1 penalty, whose
gradient on its colour is constant (sign(c) * l1_weight / real splats). Adam's normalised step on a constant
gradient is exactly lr_t in size, so after t steps the probe's colour has moved toward zero by lr * sum f(s) for
s < t, where f is the schedule's factor. That pins the L1 term, the learning-rate schedule and the step at
which pruning looks at the colours, by arithmetic rather than by a fit's quality.
"""
import math
from dataclasses import replace

import pytest
import torch
from conftest import shipped_fit_config

from gs_lightning.fit.config import PruneConfig
from gs_lightning.fit.fitter import fit_batch
from gs_lightning.fit.init import random_init, structured_init
from gs_lightning.fit.schedule import cosine_schedule
from gs_lightning.render import rasterize
from gs_lightning.splats import Splats

H = W = 16
LR_RGB = 0.01


def with_probes(colours: list[float]) -> tuple[torch.Tensor, Splats]:
    """A flat image, 4 structured Gaussians on it, and one grey probe per colour far off the image."""
    image = torch.full((1, 3, H, W), 0.9)
    base = structured_init(image, 4)
    n = len(colours)
    return image, Splats(
        torch.cat([base.xy, torch.full((1, n, 2), -100.0)], 1),
        torch.cat([base.chol, torch.tensor([1.0, 0.0, 1.0]).expand(1, n, 3)], 1),
        torch.cat([base.rgb, torch.tensor(colours)[None, :, None].expand(1, n, 3)], 1),
        torch.ones(1, 4 + n, dtype=torch.bool),
    )


def schedule(t: int, total: int, decay_to: float) -> float:
    """The lr factor at step t, written out: cosine from 1 down to decay_to over the run."""
    return decay_to + (1 - decay_to) * 0.5 * (1 + math.cos(math.pi * t / total))


def luminance_by_hand(rgb: torch.Tensor) -> torch.Tensor:  # [..., 3] -> [...], the paper's 4.4
    return 0.2126 * rgb[..., 0].abs() + 0.7152 * rgb[..., 1].abs() + 0.0722 * rgb[..., 2].abs()


def recipe(iterations: int, prune: PruneConfig, **lr):
    # num_splats: the init is given; no colour solve, which would reset the probes' colours at the start
    cfg = shipped_fit_config(num_splats=0, iterations=iterations, prune=prune, solve_colours=False)
    return replace(cfg, lr=replace(cfg.lr, rgb=LR_RGB, **lr))


def test_l1_penalty_and_schedule_move_a_probe_by_lr_times_the_schedule():
    colours = [0.8, -0.7]
    image, start = with_probes(colours)
    T = 41
    cfg = recipe(T, PruneConfig(l1_weight=0.5))
    end, _ = fit_batch(image, cfg, init=start)
    moved = LR_RGB * sum(schedule(t, T, cfg.lr.decay_to) for t in range(T))
    want = torch.tensor([c - math.copysign(moved, c) for c in colours])[:, None].expand(2, 3)
    torch.testing.assert_close(end.rgb[0, 4:], want, atol=1e-5, rtol=0)
    # Without the penalty the probes see no gradient at all, so they stay where they were.
    end, _ = fit_batch(image, recipe(T, PruneConfig(l1_weight=0.0)), init=start)
    torch.testing.assert_close(end.rgb[0, 4:], torch.tensor(colours)[:, None].expand(2, 3), atol=0, rtol=0)


def test_pruning_looks_at_the_colours_of_its_step_and_keeps_dark_negative_ones():
    """Probes cross the threshold at known steps; pruning at step 40 of 41 must see the colours after exactly 40
    updates. A probe of strongly negative colour has a large |luminance| and is kept."""
    T, P, threshold = 41, 40, 0.5
    cfg = recipe(T, PruneConfig(l1_weight=0.5, threshold=threshold, at=[P / T]), decay_to=1.0)  # constant lr
    # A probe at c0 moves LR_RGB per step toward zero: c(P) = c0 -+ P * LR_RGB. Put crossings half a step around P.
    colours = [threshold + (P - 0.5) * LR_RGB,  # under the threshold at step 40: pruned
               threshold + (P + 0.5) * LR_RGB,  # still above at step 40 (under at 41): kept
               -(threshold + (P + 0.5) * LR_RGB),  # negative and large in size: kept
               -(threshold + (P - 0.5) * LR_RGB)]  # negative and small in size at step 40: pruned
    image, start = with_probes(colours)
    end, stats = fit_batch(image, cfg, init=start)
    at_step = torch.tensor([c - math.copysign(P * LR_RGB, c) for c in colours])[:, None].expand(4, 3)
    assert end.mask[0, 4:].tolist() == (luminance_by_hand(at_step) >= threshold).tolist() == [False, True, True, False]
    assert stats.n_final.item() == end.mask.sum().item() and stats.n_init.item() == 8


def test_adams_moment_decays_are_fit_lr_beta1_and_beta2():
    """After a prune the survivors' L1 gradient grows (it is averaged over fewer real splats), and Adam's steps
    lr * m_hat / sqrt(v_hat) then depend on beta1 and beta2. A watched probe's colour must follow Adam's update
    written out by hand with the configured decays: the default's (beta2 null: 1 - 15 / T within [0.85, 0.95]),
    and others for each."""
    T, P, threshold, l1 = 41, 20, 0.2, 0.5  # the 4 Gaussians on the image keep colours near 0.57: never pruned
    victim, watched = threshold + (P - 0.5) * LR_RGB, 2.0  # the victim is under the threshold at step P: pruned
    image, start = with_probes([victim, watched])
    ends = {}
    for beta1, beta2 in ((0.9, None), (0.9, 0.95), (0.9, 0.999), (0.7, 0.95)):
        cfg = recipe(T, PruneConfig(l1_weight=l1, threshold=threshold, at=[P / T]), decay_to=1.0, beta1=beta1,
                     beta2=beta2)
        end, stats = fit_batch(image, cfg, init=start)
        assert stats.n_final.item() == 5  # the victim alone was pruned
        if beta2 is None:
            beta2 = min(max(1 - 15 / T, 0.85), 0.95)  # a horizon 1 / (1 - beta2) of a fifteenth of the run
        c, m, v = watched, 0.0, 0.0
        for t in range(1, T + 1):  # step t sees 4 + 2 real splats before the prune, 5 from step P + 1 on
            g = l1 / (6 if t <= P else 5)
            m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            c -= LR_RGB * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + 1e-8)
        torch.testing.assert_close(end.rgb[0, 5], torch.full((3,), c), atol=1e-5, rtol=0)
        ends[beta1, beta2] = end.rgb[0, 5, 0].item()
    # the oracle tells them apart
    assert abs(ends[0.9, 0.95] - ends[0.9, 0.999]) > 1e-3 and abs(ends[0.9, 0.95] - ends[0.7, 0.95]) > 1e-3
    assert abs(ends[0.9, 0.85] - ends[0.9, 0.95]) > 1e-3


@pytest.mark.parametrize("T, beta2", [(1000, 0.95), (150, 0.9), (20, 0.85)])
def test_a_null_beta2_spans_a_fifteenth_of_the_run_within_0_85_and_0_95(T, beta2):
    """fit.lr.beta2 null fits exactly as the decay 1 - 15 / T written out, floored at 0.85 for short runs (at 20
    steps 1 - 15 / 20 = 0.25) and capped at 0.95 for long ones (at 1000 steps 0.985)."""
    image, start = with_probes([0.3, 2.0])
    auto = fit_batch(image, recipe(T, PruneConfig.off()), init=start)[0]
    given = fit_batch(image, recipe(T, PruneConfig.off(), beta2=beta2), init=start)[0]
    assert torch.equal(auto.xy, given.xy) and torch.equal(auto.chol, given.chol) and torch.equal(auto.rgb, given.rgb)
    other = fit_batch(image, recipe(T, PruneConfig.off(), beta2=0.8), init=start)[0]
    assert not torch.equal(auto.rgb, other.rgb)  # the probe tells decays apart


def test_a_rotated_ellipse_is_fitted_with_its_shear():
    """One Gaussian with l21 != 0, fitted from an isotropic start: only a learned shear can match it."""
    truth = Splats(torch.tensor([[[16.0, 16.0]]]), torch.tensor([[[3.0, 2.5, 2.0]]]), torch.tensor([[[0.9, 0.6, 0.3]]]),
                   torch.ones(1, 1, dtype=torch.bool))
    image = rasterize(truth, 32, 32).clamp(0, 1)
    start = Splats(truth.xy, torch.tensor([[[3.0, 0.0, 3.0]]]), torch.tensor([[[0.5, 0.5, 0.5]]]), truth.mask)
    end, stats = fit_batch(image, shipped_fit_config(num_splats=1, iterations=1200), init=start)
    torch.testing.assert_close(end.chol, truth.chol, rtol=0.03, atol=0)
    assert stats.psnr.item() > 50


def test_random_init_draws_gaussianimages_cholesky_factors():
    """GaussianImage: L = U(0, 1) + diag(0.5), so l11, l22 ~ U(0.5, 1.5) and l21 ~ U(0, 1); colours U(0, 1)."""
    s = random_init(torch.zeros(4, 3, 30, 50), 2000, generator=torch.Generator().manual_seed(0))
    uniform_sd = 1 / math.sqrt(12)
    for values, lo in ((s.chol[..., 0], 0.5), (s.chol[..., 1], 0.0), (s.chol[..., 2], 0.5), (s.rgb, 0.0)):
        assert values.min() >= lo and values.max() <= lo + 1
        assert values.mean().item() == pytest.approx(lo + 0.5, abs=0.01)
        assert values.std().item() == pytest.approx(uniform_sd, abs=0.01)
    assert (s.xy[..., 0].max() <= 50) and (s.xy[..., 1].max() <= 30) and s.xy.min() >= 0


@pytest.mark.parametrize("restart", [False, True])
def test_coarse_steps_share_the_runs_adam_and_decay_and_leave_the_l1_penalty_to_full_resolution(restart):
    """fit.coarse_iterations' steps are the first of one run: one Adam (its step count, bias correction and
    beta2 over all C + T steps) and one cosine decay over them, or with fit.coarse_restart a second decay over
    the T full-resolution steps. The probes see no L1 gradient while the steps are coarse (Adam's moments stay
    0, so they stay put), then the constant one: Adam written out by hand."""
    C, T = 50, 250
    colours = [3.0, -2.5]  # far enough from 0 that the L1 gradient keeps its sign
    image, start = with_probes(colours)
    cfg = replace(recipe(T, PruneConfig(l1_weight=0.5)), coarse_iterations=[C], coarse_restart=restart)
    end, stats = fit_batch(image, cfg, init=start)
    assert stats.iterations.item() == T
    beta1, beta2 = cfg.lr.beta1, min(max(1 - 15 / (C + T), 0.85), 0.95)

    def moved(restart: bool) -> float:
        out, m, v = 0.0, 0.0, 0.0
        for t in range(1, C + T + 1):
            g = 0.0 if t <= C else 0.5 / 6  # sign(c) * l1_weight / real splats, for c > 0
            m, v = beta1 * m + (1 - beta1) * g, beta2 * v + (1 - beta2) * g * g
            if restart:  # one decay over the coarse steps, another over the full-resolution ones
                rate = schedule(t - 1, C, cfg.lr.decay_to) if t <= C else schedule(t - 1 - C, T, cfg.lr.decay_to)
            else:
                rate = schedule(t - 1, C + T, cfg.lr.decay_to)
            out += LR_RGB * rate * (m / (1 - beta1**t)) / (math.sqrt(v / (1 - beta2**t)) + 1e-8)
        return out

    want = torch.tensor([c - math.copysign(moved(restart), c) for c in colours])[:, None].expand(2, 3)
    torch.testing.assert_close(end.rgb[0, 4:], want, atol=1e-5, rtol=0)
    fresh = LR_RGB * sum(schedule(t, T, cfg.lr.decay_to) for t in range(T))  # a fresh Adam and decay at full
    assert abs(moved(False) - fresh) > 1e-2  # resolution would move them this far, and the two decays apart:
    assert abs(moved(False) - moved(True)) > 1e-2  # the oracle tells them apart


@pytest.mark.parametrize("restart", [0, 7])
def test_the_decay_restarts_at_full_resolution_with_a_cosine_of_its_own(restart):
    """The rate at every step, against the cosine written out: over all 20 steps, or over the first `restart`
    steps and then over the other 20 - restart from the full rate; held at its end after the run."""
    T, end = 20, 0.05
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = cosine_schedule(opt, T, end=end, restart=restart)
    rates = []
    for _ in range(T + 3):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [schedule(t, restart, end) if t < restart else schedule(min(t - restart, T - restart), T - restart, end)
            for t in range(T + 3)]
    assert rates == pytest.approx(want, abs=1e-12)
    assert rates[restart] == pytest.approx(1.0) and rates[-1] == pytest.approx(end)
