"""The compiled rasterizer against the dense PyTorch reference, and its input checks.

The fast backends skip pairs beyond the Mahalanobis cut-off, so they are
compared with the reference *with the same cut-off* (render_reference shares
the kernels' float32 operations for s2, so both make the same call at the
boundary). The reference itself is checked against a textbook float64 Eq. 1
with no cut-off, and the cut-off's truncation against its analytic bound.
"""
import math

import numpy as np
import pytest
import torch
from helpers import random_splats

from gs_lightning.benchmarks.common import num_threads
from gs_lightning.render import (
    CUTOFF,
    SIMD_ENV,
    cuda_backend_available,
    l2_loss,
    rasterize,
    render_reference,
    simd_path,
    simd_paths,
)
from gs_lightning.splats import Splats

CASES = {
    # name: (batch, n, height, width, random_splats kwargs)
    "b1_37x53": (1, 60, 37, 53, {}),
    "b3_37x53": (3, 40, 37, 53, {"keep": 0.8}),
    "b2_224x224": (2, 120, 224, 224, {"scale": (1.0, 12.0)}),
    "off_image": (2, 60, 37, 53, {"margin": 25.0}),
    "thin": (2, 60, 40, 40, {"scale": (0.02, 0.3)}),
    "large": (2, 8, 37, 53, {"scale": (40.0, 400.0)}),
    "mixed_scales": (2, 80, 64, 48, {"scale": (0.05, 60.0), "margin": 10.0}),
    "n0": (2, 0, 16, 17, {}),
}
# More Gaussians on one 16x16 tile than a CUDA block stages at once (256).
CROWDED_TILE = (2, 1000, 16, 16, {"scale": (1.0, 3.0)})


# The CPU backend's SIMD paths this machine runs: the CPU tests run on each (CI on whichever its CPU has).
SIMD_PATHS = simd_paths()


@pytest.fixture(params=SIMD_PATHS)
def simd(request, monkeypatch):
    monkeypatch.setenv(SIMD_ENV, request.param)
    return request.param


def empty_first_image(s: Splats) -> Splats:
    """Make image 0 of the batch hold zero real splats."""
    mask = s.mask.clone()
    mask[0] = False
    return Splats(s.xy, s.chol, s.rgb, mask)


def grads(image: torch.Tensor, s: Splats, weight: torch.Tensor):
    return torch.autograd.grad((image * weight).sum(), [s.xy, s.chol, s.rgb], allow_unused=False)


def with_garbage_padding(s: Splats) -> Splats:
    """The same splats with NaN centres, zero covariances and infinite colours in the padded rows."""
    xy, chol, rgb = s.xy.detach().clone(), s.chol.detach().clone(), s.rgb.detach().clone()
    xy[~s.mask] = float("nan")
    chol[~s.mask] = 0.0
    rgb[~s.mask] = float("inf")
    return Splats(xy, chol, rgb, s.mask)


def compare_with_reference(s: Splats, height: int, width: int, backend, device: str = "cpu"):
    """backend: a rasterize backend name, or render(splats, height, width). Returns its image and grads."""
    sd = Splats(*(t.detach().to(device).requires_grad_(True) for t in (s.xy, s.chol, s.rgb)), s.mask.to(device))
    fast = backend(sd, height, width) if callable(backend) else rasterize(sd, height, width, backend=backend)
    ref = render_reference(s, height, width, cutoff=CUTOFF)
    torch.testing.assert_close(fast.cpu(), ref, rtol=1e-5, atol=1e-5)
    weight = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1))
    fast_grads = grads(fast, sd, weight.to(device))
    for got, want, name in zip(fast_grads, grads(ref, s, weight), ("xy", "chol", "rgb")):
        scale = want.abs().amax().item() if want.numel() else 1.0
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"grad {name}: {m}")
        padded = ~s.mask
        assert (got.cpu()[padded] == 0).all(), f"grad {name} of padded rows must be exactly zero"
    return fast.detach().cpu(), [g.cpu() for g in fast_grads]


@pytest.mark.parametrize("case", CASES)
def test_cpu_matches_reference(case, simd):
    batch, n, height, width, kwargs = CASES[case]
    s = random_splats(batch, n, height, width, **kwargs)
    compare_with_reference(s, height, width, "cpu")


def test_simd_paths_give_the_same_bits(monkeypatch):
    """Every SIMD path evaluates the same float operations per pixel and sums in the same order, so
    image and gradients agree to the bit (a far stronger check than a tolerance)."""
    assert len(SIMD_PATHS) >= 2 and SIMD_PATHS[-2:] == ["portable", "scalar"]
    # Thin, large and off-image splats, padding, partial tiles at the right and bottom edges.
    s = random_splats(2, 300, 53, 70, scale=(0.05, 30.0), margin=10.0, keep=0.9)
    weight = torch.randn(2, 3, 53, 70, generator=torch.Generator().manual_seed(2))
    out = {}
    for path in SIMD_PATHS:
        monkeypatch.setenv(SIMD_ENV, path)
        assert simd_path() == path
        image = rasterize(s, 53, 70)
        out[path] = (image, *grads(image, s, weight))
    for path in SIMD_PATHS[1:]:
        for a, b, name in zip(out[SIMD_PATHS[0]], out[path], ("image", "xy", "chol", "rgb")):
            assert torch.equal(a, b), f"{path} differs from {SIMD_PATHS[0]} in {name}"


def test_gaussian_weight_is_within_1_08_ulp_of_exp(simd):
    """The kernels' exp(-s2 / 2) (one polynomial, splat2d.h) against float64 exp on s2 in [0, 174].

    One unit-red Gaussian per image row, centred at x = 0 with l11 from 310 to 5000 pixels, so the
    rendered red channel is the weight itself over s2 = (x / l11)^2 up to about 174 (cut-off 174)."""
    batch, width, cutoff = 48, 4096, 174.0
    l11 = torch.logspace(math.log10(310.0), math.log10(5000.0), batch)
    ones = torch.ones(batch, 1)
    s = Splats(torch.stack([0 * ones, 0.5 * ones], -1), torch.stack([l11[:, None], 0 * ones, ones], -1),
               torch.tensor([1.0, 0.0, 0.0]).expand(batch, 1, 3).contiguous(), torch.ones(batch, 1, dtype=torch.bool))
    w = rasterize(s, 1, width, cutoff=cutoff)[:, 0, 0]  # [B, W]
    u = (torch.arange(width) + 0.5)[None] * (1.0 / l11[:, None])  # the kernel's float32 s2 (v = 0)
    s2 = u * u
    inside = s2 <= cutoff
    assert (w[~inside] == 0).all()
    want = np.exp(-0.5 * s2[inside].double().numpy())
    ulp = np.abs(w[inside].double().numpy() - want) / np.spacing(want.astype(np.float32))
    assert inside.sum() > 100_000 and s2[inside].min() < 1e-4 and s2[inside].max() > 170
    assert ulp.max() <= 1.08, f"max error {ulp.max():.3f} ulp at s2 = {s2[inside][ulp.argmax()]:.4f}"


def test_a_gaussian_thinner_than_any_pixel_adds_nothing(simd):
    """l11 = 1e-30: every pixel is beyond its cut-off, at |u| up to 1e31. Its pairs must add exactly
    nothing to the image or to any gradient (0 * u stays 0; the dense reference's chol gradient is
    NaN here: 1 / l11^2 overflows)."""
    s = random_splats(1, 20, 16, 16, scale=(1.0, 3.0))
    xy, chol = s.xy.detach().clone(), s.chol.detach().clone()
    xy[0, 0] = torch.tensor([8.3, 8.5])
    chol[0, 0] = torch.tensor([1e-30, 0.5, 2.0])
    thin = Splats(xy.requires_grad_(), chol.requires_grad_(), s.rgb.detach().clone().requires_grad_(), s.mask)
    without = Splats(*(t.detach().clone().requires_grad_() for t in (xy, chol, s.rgb)), s.mask.clone())
    without.mask[0, 0] = False
    weight = torch.randn(1, 3, 16, 16)
    images = [rasterize(d, 16, 16) for d in (thin, without)]
    assert torch.equal(images[0], images[1])
    for got, want in zip(grads(images[0], thin, weight), grads(images[1], without, weight)):
        assert torch.equal(got, want)  # the thin row's are 0, like a padding row's


def test_simd_env_names_the_choices(monkeypatch):
    monkeypatch.setenv(SIMD_ENV, "avx9")
    with pytest.raises(ValueError, match=rf"{SIMD_ENV}=avx9: unknown SIMD path; choose one of .*portable, scalar"):
        rasterize(random_splats(1, 5, 8, 8), 8, 8)
    for unset in ("", "auto"):
        monkeypatch.setenv(SIMD_ENV, unset)
        assert simd_path() == SIMD_PATHS[0]
    lacking = [p for p in ("avx512", "avx2") if p not in SIMD_PATHS]
    for path in lacking:  # only on CPUs without them (on aarch64 they are unknown names)
        monkeypatch.setenv(SIMD_ENV, path)
        with pytest.raises(ValueError, match=rf"{SIMD_ENV}={path}: (this CPU lacks|unknown)"):
            simd_path()


@pytest.mark.parametrize("case", ["b3_37x53", "off_image", "thin", "large", "mixed_scales", "n0"])
def test_l2_loss_matches_autograd_through_the_reference(case, simd):
    """The fused CPU L2 loss (render, residual and backward per tile) against mean((reference - target)^2)
    and autograd, with a different weight on each image's loss."""
    batch, n, height, width, kwargs = CASES[case]
    s = random_splats(batch, n, height, width, **kwargs)
    target = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(3))
    weight = torch.rand(batch, generator=torch.Generator().manual_seed(4)) + 0.5
    fused = Splats(*(t.detach().clone().requires_grad_(True) for t in (s.xy, s.chol, s.rgb)), s.mask)
    got = l2_loss(fused, target)
    want = (render_reference(s, height, width, cutoff=CUTOFF) - target).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(l2_loss(s, target, backend="torch"), want, rtol=0, atol=0)  # composed elsewhere
    fields = [fused.xy, fused.chol, fused.rgb]
    for g, w, name in zip(torch.autograd.grad((got * weight).sum(), fields),
                          torch.autograd.grad((want * weight).sum(), [s.xy, s.chol, s.rgb]), ("xy", "chol", "rgb")):
        scale = w.abs().amax().item() if w.numel() else 1.0
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"grad {name}: {m}")


def test_l2_loss_gives_a_target_that_needs_one_its_gradient():
    """The fused pass has no image gradient; a target that asks for one (a learned target, an attack) gets
    autograd's through the dense reference, on every backend alike."""
    s = random_splats(2, 30, 16, 24, requires_grad=False)
    target = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(1))
    weight = torch.tensor([1.0, 3.0])
    got, want = (target.clone().requires_grad_(True) for _ in range(2))
    (l2_loss(s, got) * weight).sum().backward()
    ((render_reference(s, 16, 24, cutoff=CUTOFF) - want).square().mean(dim=(1, 2, 3)) * weight).sum().backward()
    torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-7)
    assert got.grad.abs().sum() > 0


@pytest.mark.parametrize("loss", ["rasterize", "l2_loss"])
def test_a_second_derivative_through_the_kernels_is_refused_not_silently_zero(loss):
    """A gradient penalty needs the gradient's own gradient, which the CPU kernels do not give: asking for it
    must raise, not add nothing to the penalty's term."""
    s = random_splats(1, 10, 12, 12)
    target = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    out = (rasterize(s, 12, 12, backend="cpu") - target).square().mean() if loss == "rasterize" else \
        l2_loss(s, target, backend="cpu").sum()
    if loss == "rasterize":  # raised where the penalty's term reaches the kernel's backward
        g, = torch.autograd.grad(out, s.xy, create_graph=True)
        with pytest.raises(RuntimeError, match="once_differentiable"):
            (out + g.square().sum()).backward()
    else:  # the fused pass's gradients are constants saved in its forward: raised when they are asked for
        with pytest.raises(RuntimeError, match="l2_loss: the fused CPU pass has no second derivative"):
            torch.autograd.grad(out, s.xy, create_graph=True)


def test_l2_loss_names_a_bad_target():
    s = random_splats(2, 5, 8, 8, requires_grad=False)
    with pytest.raises(ValueError, match=r"target must be \[B, 3, H, W\] with B = 2, got \(1, 3, 8, 8\)"):
        l2_loss(s, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="target must be float32 on cpu, got torch.float64"):
        l2_loss(s, torch.zeros(2, 3, 8, 8, dtype=torch.float64))


def test_cpu_image_with_no_splats_next_to_full_ones():
    s = empty_first_image(random_splats(3, 50, 37, 53))
    compare_with_reference(s, 37, 53, "cpu")
    assert (rasterize(s, 37, 53)[0] == 0).all()


def test_reference_is_textbook_eq1():
    """Reference (no cut-off) vs float64 sum_i c_i exp(-0.5 d^T Sigma^-1 d) with Sigma = L L^T inverted by linalg."""
    s = random_splats(2, 30, 20, 23, scale=(0.5, 8.0), keep=0.7, requires_grad=False)
    L = torch.zeros(2, 30, 2, 2, dtype=torch.float64)
    L[..., 0, 0], L[..., 1, 0], L[..., 1, 1] = s.chol.double().unbind(-1)
    inv = torch.linalg.inv(L @ L.transpose(-1, -2))
    ys, xs = torch.meshgrid(torch.arange(20.0) + 0.5, torch.arange(23.0) + 0.5, indexing="ij")
    p = torch.stack([xs, ys], -1).reshape(-1, 2).double()  # [P, 2]
    d = p[None, None] - s.xy.double()[:, :, None]  # [B, N, P, 2]
    m = torch.einsum("bnpi,bnij,bnpj->bnp", d, inv, d)
    want = torch.einsum("bnp,bnc->bcp", torch.exp(-0.5 * m) * s.mask[..., None], s.rgb.double()).reshape(2, 3, 20, 23)
    torch.testing.assert_close(render_reference(s, 20, 23).double(), want, rtol=1e-5, atol=1e-6)


def test_cutoff_truncation_is_within_its_bound():
    """Dropping pairs beyond s2 > cutoff changes a pixel by at most exp(-cutoff / 2) * sum_i |c_i|."""
    s = random_splats(1, 40, 32, 32, scale=(2.0, 10.0), requires_grad=False)
    exact = render_reference(s, 32, 32)
    cut = rasterize(s, 32, 32)
    bound = math.exp(-CUTOFF / 2) * s.rgb.abs().sum(dim=1)  # [B, 3]
    assert ((exact - cut).abs() <= bound[..., None, None] + 1e-6).all()
    assert (exact - cut).abs().max() > 0  # the cut-off did bite here: the test means something


@pytest.mark.parametrize("cutoff", [1.0, 4.0, 30.0])
def test_the_cutoff_argument_is_the_one_rendered_with(cutoff):
    """Every backend applies the cut-off it is given (the default, 2 ln 255, is only a default)."""
    s = random_splats(2, 40, 37, 53, scale=(2.0, 9.0), requires_grad=False)
    got = rasterize(s, 37, 53, cutoff=cutoff)
    torch.testing.assert_close(got, render_reference(s, 37, 53, cutoff=cutoff), rtol=1e-5, atol=1e-5)
    assert (got - rasterize(s, 37, 53)).abs().max() > 1e-3  # and it differs from the default's render
    target = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    want = (render_reference(s, 37, 53, cutoff=cutoff) - target).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(l2_loss(s, target, cutoff=cutoff), want, rtol=1e-5, atol=1e-7)  # the fused loss too


def test_thread_count_does_not_change_a_bit(simd):
    s = random_splats(2, 300, 96, 80, scale=(1.0, 10.0))
    weight = torch.randn(2, 3, 96, 80)
    out = {}
    for threads in (1, 2):
        with num_threads(threads):
            image = rasterize(s, 96, 80)
            out[threads] = (image, *grads(image, s, weight))
    for a, b in zip(out[1], out[2]):
        assert torch.equal(a, b)


def test_the_fused_loss_gives_the_bits_of_a_render_and_a_backward(simd):
    """The fused loss's backward reads the weights its render kept, where the backward of rasterize
    evaluates them again: given the residual's gradient in the same float32 operations, the same bits,
    on edge tiles and on either thread count."""
    from gs_lightning import _C

    height, width = 53, 70
    s = random_splats(2, 200, height, width, scale=(0.5, 30.0), margin=10.0, requires_grad=False)
    fields = (s.xy, s.chol, s.rgb, s.mask)
    target = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(5))
    for threads in (1, 2):
        with num_threads(threads):
            _, *fused = _C.l2_loss(*fields, target, CUTOFF)
            image, binning = _C.forward(*fields, height, width, CUTOFF)
            residual_grad = 2.0 * (image - target) / (3 * height * width)  # d mean(r^2) / d render
            backward = _C.backward(*fields, residual_grad, CUTOFF, binning)
        for got, want in zip(fused, backward):
            assert torch.equal(got, want)


def test_backward_differentiates_the_splats_its_forward_binned():
    """The CPU backward reuses its forward's binning: the same bits as binning again, and the gradient
    is of the splats that were rendered even where their storage changed behind autograd's back."""
    from gs_lightning import _C

    s = random_splats(2, 60, 37, 53, keep=0.8, requires_grad=False)
    fields, weight = (s.xy, s.chol, s.rgb, s.mask), torch.randn(2, 3, 37, 53)
    image, binning = _C.forward(*fields, 37, 53, CUTOFF)
    rebinned = _C.backward(*fields, weight, CUTOFF)
    for got, want in zip(_C.backward(*fields, weight, CUTOFF, binning), rebinned):
        assert torch.equal(got, want)
    leaves = Splats(*(t.clone().requires_grad_(True) for t in fields[:3]), s.mask)
    image = rasterize(leaves, 37, 53)
    leaves.xy.data += 3.0  # unseen by autograd's version counter
    image.backward(weight)
    for got, want in zip((leaves.xy.grad, leaves.chol.grad, leaves.rgb.grad), rebinned):
        assert torch.equal(got, want)


@pytest.mark.parametrize("other", ["batch", "n", "size", "cutoff"])
def test_backward_rejects_the_binning_of_another_forward(other):
    from gs_lightning import _C

    s = random_splats(2, 10, 16, 16, requires_grad=False)
    fields = (s.xy, s.chol, s.rgb, s.mask)
    _, binning = _C.forward(*fields, 16, 16, CUTOFF)
    one = tuple(t[:1].contiguous() for t in fields)
    fewer = tuple(t[:, :5].contiguous() for t in fields)
    call = {"batch": lambda: _C.backward(*one, torch.zeros(1, 3, 16, 16), CUTOFF, binning),
            "n": lambda: _C.backward(*fewer, torch.zeros(2, 3, 16, 16), CUTOFF, binning),
            "size": lambda: _C.backward(*fields, torch.zeros(2, 3, 16, 17), CUTOFF, binning),
            "cutoff": lambda: _C.backward(*fields, torch.zeros(2, 3, 16, 16), 4.0, binning)}[other]
    with pytest.raises(RuntimeError, match="binning passed to backward is of another forward"):
        call()


def test_padding_rows_are_never_read():
    """Garbage (NaN, zero covariance) in padded rows changes nothing."""
    s = random_splats(2, 30, 24, 24, keep=0.6, requires_grad=False)
    garbage = with_garbage_padding(s)
    torch.testing.assert_close(rasterize(garbage, 24, 24), rasterize(s, 24, 24), rtol=0, atol=0)
    torch.testing.assert_close(rasterize(garbage, 24, 24, backend="torch"), rasterize(s, 24, 24), rtol=1e-5, atol=1e-5)


def test_non_contiguous_inputs_are_accepted():
    s = random_splats(3, 20, 16, 16, requires_grad=False)
    # Same values, laid out [N, B, *] in memory.
    nc = Splats(*(t.transpose(0, 1).contiguous().transpose(0, 1) for t in (s.xy, s.chol, s.rgb, s.mask)))
    assert not nc.xy.is_contiguous()
    torch.testing.assert_close(rasterize(nc, 16, 16), rasterize(s, 16, 16), rtol=0, atol=0)


def _bad(s: Splats, **fields) -> Splats:
    return Splats(**{"xy": s.xy, "chol": s.chol, "rgb": s.rgb, "mask": s.mask, **fields})


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda s: _bad(s, xy=s.xy[..., :1]), r"splats\.xy must have shape \[B, N, 2\]"),
        (lambda s: _bad(s, chol=s.chol[:, :3]), r"splats\.chol has shape"),
        (lambda s: _bad(s, rgb=s.rgb.double()), r"splats\.rgb must be float32, got torch\.float64"),
        (lambda s: _bad(s, mask=s.mask.float()), r"splats\.mask must be a bool tensor"),
        (lambda s: _bad(s, xy=s.xy.clone().index_fill_(1, torch.tensor([3]), float("nan"))), r"splats\.xy holds NaN"),
        (lambda s: _bad(s, rgb=s.rgb.clone().index_fill_(1, torch.tensor([2]), float("inf"))), r"splats\.rgb holds"),
        (lambda s: _bad(s, chol=s.chol * torch.tensor([0.0, 1.0, 1.0])), r"splats\.chol l11 must be > 0"),
        (lambda s: _bad(s, chol=s.chol * torch.tensor([1.0, 1.0, -1.0])), r"splats\.chol l22 must be > 0"),
        (lambda s: _bad(s, units="unit"), r"takes splats in 'pixels' units, got 'unit'"),
        (lambda s: _bad(s, units="mm"), r"splats\.units must be one of \('pixels', 'unit'\), got 'mm'"),
    ],
)
@pytest.mark.parametrize("call", ["rasterize", "l2_loss", "torch"])
def test_bad_splats_name_the_field(change, match, call):
    s = random_splats(2, 5, 8, 8, requires_grad=False)
    with pytest.raises(ValueError, match=match) as error:
        if call == "l2_loss":  # the CPU backend's fused loss checks values in C++ too
            l2_loss(change(s), torch.zeros(2, 3, 8, 8))
        else:
            rasterize(change(s), 8, 8, backend="cpu" if call == "rasterize" else "torch")
    assert error.value.__context__ is None or error.value.__suppress_context__  # one message, not a chain


def test_splats_to_a_dtype_casts_the_fields_and_keeps_the_mask_bool():
    s = random_splats(2, 5, 8, 8, requires_grad=False)
    half = s.to(torch.float16)
    assert [t.dtype for t in (half.xy, half.chol, half.rgb, half.mask)] == [torch.float16] * 3 + [torch.bool]
    back = half.to(torch.float32)
    assert torch.equal(back.mask, s.mask) and back.units == s.units
    rounded = Splats(*(t.half().float() for t in (s.xy, s.chol, s.rgb)), s.mask)
    assert torch.equal(rasterize(back, 8, 8), rasterize(rounded, 8, 8))


@pytest.mark.parametrize("entry", ["forward", "backward", "l2_loss"])
@pytest.mark.parametrize("field, column, value", [("xy", 1, float("nan")), ("chol", 0, 0.0), ("chol", 2, -1.0),
                                                  ("chol", 1, float("inf")), ("rgb", 2, float("-inf"))])
def test_extension_checks_values_of_real_rows_only(entry, field, column, value):
    """The CPU backend checks the values itself (rasterize leaves it to the binning), naming the splat,
    and reads no padding row."""
    from gs_lightning import _C

    s = random_splats(3, 6, 8, 8, requires_grad=False)
    mask = torch.tensor([True, False, True, True, True, False]).repeat(3, 1)
    image = torch.zeros(3, 3, 8, 8)
    call = {"forward": lambda t: _C.forward(*t, 8, 8, CUTOFF), "backward": lambda t: _C.backward(*t, image, CUTOFF),
            "l2_loss": lambda t: _C.l2_loss(*t, image, CUTOFF)}[entry]
    b, real, padding = 2, 4, 1
    for row, fails in ((padding, False), (real, True)):
        fields = {"xy": s.xy.clone(), "chol": s.chol.clone(), "rgb": s.rgb.clone(), "mask": mask}
        fields[field][b, row, column] = value
        if fails:
            with pytest.raises(ValueError, match=rf"splat {row} of image {b} is real but holds NaN or inf"):
                call(tuple(fields.values()))
        else:
            call(tuple(fields.values()))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 0}, r"height must be a positive int"),
        ({"width": 7.5}, r"width must be a positive int"),
        ({"backend": "opengl"}, r"backend must be one of"),
        ({"backend": "cuda"}, r"backend='cuda' needs CUDA tensors, but the splats are on cpu"),
        ({"cutoff": float("nan")}, r"cutoff must be a positive finite number"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    s = random_splats(1, 5, 8, 8, requires_grad=False)
    args = {"height": 8, "width": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        rasterize(s, args.pop("height"), args.pop("width"), **args)


def test_a_numpy_integer_size_renders_as_the_int():
    """An image's .shape gives numpy integers: they are sizes like any int."""
    s = random_splats(1, 5, 8, 6, requires_grad=False)
    for render in (rasterize, render_reference):
        assert torch.equal(render(s, np.int64(8), np.int32(6)), render(s, 8, 6))


def test_extension_rejects_bad_direct_calls():
    """The C++ entry points check shapes themselves, so a direct call cannot read out of bounds."""
    from gs_lightning import _C

    s = random_splats(2, 4, 8, 8, requires_grad=False)
    with pytest.raises(RuntimeError, match="chol must be"):
        _C.forward(s.xy, s.chol[:, :2].contiguous(), s.rgb, s.mask, 8, 8, CUTOFF)
    strided = s.xy.transpose(0, 1).contiguous().transpose(0, 1)
    with pytest.raises(RuntimeError, match="contiguous"):
        _C.forward(strided, s.chol, s.rgb, s.mask, 8, 8, CUTOFF)
    # The size limits are the bindings' own, for both backends: one side's tiles must fit a CUDA grid.
    with pytest.raises(RuntimeError, match="too large"):
        _C.forward(s.xy, s.chol, s.rgb, s.mask, 65535 * 16 + 1, 8, CUTOFF)


needs_gpu = pytest.mark.skipif(
    not (torch.cuda.is_available() and cuda_backend_available()), reason="needs a CUDA device and a CUDA build"
)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", CASES)
def test_cuda_matches_reference(case):
    batch, n, height, width, kwargs = CASES[case]
    compare_with_reference(random_splats(batch, n, height, width, **kwargs), height, width, "cuda", "cuda")


@pytest.mark.gpu
@needs_gpu
def test_cuda_counts_every_gaussian_of_a_crowded_tile():
    """1000 Gaussians on one 16x16 tile: all of them count (GaussianImage stopped at 256)."""
    batch, n, height, width, kwargs = CROWDED_TILE
    compare_with_reference(random_splats(batch, n, height, width, **kwargs), height, width, "cuda", "cuda")


@pytest.mark.gpu
@needs_gpu
def test_cuda_matches_cpu_on_a_fitting_sized_batch():
    s = random_splats(16, 400, 224, 224, scale=(3.0, 9.0), requires_grad=False)
    torch.testing.assert_close(rasterize(s.to("cuda"), 224, 224).cpu(), rasterize(s, 224, 224), rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@needs_gpu
def test_cuda_gradients_match_cpu_on_a_fitting_sized_batch():
    s = random_splats(16, 400, 224, 224, scale=(3.0, 9.0))
    weight = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    on_cuda = Splats(*(t.detach().cuda().requires_grad_(True) for t in (s.xy, s.chol, s.rgb)), s.mask.cuda())
    got = grads(rasterize(on_cuda, 224, 224), on_cuda, weight.cuda())
    for g, want, name in zip(got, grads(rasterize(s, 224, 224), s, weight), ("xy", "chol", "rgb")):
        torch.testing.assert_close(g.cpu(), want, rtol=1e-4, atol=1e-5 * want.abs().amax().item(),
                                   msg=lambda m: f"grad {name}: {m}")
