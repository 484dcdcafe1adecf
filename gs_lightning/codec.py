"""Splat records on disk: float16 [N, 8] (the paper's), and a quantized record in GaussianImage's spirit.

Both hold one image's splat set in the unit square, rows (x/W, y/H, l11/W, l21/H, l22/H, r, g, b), and
`RECORDS` names them (fit.record picks one); each has its own tar member, so a fitted shard says which it
holds: `{key}.splats.npy` (fp16) or `{key}.splats.gsq` (quantized).

fp16  numpy's .npy of float16 [N, 8]: 16 bytes a splat, the paper's accounting. Its bytes are counted as
      N * 16: the .npy container adds 128 bytes of its own that a raw float16 stream would not need.

quantized  (GaussianImage, arXiv 2403.08551, quantizes positions to float16, the Cholesky factors to 6 bits
      and colours by residual VQ). Each row is taken to a quantization domain, one column per field:
          x, y               linear
          log l11, log l22   the scales, in a log domain: a fixed relative error at any size
          t = l21 / l22      the shear of L = diag(l11, l22) @ [[1, 0], [t, 1]]: scale-free, like the logs
          r, g, b            linear (colour weights, unclamped)
      and each column is quantized uniformly between its own float16 bounds (lo, hi), stored in the header:
      code = round((v - lo) / step), step = (hi - lo) / (2^bits - 1). Rows are sorted by (y, x) code, and
      the y codes are stored as differences from the previous row's (small numbers a coder can shrink).
      The payload is either the codes bit-packed at their widths, or one byte plane per code byte
      (low byte first) deflated by zlib: whichever is shorter, named in the header.

      Header (little-endian): b"GSQ" | version 1 | coding (0: bit-packed, 1: zlib) | N (LEB128) |
      bits of position, covariance and colour (3 bytes) | lo, hi per column (8 x 2 float16). Bytes per
      image are len(record): header, bounds and payload, everything stored.

      Error bounds (the round trip, `round_trip`): every column is within step / 2 of the value encoded, so
          |dx|, |dy|                <= (hi - lo) / (2^POS_BITS - 1) / 2       (unit square)
          l11, l22                  within a factor exp(step / 2) of the truth (step of their log column)
          |dt|                      <= step / 2
          |dr|, |dg|, |db|          <= (hi - lo) / (2^COLOUR_BITS - 1) / 2
      where (lo, hi) is the column's range over the record, widened to float16.

Both records hold float16 values (the quantized one its bounds), so each stores a value beyond float16's
range as the nearest one it holds: +-65504 (`F16_MAX`), and a scale l11, l22 below float16's smallest as that
smallest (2^-24), so that a real splat stays a valid one. No fit comes near these (a colour of 65504, a
Gaussian 65504 images wide, a shear of 65504); without the clamp one such value made every row of its
column NaN in the quantized record, and an fp16 record that its own decode refuses.

`round_trip` is the quantized record's encode-decode as a torch function with a straight-through gradient,
so a fit can refine its splats through exactly what will be stored (fit/refine.py).
"""
from __future__ import annotations

import io
import zlib

import numpy as np
import torch
from torch import Tensor

from gs_lightning.splats import BYTES_PER_SPLAT, RECORD_DIM

MAGIC, VERSION = b"GSQ", 1
# Colours at 7 bits, not 8: with the refinement they lose no more PSNR (0.26 dB vs 0.27 at 400 Gaussians on the
# embedded photos) and take the record from 1.99x to 2.09x fewer bytes than fp16 (benchmarks/codec.py).
POS_BITS, COV_BITS, COLOUR_BITS = 12, 6, 7


F16_MAX = float(torch.finfo(torch.float16).max)
F16_TINY = 2.0**-24  # float16's smallest positive value (a subnormal)


class RecordError(ValueError):
    """Bytes that are not a record of the kind they claim to be."""


# ---- the quantization domain ---------------------------------------------------------------------------


def to_domain(rows: Tensor) -> Tensor:  # [..., 8] unit-square rows -> [..., 8] (x, y, log l11, log l22, t, r, g, b)
    x, y, l11, l21, l22, r, g, b = rows.unbind(-1)
    return torch.stack([x, y, l11.log(), l22.log(), l21 / l22, r, g, b], -1).clamp(-F16_MAX, F16_MAX)


def from_domain(q: Tensor) -> Tensor:  # inverse of to_domain
    x, y, log_l11, log_l22, t, r, g, b = q.unbind(-1)
    l22 = log_l22.exp()
    return torch.stack([x, y, log_l11.exp(), t * l22, l22, r, g, b], -1)


def column_bits(pos: int = POS_BITS, cov: int = COV_BITS, colour: int = COLOUR_BITS) -> Tensor:  # [8]
    return torch.tensor([pos, pos, cov, cov, cov, colour, colour, colour])


def bounds(q: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:  # q [B, N, 8], mask [B, N] -> lo, hi [B, 8]
    """Each column's range over the real rows, widened outwards to float16 values (what the header holds)."""
    m = mask[..., None]
    big = torch.finfo(torch.float32).max
    pad = q.new_zeros(q.shape[0], 1, q.shape[2])  # a zero row, so an empty set has the bounds (0, 0)
    empty = ~mask.any(1)[:, None, None]
    lo = torch.cat([torch.where(m, q, big), torch.where(empty, pad, big)], 1).amin(1)
    hi = torch.cat([torch.where(m, q, -big), torch.where(empty, pad, -big)], 1).amax(1)
    return _float16_below(lo), _float16_above(hi)


def _float16_below(v: Tensor) -> Tensor:  # the largest float16 <= v, as float32
    h = v.half()
    return torch.where(h.float() > v, torch.nextafter(h, h.new_tensor(float("-inf"))), h).float()


def _float16_above(v: Tensor) -> Tensor:
    h = v.half()
    return torch.where(h.float() < v, torch.nextafter(h, h.new_tensor(float("inf"))), h).float()


def steps(lo: Tensor, hi: Tensor, bits: Tensor) -> Tensor:  # lo, hi [B, 8], bits [8] -> [B, 8]
    """The quantization step of each column (hi == lo: a constant column that float16 holds exactly)."""
    return torch.where(hi > lo, (hi - lo) / (2**bits - 1).float(), 1.0)


def codes(q: Tensor, lo: Tensor, hi: Tensor, bits: Tensor) -> Tensor:  # q [B, N, 8], lo/hi [B, 8] -> int64 codes
    c = ((q - lo[:, None]) / steps(lo, hi, bits)[:, None]).round()
    return c.clamp(min=0).minimum((2**bits - 1).to(c.dtype)).long()


def dequantize(c: Tensor, lo: Tensor, hi: Tensor, bits: Tensor) -> Tensor:  # codes [B, N, 8] -> domain values
    return lo[:, None] + c.float() * steps(lo, hi, bits)[:, None]


def round_trip(rows: Tensor, mask: Tensor) -> Tensor:  # [B, N, 8] unit-square rows -> the same, as stored
    """What the quantized record decodes to, with a straight-through gradient (identity in the backward)."""
    q = to_domain(rows)
    bits = column_bits().to(rows.device)
    lo, hi = bounds(q.detach(), mask)
    stored = from_domain(dequantize(codes(q.detach(), lo, hi, bits), lo, hi, bits))
    stored = torch.where(mask[..., None], stored, rows.detach())  # padding stays as it was
    return rows + (stored - rows).detach()


# ---- the byte layout ----------------------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(buf: io.BytesIO) -> int:
    n, shift = 0, 0
    while True:
        b = buf.read(1)
        if not b or shift > 35:
            raise RecordError("truncated or oversized splat count")
        n |= (b[0] & 0x7F) << shift
        shift += 7
        if not b[0] & 0x80:
            return n


def _planes(c: np.ndarray, bits: np.ndarray) -> bytes:  # codes [n, 8] -> byte planes, column by column
    out = []
    for j in range(c.shape[1]):
        for k in range((int(bits[j]) + 7) // 8):
            out.append(((c[:, j] >> (8 * k)) & 0xFF).astype(np.uint8).tobytes())
    return b"".join(out)


def _unplanes(data: bytes, n: int, bits: np.ndarray) -> np.ndarray:
    a = np.frombuffer(data, np.uint8)
    if len(a) != n * sum((int(b) + 7) // 8 for b in bits):
        raise RecordError("payload length does not match the header")
    c = np.zeros((n, len(bits)), np.int64)
    at = 0
    for j in range(len(bits)):
        for k in range((int(bits[j]) + 7) // 8):
            c[:, j] |= a[at : at + n].astype(np.int64) << (8 * k)
            at += n
    return c


def _bitpack(c: np.ndarray, bits: np.ndarray) -> bytes:  # codes [n, 8] -> row after row, MSB first
    cols = [((c[:, j : j + 1] >> np.arange(b - 1, -1, -1)) & 1) for j, b in enumerate(bits.tolist())]
    return np.packbits(np.concatenate(cols, 1).astype(np.uint8).ravel()).tobytes() if len(c) else b""


def _bitunpack(data: bytes, n: int, bits: np.ndarray) -> np.ndarray:
    width = int(bits.sum())
    if len(data) != (n * width + 7) // 8:
        raise RecordError("payload length does not match the header")
    flat = np.unpackbits(np.frombuffer(data, np.uint8))[: n * width].reshape(n, width).astype(np.int64)
    out, at = np.zeros((n, len(bits)), np.int64), 0
    for j, b in enumerate(bits.tolist()):
        out[:, j] = flat[:, at : at + b] @ (1 << np.arange(b - 1, -1, -1))
        at += b
    return out


def _rows(rows) -> np.ndarray:  # [n, 8] unit-square rows, any array-like -> float32 [n, 8]
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] != RECORD_DIM:
        raise ValueError(f"a splat record holds [n, {RECORD_DIM}] rows (x, y, l11, l21, l22, r, g, b), got shape "
                         f"{rows.shape}")
    return rows


class Fp16Record:
    name, member = "fp16", "splats.npy"

    def encode(self, rows: np.ndarray) -> bytes:  # [n, 8] unit-square rows
        rows = np.clip(_rows(rows), -F16_MAX, F16_MAX)
        rows[:, [2, 4]] = np.maximum(rows[:, [2, 4]], F16_TINY)  # l11, l22: a real splat's are > 0
        buf = io.BytesIO()
        np.save(buf, rows.astype(np.float16), allow_pickle=False)
        return buf.getvalue()

    def decode(self, data: bytes) -> np.ndarray:  # -> float16 [n, 8]
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as e:
            raise RecordError(f"cannot read splats.npy: {type(e).__name__}: {e}") from None
        if a.ndim != 2 or a.shape[1] != RECORD_DIM:
            raise RecordError(f"splat record must be [N, {RECORD_DIM}], got {a.shape}")
        return a

    def nbytes(self, data: bytes) -> int:
        """The paper's accounting: N * 16 (the .npy container's own header is not counted)."""
        return len(self.decode(data)) * BYTES_PER_SPLAT


class QuantizedRecord:
    name, member = "quantized", "splats.gsq"

    def encode(self, rows: np.ndarray) -> bytes:  # [n, 8] unit-square rows
        r = torch.as_tensor(_rows(rows))[None]
        mask = torch.ones(r.shape[:2], dtype=torch.bool)
        bits = column_bits()
        q = to_domain(r)
        lo, hi = bounds(q, mask)
        c = codes(q, lo, hi, bits)[0].numpy()
        c = c[np.lexsort((c[:, 0], c[:, 1]))]  # by y, then x
        c[1:, 1] = np.diff(c[:, 1])
        b = bits.numpy()
        packed, deflated = _bitpack(c, b), zlib.compress(_planes(c, b), 9)
        coding, payload = (1, deflated) if len(deflated) < len(packed) else (0, packed)
        bound_bytes = torch.stack([lo[0], hi[0]], 1).half().numpy().tobytes()  # [8, 2]: lo, hi per column
        return MAGIC + bytes([VERSION, coding]) + _varint(len(c)) + bytes(b[[0, 2, 5]].tolist()) + bound_bytes + payload

    def decode(self, data: bytes) -> np.ndarray:  # -> float32 [n, 8]
        if data[:3] != MAGIC:
            raise RecordError("not a quantized splat record (no GSQ magic)")
        if len(data) > 3 and data[3] != VERSION:
            raise RecordError(f"quantized splat record of version {data[3]}; this code reads version {VERSION}")
        if len(data) < 5:
            raise RecordError("truncated header")
        coding = data[4]
        buf = io.BytesIO(data[5:])
        n = _read_varint(buf)
        head = buf.read(3 + RECORD_DIM * 4)
        if len(head) != 3 + RECORD_DIM * 4:
            raise RecordError("truncated header")
        if not all(1 <= x <= 16 for x in head[:3]):
            raise RecordError(f"bit widths out of range: {list(head[:3])}")
        bits = column_bits(*head[:3])
        lohi = torch.from_numpy(np.frombuffer(head[3:], np.float16).reshape(RECORD_DIM, 2).astype(np.float32))
        payload = buf.read()
        if coding == 1:
            expected = n * sum((b + 7) // 8 for b in bits.tolist())
            try:  # never inflate more than the header promises (a crafted record could be a zip bomb)
                payload = zlib.decompressobj().decompress(payload, expected + 1)
            except zlib.error as e:
                raise RecordError(f"bad zlib payload: {e}") from None
            c = _unplanes(payload, n, bits.numpy())
        elif coding == 0:
            c = _bitunpack(payload, n, bits.numpy())
        else:
            raise RecordError(f"unknown payload coding {coding}")
        c[:, 1] = np.cumsum(c[:, 1])
        q = dequantize(torch.from_numpy(c)[None], lohi[None, :, 0], lohi[None, :, 1], bits)
        return from_domain(q)[0].numpy()

    def nbytes(self, data: bytes) -> int:
        return len(data)


RECORDS = {"fp16": Fp16Record(), "quantized": QuantizedRecord()}
MEMBERS = {r.member: r for r in RECORDS.values()}

