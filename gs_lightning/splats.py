"""Splats: the one data type that crosses every boundary (fit, data, models).

A batch of splat sets, padded to a common N with a boolean mask, in one of two units that the type
carries (`units`):

    pixels  of the image they were fitted to: what the rasterizer takes;
    unit    the unit square, resolution-free: what the splat encoder takes (a fitted shard's rows).

On disk a set is stored per image as unit-square rows [n, 8] = (x/W, y/H, l11/W, l21/H, l22/H, r, g, b), in
one of gs_lightning/codec.py's records: float16 (16 bytes a splat, the paper's accounting) or quantized.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

RECORD_DIM = 8
BYTES_PER_SPLAT = RECORD_DIM * 2  # float16
UNITS = ("pixels", "unit")


@dataclass
class Splats:
    xy: Tensor  # [B, N, 2] centres, pixels; pixel (i, j) is centred at (j + 0.5, i + 0.5)
    chol: Tensor  # [B, N, 3] (l11, l21, l22), Sigma = L L^T, pixels; l11, l22 > 0
    rgb: Tensor  # [B, N, 3] colour weights, unclamped
    mask: Tensor  # [B, N] bool, which rows are real
    units: str = "pixels"  # of xy and chol: "pixels" | "unit" (the unit square)

    @property
    def batch_size(self) -> int:
        return self.xy.shape[0]

    def counts(self) -> Tensor:  # [B] real splats per image
        return self.mask.sum(dim=1)

    def to(self, *args, **kwargs) -> "Splats":
        """Tensor.to on xy, chol and rgb; the mask only follows them to their device (it stays bool)."""
        xy, chol, rgb = (t.to(*args, **kwargs) for t in (self.xy, self.chol, self.rgb))
        return Splats(xy, chol, rgb, self.mask.to(xy.device), self.units)

    def detach(self) -> "Splats":
        return Splats(self.xy.detach(), self.chol.detach(), self.rgb.detach(), self.mask, self.units)

    def check(self, name: str = "splats") -> None:
        """Raise ValueError naming the field when shapes, dtypes or values are wrong.

        Only real rows (mask True) must be finite with l11, l22 > 0: padding may
        hold anything and is never read by a renderer.
        """
        self.check_layout(name)
        self.check_values(name)

    def check_layout(self, name: str = "splats") -> None:
        """check's shapes, dtypes and devices: a few Python comparisons, no tensor op."""
        for field, last in (("xy", 2), ("chol", 3), ("rgb", 3)):
            t = getattr(self, field)
            if not isinstance(t, Tensor):
                raise TypeError(f"{name}.{field} must be a torch.Tensor, got {type(t).__name__}")
            if t.dim() != 3 or t.shape[-1] != last:
                raise ValueError(f"{name}.{field} must have shape [B, N, {last}], got {tuple(t.shape)}")
            if t.dtype != torch.float32:
                raise ValueError(f"{name}.{field} must be float32, got {t.dtype}")
        B, N = self.xy.shape[:2]
        for field in ("chol", "rgb"):
            if getattr(self, field).shape[:2] != (B, N):
                raise ValueError(
                    f"{name}.{field} has shape {tuple(getattr(self, field).shape)}, but xy says [B, N] = [{B}, {N}]"
                )
        if not isinstance(self.mask, Tensor) or self.mask.dtype != torch.bool or self.mask.shape != (B, N):
            got = f"{tuple(self.mask.shape)} {self.mask.dtype}" if isinstance(self.mask, Tensor) else type(self.mask)
            raise ValueError(f"{name}.mask must be a bool tensor of shape [{B}, {N}], got {got}")
        devices = {t.device for t in (self.xy, self.chol, self.rgb, self.mask)}
        if len(devices) > 1:
            raise ValueError(f"{name} fields are on several devices: {sorted(map(str, devices))}")
        if self.units not in UNITS:
            raise ValueError(f"{name}.units must be one of {UNITS}, got {self.units!r}")

    def expect_units(self, units: str, who: str) -> None:
        """Raise ValueError unless the splats are in `units`: `who` takes only those."""
        if self.units != units:
            how = ("Splats.from_unit_rows(rows, mask, height, width)" if units == "pixels" else
                   "Splats.from_unit_rows(splats.unit_rows(height, width), splats.mask)")
            raise ValueError(f"{who} takes splats in {units!r} units, got {self.units!r}; convert with {how}")

    def check_values(self, name: str = "splats") -> None:
        """check's values, once the layout holds: real rows finite, with l11, l22 > 0."""
        real = self.mask
        if not (invalid_rows(torch.cat([self.xy, self.chol, self.rgb], -1)) & real).any():
            return  # the common case in a few ops; the search below names the first bad value
        for field in ("xy", "chol", "rgb"):
            bad = ~torch.isfinite(getattr(self, field)).all(dim=-1) & real
            if bad.any():
                b, n = bad.nonzero()[0].tolist()
                raise ValueError(f"{name}.{field} holds NaN or inf at image {b}, splat {n}")
        for k, label in ((0, "l11"), (2, "l22")):
            bad = (self.chol[..., k] <= 0) & real
            if bad.any():
                b, n = bad.nonzero()[0].tolist()
                value = self.chol[b, n, k].item()
                raise ValueError(f"{name}.chol {label} must be > 0, got {value} at image {b}, splat {n}")

    # ---- rows: [n, 8] in the unit square, what a record (gs_lightning/codec.py) stores -------------------

    def unit_rows(self, height: int, width: int) -> Tensor:  # [B, N, 8], differentiable
        """(x/W, y/H, l11/W, l21/H, l22/H, r, g, b) per splat of these pixel splats: resolution-free."""
        self.expect_units("pixels", "unit_rows")
        return torch.cat([self.xy, self.chol, self.rgb], dim=-1) / _unit_scale(height, width, self.xy.device)

    @classmethod
    def from_unit_rows(cls, rows: Tensor, mask: Tensor, height: int | None = None,
                       width: int | None = None) -> "Splats":  # rows [B, N, 8], mask [B, N]
        """Splats in pixels of a height x width image, or in the unit square when no size is given."""
        if (height is None) != (width is None):
            raise ValueError(f"give both height and width (pixels) or neither (the unit square), got height={height}, "
                             f"width={width}")
        units = "unit" if height is None else "pixels"
        if units == "pixels":
            rows = rows * _unit_scale(height, width, rows.device)
        # Padding rows get a harmless unit covariance so nothing downstream divides by zero.
        chol = torch.where(mask[..., None], rows[..., 2:5], rows.new_tensor([1.0, 0.0, 1.0]))
        return cls(rows[..., 0:2].contiguous(), chol.contiguous(), rows[..., 5:8].contiguous(), mask, units)

    def to_rows(self, height: int, width: int) -> list[np.ndarray]:
        """One float32 [n_b, 8] array of unit-square rows per image, real rows only (a record stores them)."""
        rows = self.unit_rows(height, width).detach()
        return [rows[b][self.mask[b]].cpu().numpy() for b in range(self.batch_size)]

    @classmethod
    def from_rows(cls, rows: list[np.ndarray], height: int | None = None, width: int | None = None) -> "Splats":
        """Pad per-image [n_b, 8] unit-square rows into one batch: in pixels of a height x width image, or in
        the unit square when no size is given."""
        for i, r in enumerate(rows):
            if r.ndim != 2 or r.shape[1] != RECORD_DIM:
                raise ValueError(f"splat rows {i} must have shape [n, {RECORD_DIM}], got {r.shape}")
        B, N = len(rows), max((len(r) for r in rows), default=0)
        padded = torch.zeros(B, N, RECORD_DIM)
        mask = torch.zeros(B, N, dtype=torch.bool)
        for b, r in enumerate(rows):
            padded[b, : len(r)] = torch.from_numpy(np.asarray(r, dtype=np.float32))
            mask[b, : len(r)] = True
        return cls.from_unit_rows(padded, mask, height, width)


def invalid_rows(rows):  # [..., 8] rows (x, y, l11, l21, l22, r, g, b), a numpy array or a tensor -> [...] bool
    """The rule every real splat obeys, written once for arrays and tensors alike: its values are finite, and
    l11, l22 > 0 (the rasterizer's binning checks the same in C++)."""
    return ~(abs(rows) < math.inf).all(-1) | (rows[..., 2] <= 0) | (rows[..., 4] <= 0)


def _unit_scale(height: int, width: int, device) -> Tensor:  # [8]: pixels per unit of each row column
    return torch.tensor([width, height, width, height, height, 1.0, 1.0, 1.0], device=device)


def compression_ratio(height: int, width: int, num_splats: float, bytes_per_splat: float = BYTES_PER_SPLAT) -> float:
    """uint8 pixel bytes over splat bytes (paper section 5.2: float16, BYTES_PER_SPLAT; a quantized record:
    its bytes as stored over its splats)."""
    return height * width * 3 / (num_splats * bytes_per_splat)
