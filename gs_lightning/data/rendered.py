"""The eval images rendered back from their splats: what the splats carry, as pixels the RGB teacher can read.

Each labelled splat record of a fitted eval set is decoded, rasterized at the fit's size (gs_lightning/render.py),
clamped to [0, 1], rounded to 8 bits and stored losslessly (PNG) in labelled shards of the same names and keys.
The teacher's accuracy on them is the ceiling of what the splats hold for it: it tells the representation's
loss apart from a splat encoder's.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gs_lightning.data.shards import BadSample, decode_splats, list_sources, update_sizes, write_image_shard
from gs_lightning.render import rasterize
from gs_lightning.splats import Splats

BATCH = 256


def render_rows(rows: list[np.ndarray], size: int) -> np.ndarray:  # -> [n, size, size, 3] uint8
    """Unit-square rows per image, rendered at size x size and made 8-bit as an image file holds them."""
    out = []
    for i in range(0, len(rows), BATCH):
        with torch.no_grad():
            image = rasterize(Splats.from_rows(rows[i : i + BATCH], size, size), size, size).clamp(0, 1)
        out.append((image * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size, 3), np.uint8)


def render_eval_set(pattern: str, size: int, out: str | Path) -> dict:
    """Render the labelled splat shards of `pattern` into labelled PNG shards under `out`; returns the account
    (images, records that could not be read)."""
    out = Path(out)
    sizes, unreadable = {}, 0
    for source in list_sources(pattern):
        samples, rows = [], []
        for raw in source.samples([]):
            if raw.splats is None or raw.cls is None:
                continue
            try:
                rows.append(decode_splats(raw.splats, raw.record))
            except BadSample:
                unreadable += 1
                continue
            samples.append(raw)
        shard = []
        for raw, pixels in zip(samples, render_rows(rows, size)):
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            shard.append({"key": raw.key, "png": buf.getvalue(), "cls": raw.cls})
        if shard:
            write_image_shard(out / source.name, shard)
            sizes[source.name] = len(shard)
    update_sizes(out, sizes)
    return {"images": sum(sizes.values()), "unreadable": unreadable, "image_size": size}
