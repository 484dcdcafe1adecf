"""The embedded default data: runs with no download.

Photos: real photographs that ship inside scikit-image, written by the project
itself as a DataComp-style input shard (JPEG + caption + json), the default
input of `make fit`.

Fashion-MNIST: from Debian's package dataset-fashion-mnist (`make setup`
installs it), written as DataComp-style shards (PNG + caption + json) for
training, and as labelled shards (+ .cls) of the test split for zero-shot
evaluation, with sizes.json beside them.
"""
from __future__ import annotations

import gzip
import io
import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

from gs_lightning.data.shards import literal, update_sizes, write_image_shard
from gs_lightning.errors import UserError

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSNAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankle boot"]
# The training captions are drawn from these, and zero-shot evaluation prompts with them (zeroshot/tasks.py);
# "{c}" is the class name, as in clip_benchmark's template files.
FASHION_TEMPLATES = [
    "a photo of a {c}.",
    "a black and white photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a product photo of a {c}.",
    "a picture of a {c}, a piece of clothing.",
    "a small photo of the {c}.",
]

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


def read_idx(path: Path) -> np.ndarray:
    """An MNIST idx file (gzipped): uint8 images [n, 28, 28] or labels [n]."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_fashion_mnist(root: str | Path, *, train_limit: int | None = None, test_limit: int | None = None,
                        shard_size: int = 5000, source: Path = FASHION_MNIST_DIR) -> dict[str, str]:
    """Write train (caption) and test (caption + class) shards once; return their shard patterns."""
    if not (source / "train-images-idx3-ubyte.gz").exists():
        raise UserError(
            str(source), "Fashion-MNIST is not there: install Debian's package dataset-fashion-mnist "
            "(`make setup` does: apt-get install dataset-fashion-mnist)"
        )
    out, patterns = Path(root) / "fashion-mnist", {}
    for split, prefix, limit in (("train", "train", train_limit), ("test", "t10k", test_limit)):
        images = read_idx(source / f"{prefix}-images-idx3-ubyte.gz")[:limit]
        labels = read_idx(source / f"{prefix}-labels-idx1-ubyte.gz")[:limit]
        n_shards = (len(images) + shard_size - 1) // shard_size
        patterns[split] = f"{literal(out / split)}/{{00000..{n_shards - 1:05d}}}.tar"
        if (out / split / "sizes.json").exists():
            continue  # written before; sizes.json is written last
        rng = random.Random(0)
        sizes = {}
        for k in range(n_shards):
            samples = []
            for i in range(k * shard_size, min((k + 1) * shard_size, len(images))):
                buf = io.BytesIO()
                Image.fromarray(images[i]).save(buf, format="PNG")
                name = FASHION_CLASSNAMES[labels[i]]
                samples.append({"key": f"{split}{i:06d}", "png": buf.getvalue(),
                                "txt": rng.choice(FASHION_TEMPLATES).replace("{c}", name),
                                "json": json.dumps({"uid": f"{split}{i:06d}", "label": name}),
                                "cls": int(labels[i])})
            write_image_shard(out / split / f"{k:05d}.tar", samples)
            sizes[f"{k:05d}.tar"] = len(samples)
        update_sizes(out / split, sizes)
    return patterns
