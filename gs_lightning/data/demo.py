"""The embedded default data: runs with no download.

Photos: real photographs that ship inside scikit-image, written by the project
itself as a DataComp-style input shard (JPEG + caption + json), the default
input of `make fit`.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from gs_lightning.data.shards import write_image_shard

# (scikit-image loader, caption); all ship inside the wheel (no pooch download).
PHOTOS = [
    ("astronaut", "a photo of an astronaut in a spacesuit in front of a flag."),
    ("chelsea", "a photo of a tabby cat."),
    ("coffee", "a photo of a cup of coffee on a saucer."),
    ("rocket", "a photo of a rocket on a launch pad."),
    ("stereo_motorcycle", "a photo of a motorcycle in a garage."),
    ("hubble_deep_field", "a telescope image of many distant galaxies."),
    ("retina", "a photo of the retina of a human eye."),
    ("camera", "a black and white photo of a man with a camera."),
]


def photo_array(name: str) -> np.ndarray:  # [H, W, 3] or [H, W] uint8
    import skimage.data

    image = getattr(skimage.data, name)()
    return image[0] if isinstance(image, tuple) else image  # stereo_motorcycle returns (left, right, disp)


def write_photo_shard(root: str | Path) -> str:
    """Write the photos as `root/photos/00000.tar` once; return the shard pattern for `fit.input`."""
    path = Path(root) / "photos" / "00000.tar"
    if not path.exists():
        samples = []
        for i, (name, caption) in enumerate(PHOTOS):
            buf = io.BytesIO()
            Image.fromarray(photo_array(name)).save(buf, format="JPEG", quality=95)
            meta = {"uid": f"{i:08d}", "source": f"skimage.data.{name}"}
            samples.append({"key": f"{i:08d}", "jpg": buf.getvalue(), "txt": caption, "json": json.dumps(meta)})
        write_image_shard(path, samples)
    return str(path)
