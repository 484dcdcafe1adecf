"""The splat sum render (paper Eq. 1) and its dense PyTorch reference.

    I(x, y) = sum_i c_i * exp(-0.5 * d_i^T Sigma_i^-1 d_i),   d_i = (x, y) - mu_i

at pixel centres, no alpha blending, no depth order, unclamped.

`rasterize` is differentiable in xy, chol and rgb and runs on the compiled
extension (`gs_lightning._C`, CPU or CUDA); this module is its only caller.
`l2_loss` is fitting's per-image MSE against a target, fused into one pass per
tile on the CPU. `render_reference` evaluates every pixel x every Gaussian with
plain tensor ops and autograd: slow, obviously correct, and the oracle of the
tests. The CPU backend runs on the fastest SIMD path the CPU has (simd_path).

The compiled backends skip a pair whose squared Mahalanobis distance exceeds
`cutoff`. The default, 2 ln 255 ~= 11.09 (a 3.33-sigma ellipse), is where a
unit-colour Gaussian falls below one 8-bit level, so the truncation is below
what a uint8 image can show; the design's minimum is 3 sigma (9). The CPU
backend takes a cut-off above 174 as 174: past it a weight is below e^-87, less
than the least normal float.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from gs_lightning.splats import Splats

CUTOFF = 2.0 * math.log(255.0)
BACKENDS = ("auto", "cpu", "cuda", "torch")
SIMD_ENV = "GS_LIGHTNING_SIMD"  # forces the CPU backend's SIMD path (see simd_path)

_EXTENSION = None


def _extension():
    global _EXTENSION
    if _EXTENSION is None:
        try:
            from gs_lightning import _C
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError(
                "gs_lightning._C is not built. Build it with `make build` "
                "(pip install --no-build-isolation -e .), or use backend='torch'."
            ) from e
        _EXTENSION = _C
    return _EXTENSION


def simd_paths() -> list[str]:
    """The CPU backend's SIMD paths that this CPU runs, fastest first (a subset of
    avx512, avx2, portable, scalar). Every path computes the same bits."""
    return list(_extension().simd_paths())


def simd_path() -> str:
    """The SIMD path the CPU backend uses now: the one SIMD_ENV names (avx512 | avx2 |
    portable | scalar | auto), read at every call, or else the fastest. A name that is
    unknown, or a path this CPU lacks, is a ValueError naming the variable and the choices."""
    return _extension().simd_path()


def cuda_backend_available() -> bool:
    """Whether the extension was built with its CUDA backend."""
    try:
        return bool(_extension().has_cuda())
    except ImportError:
        return False


def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"rasterize: backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = "cuda" if device.type == "cuda" else "cpu"
    if backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"rasterize: backend='cuda' needs CUDA tensors, but the splats are on {device}")
        if not cuda_backend_available():
            raise RuntimeError(
                "rasterize: gs_lightning._C was built without its CUDA backend; rebuild on a machine with a "
                "CUDA toolkit (FORCE_CUDA=1 make build), or pass backend='torch'"
            )
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"rasterize: backend='cpu' needs CPU tensors, but the splats are on {device}")
    return backend


def _check_size(height, width) -> tuple[int, int]:
    """height, width as Python ints; numpy's integers (an image's .shape) are integers too."""
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v <= 0:
            raise ValueError(f"rasterize: {name} must be a positive int, got {v!r}")
    return int(height), int(width)


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, chol, rgb, mask, height, width, cutoff):
        ctx.save_for_backward(xy, chol, rgb, mask)
        ctx.cutoff = cutoff
        # The CPU backend's binning (None on CUDA), for backward to reuse: it holds its own copy of the
        # Gaussians, so backward differentiates the splats that were rendered.
        image, ctx.binning = _extension().forward(xy, chol, rgb, mask, height, width, cutoff)
        return image

    @staticmethod
    @once_differentiable  # the kernels' gradients are not differentiable again: say so, not a silent zero
    def backward(ctx, grad_image):
        xy, chol, rgb, mask = ctx.saved_tensors
        # Released here, not with the graph (a caller may keep the image); a second backward
        # (retain_graph) bins again.
        binning, ctx.binning = ctx.binning, None
        grad_xy, grad_chol, grad_rgb = _extension().backward(
            xy, chol, rgb, mask, grad_image.contiguous(), ctx.cutoff, binning
        )
        return grad_xy, grad_chol, grad_rgb, None, None, None, None


def rasterize(
    splats: Splats,
    height: int,
    width: int,
    *,
    backend: str = "auto",
    cutoff: float = CUTOFF,
) -> Tensor:  # [B, 3, H, W]
    """Render a batch of splat sets; differentiable in xy, chol and rgb.

    backend: "auto" (the device's compiled backend) | "cpu" | "cuda" | "torch" (the dense reference,
    which then applies the same cut-off).
    """
    height, width = _check_size(height, width)
    return _render(splats, height, width, _check_call(splats, height, width, backend, cutoff), cutoff)


def _render(splats: Splats, height: int, width: int, backend: str, cutoff: float) -> Tensor:  # [B, 3, H, W]
    """rasterize once its checks have passed (backend: the resolved one)."""
    # Always float32: an autocast around the caller (bf16-mixed training) must not reach the render.
    with torch.autocast(splats.xy.device.type, enabled=False):
        if backend == "torch":
            return render_reference(splats, height, width, cutoff=cutoff)
        with _values_checked_by_extension(splats):
            return _Rasterize.apply(*_fields(splats), height, width, float(cutoff))


def _check_call(splats: Splats, height, width, backend: str, cutoff) -> str:
    """The checks of rasterize and l2_loss; returns the backend that runs."""
    _check_size(height, width)
    splats.check_layout("splats")
    splats.expect_units("pixels", "rasterize")
    if not (isinstance(cutoff, (int, float)) and cutoff > 0 and math.isfinite(cutoff)):
        raise ValueError(f"rasterize: cutoff must be a positive finite number, got {cutoff!r}")
    backend = _resolve_backend(backend, splats.xy.device)
    if backend != "cpu":
        splats.check_values("splats")
    return backend


@contextlib.contextmanager
def _values_checked_by_extension(splats: Splats):
    """The CPU backend checks the splats' values as it bins them, in C++: at batch 1 the same checks
    as torch ops cost a tenth of the render. Its error says only which splat is bad, so on an error
    check_values runs to raise the message that names the field and the value."""
    try:
        yield
    except ValueError:
        try:
            splats.check_values("splats")
        except ValueError as precise:
            raise precise from None  # the extension's terser error is not its cause
        raise


def _fields(splats: Splats) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # as the extension takes them
    return splats.xy.contiguous(), splats.chol.contiguous(), splats.rgb.contiguous(), splats.mask.contiguous()


class _L2Loss(torch.autograd.Function):
    # The fused kernel returns the gradients with the loss; backward only scales them per image.
    @staticmethod
    def forward(ctx, xy, chol, rgb, mask, target, cutoff):
        loss, *grads = _extension().l2_loss(xy, chol, rgb, mask, target, cutoff)
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # grad_loss: [B]
        if torch.is_grad_enabled():  # create_graph: the saved gradients would pass for constants
            raise RuntimeError("l2_loss: the fused CPU pass has no second derivative (create_graph=True); "
                               "use backend='torch'")
        scale = grad_loss[:, None, None]
        return *(g * scale for g in ctx.saved_tensors), None, None, None


def l2_loss(
    splats: Splats,
    target: Tensor,  # [B, 3, H, W] float32
    *,
    backend: str = "auto",
    cutoff: float = CUTOFF,
) -> Tensor:  # [B]
    """Per image, the mean over (3, H, W) of (rasterize(splats) - target)^2; differentiable in xy, chol
    and rgb. On the CPU backend one pass per tile renders, takes the residual and runs the backward in
    cache, with no [B, 3, H, W] render or image gradient in memory; elsewhere, or where the target needs a
    gradient of its own (the fused pass gives it none), it is rasterize + the mean."""
    if target.dim() != 4 or target.shape[1] != 3 or target.shape[0] != splats.xy.shape[0]:
        raise ValueError(f"l2_loss: target must be [B, 3, H, W] with B = {splats.xy.shape[0]}, got {tuple(target.shape)}")
    if target.dtype != torch.float32 or target.device != splats.xy.device:
        raise ValueError(f"l2_loss: target must be float32 on {splats.xy.device}, got {target.dtype} on {target.device}")
    height, width = target.shape[2:]
    backend = _check_call(splats, height, width, backend, cutoff)
    if backend != "cpu" or target.requires_grad:  # checked once: rasterize would check again
        render = _render(splats, height, width, backend, cutoff)
        return (render - target).square().mean(dim=(1, 2, 3))
    with torch.autocast(splats.xy.device.type, enabled=False), _values_checked_by_extension(splats):
        return _L2Loss.apply(*_fields(splats), target.contiguous(), float(cutoff))


def render_reference(splats: Splats, height: int, width: int, *, cutoff: float | None = None) -> Tensor:
    """Dense Eq. 1: every pixel x every Gaussian, autograd gradients. [B, 3, H, W].

    d^T Sigma^-1 d = |L^-1 d|^2 with L^-1 d by forward substitution,
    u = dx / l11, v = (dy - l21 u) / l22, in the float32 operations of
    extensions/splat2d/splat2d.h, so that with `cutoff` set both decide
    s2 <= cutoff alike. cutoff=None evaluates every pair (exact Eq. 1).
    """
    height, width = _check_size(height, width)
    splats.expect_units("pixels", "render_reference")
    xy, chol, rgb, mask = splats.xy, splats.chol, splats.rgb, splats.mask
    B = xy.shape[0]
    # Padding rows may hold anything (NaN included): replace them by a harmless
    # zero-colour unit Gaussian so no NaN reaches the sum or the gradients.
    real = mask[..., None]
    xy = torch.where(real, xy, torch.zeros_like(xy))
    chol = torch.where(real, chol, torch.ones_like(chol))
    rgb = torch.where(real, rgb, torch.zeros_like(rgb))
    ys = torch.arange(height, dtype=torch.float32, device=xy.device) + 0.5
    xs = torch.arange(width, dtype=torch.float32, device=xy.device) + 0.5
    py, px = torch.meshgrid(ys, xs, indexing="ij")
    dx = px.reshape(1, 1, -1) - xy[..., 0:1]  # [B, N, HW]
    dy = py.reshape(1, 1, -1) - xy[..., 1:2]
    u = dx * (1.0 / chol[..., 0:1])
    v = (dy - chol[..., 1:2] * u) * (1.0 / chol[..., 2:3])
    s2 = u * u + v * v
    w = torch.exp(-0.5 * s2)
    if cutoff is not None:
        w = torch.where(s2 <= cutoff, w, torch.zeros_like(w))
    return torch.einsum("bnp,bnc->bcp", w, rgb).reshape(B, 3, height, width)
