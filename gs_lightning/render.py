"""The splat sum render (paper Eq. 1) and its dense PyTorch reference.

    I(x, y) = sum_i c_i * exp(-0.5 * d_i^T Sigma_i^-1 d_i),   d_i = (x, y) - mu_i

at pixel centres, no alpha blending, no depth order, unclamped.

`rasterize` is differentiable in xy, chol and rgb and runs on the compiled
extension (`gs_lightning._C`, CPU or CUDA); this module is its only caller.
`render_reference` evaluates every pixel x every Gaussian with plain tensor
ops and autograd: slow, obviously correct, and the oracle of the tests.

The compiled backends skip a pair whose squared Mahalanobis distance exceeds
`cutoff`. The default, 2 ln 255 ~= 11.09 (a 3.33-sigma ellipse), is where a
unit-colour Gaussian falls below one 8-bit level, so the truncation is below
what a uint8 image can show; the design's minimum is 3 sigma (9).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

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


def _check_size(height, width) -> None:
    for name, v in (("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"rasterize: {name} must be a positive int, got {v!r}")


class _Rasterize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xy, chol, rgb, mask, height, width, cutoff):
        ctx.save_for_backward(xy, chol, rgb, mask)
        ctx.cutoff = cutoff
        return _extension().forward(xy, chol, rgb, mask, height, width, cutoff)

    @staticmethod
    def backward(ctx, grad_image):
        xy, chol, rgb, mask = ctx.saved_tensors
        grad_xy, grad_chol, grad_rgb = _extension().backward(xy, chol, rgb, mask, grad_image.contiguous(), ctx.cutoff)
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
    _check_size(height, width)
    splats.check("splats")
    if not (isinstance(cutoff, (int, float)) and cutoff > 0 and math.isfinite(cutoff)):
        raise ValueError(f"rasterize: cutoff must be a positive finite number, got {cutoff!r}")
    backend = _resolve_backend(backend, splats.xy.device)
    if backend == "torch":
        return render_reference(splats, height, width, cutoff=cutoff)
    return _Rasterize.apply(
        splats.xy.contiguous(),
        splats.chol.contiguous(),
        splats.rgb.contiguous(),
        splats.mask.contiguous(),
        height,
        width,
        float(cutoff),
    )


def render_reference(splats: Splats, height: int, width: int, *, cutoff: float | None = None) -> Tensor:
    """Dense Eq. 1: every pixel x every Gaussian, autograd gradients. [B, 3, H, W].

    d^T Sigma^-1 d = |L^-1 d|^2 with L^-1 d by forward substitution,
    u = dx / l11, v = (dy - l21 u) / l22, in the float32 operations of
    extensions/splat2d/splat2d.h, so that with `cutoff` set both decide
    s2 <= cutoff alike. cutoff=None evaluates every pair (exact Eq. 1).
    """
    _check_size(height, width)
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
