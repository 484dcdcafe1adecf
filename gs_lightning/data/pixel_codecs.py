"""Pixel codecs through Pillow (JPEG, WebP, AVIF): the yardstick splat bytes are measured against.

An image is encoded as what the splats were fitted to: decoded, resized and centre-cropped as `fit` does
(used as given when it already has the fit's size), made 8-bit RGB, and saved by Pillow with `quality` and
Pillow's defaults otherwise (JPEG: 4:2:0 chroma subsampling, standard Huffman tables), so any row can be
checked against an independent `Image.save(..., quality=q)`.

Equal bytes: `match_budget` picks the quality whose output is closest to a byte budget (ties: the smaller),
by bisection over the quality (a codec's size grows with it, near enough monotonically), then compares the
two qualities around the budget. When even the lowest quality overshoots (JPEG's own headers are ~600 bytes,
more than a 28x28 image's splats), the lowest quality is used and the image is counted "over"; when the
highest undershoots, the highest is used ("under"). The bytes actually used are what is reported.
"""
from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, features

from gs_lightning.atomic import write_text_atomic
from gs_lightning.data.shards import (
    BadSample, decode_image, list_sources, resize_center_crop, to_uint8, update_sizes, write_image_shard,
)
from gs_lightning.errors import UserError

# name -> (Pillow format, Pillow feature, tar member extension)
CODECS = {"jpeg": ("JPEG", "jpg", "jpg"), "webp": ("WEBP", "webp", "webp"), "avif": ("AVIF", "avif", "avif")}
QUALITIES = (0, 100)  # Pillow's range for all three
MATCH_TOLERANCE = 0.05  # a match within 5% of the budget is "on budget"


def available() -> list[str]:
    """The codecs this Pillow can write."""
    return [c for c, (_, feature, _) in CODECS.items() if features.check(feature)]


def fit_image(image: torch.Tensor, size: int) -> torch.Tensor:  # [3, H, W] -> [3, size, size], float in [0, 1]
    """What a fit of `size` sees: the image as given when already size x size, else resized and cropped."""
    return image if image.shape[-2:] == (size, size) else resize_center_crop(image, size)


def fit_pixels(image: torch.Tensor, size: int) -> np.ndarray:  # [3, H, W] float in [0, 1] -> [size, size, 3] uint8
    """fit_image as 8-bit RGB: what the pixel codecs encode."""
    return to_uint8(fit_image(image, size).permute(1, 2, 0).numpy())


def encode(pixels: np.ndarray, codec: str, quality: int) -> bytes:  # pixels [H, W, 3] uint8
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=CODECS[codec][0], quality=int(quality))
    return buf.getvalue()


@dataclass
class Match:
    quality: int
    data: bytes
    budget: int
    status: str  # "on" (within MATCH_TOLERANCE), "near" (the closest there is, further), "over" or "under"


def match_budget(pixels: np.ndarray, codec: str, budget: int) -> Match:
    """The quality whose encoding is closest to `budget` bytes (see the module's docstring)."""
    sizes: dict[int, bytes] = {}

    def at(q: int) -> bytes:
        if q not in sizes:
            sizes[q] = encode(pixels, codec, q)
        return sizes[q]

    lo, hi = QUALITIES
    if len(at(lo)) > budget:
        return Match(lo, at(lo), budget, "over")
    if len(at(hi)) <= budget:
        return Match(hi, at(hi), budget, "under")
    while hi - lo > 1:  # len(at(lo)) <= budget < len(at(hi))
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if len(at(mid)) <= budget else (lo, mid)
    q = min((lo, hi), key=lambda k: (abs(len(at(k)) - budget), len(at(k))))
    on = abs(len(at(q)) - budget) <= MATCH_TOLERANCE * budget
    return Match(q, at(q), budget, "on" if on else "near")


def reencode_eval_set(pattern: str, budgets: dict[str, int], size: int, codec: str, out: str | Path) -> dict:
    """Re-encode the labelled images of `pattern` at per-image budgets ({shard/key: bytes}) into labelled
    shards under `out` (same shard names and keys); returns the account (per image and totals), also
    written as out/reencoded.json. Images without a budget (no splat record) are left out; none with one is a
    UserError.

    An image takes its own shard's and key's budget, else its key's where one shard alone holds that key: an
    image folder is cut into shards by the fit's fit.shard_size, which `pattern` does not say."""
    out = Path(out)
    by_key: dict[str, list[int]] = {}
    for name, budget in budgets.items():
        by_key.setdefault(name.split("/", 1)[-1], []).append(budget)
    rows, sizes = [], {}
    for source in list_sources(pattern):
        samples, errors = [], []
        for raw in source.samples(errors):
            budget = budgets.get(f"{source.name}/{raw.key}")
            if budget is None and len(by_key.get(raw.key, ())) == 1:
                budget = by_key[raw.key][0]
            if budget is None or raw.image is None or raw.cls is None:
                continue
            try:
                pixels = fit_pixels(decode_image(raw.image), size)
            except BadSample:
                continue
            match = match_budget(pixels, codec, budget)
            t0 = time.perf_counter()
            encode(pixels, codec, match.quality)  # once more, timed: the encode a device would run
            seconds = time.perf_counter() - t0
            samples.append({"key": raw.key, CODECS[codec][2]: match.data, "cls": raw.cls})
            rows.append({"key": f"{source.name}/{raw.key}", "budget": budget, "bytes": len(match.data),
                         "quality": match.quality, "status": match.status, "encode_seconds": seconds})
        if samples:
            write_image_shard(out / source.name, samples)
            sizes[source.name] = len(samples)
    if not rows:
        shown = ", ".join(list(budgets)[:2])
        raise UserError(pattern, f"none of its labelled images has a splat set to match the bytes of (the splat "
                                 f"sets are keyed {shown}, ...): give the images the splat set was fitted from")
    update_sizes(out, sizes)
    n = len(rows)
    account = {
        "codec": codec, "images": len(rows), "image_size": size,
        "budget_mean": sum(r["budget"] for r in rows) / n, "bytes_mean": sum(r["bytes"] for r in rows) / n,
        "status": {s: sum(r["status"] == s for r in rows) for s in ("on", "near", "over", "under")},
        "encode_ms_mean": 1000 * sum(r["encode_seconds"] for r in rows) / n, "per_image": rows,
    }
    write_text_atomic(out / "reencoded.json", json.dumps(account))
    return account

