"""The demo's offline zero-shot suite (experiments/suites/demo.yaml), written from Debian's Fashion-MNIST in
clip_benchmark's layout: test images that training never validates on, and two shifts of them."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from gs_lightning.data.demo import FASHION_CLASSNAMES, FASHION_MNIST_DIR, FASHION_TEMPLATES, read_idx
from gs_lightning.zeroshot.tasks import write_task

SHIFTS = {
    "fashion_mnist": lambda a: a,
    "fashion_mnist_inverted": lambda a: 255 - a,  # a light garment on black becomes a dark one on white
    "fashion_mnist_rotated": lambda a: np.rot90(a).copy(),  # a quarter turn
}


def write_demo_suite(root: str | Path, images: int = 1000, first: int = 5000,
                     source: Path = FASHION_MNIST_DIR) -> str:
    """Write the suite's tasks under root once (test images first .. first + images); returns root."""
    root = Path(root)
    pixels = read_idx(source / "t10k-images-idx3-ubyte.gz")[first : first + images]
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")[first : first + images]
    for name, shift in SHIFTS.items():
        if (root / name / "test" / "nshards.txt").exists():
            continue  # written before; nshards.txt is written last
        samples = []
        for i, (a, label) in enumerate(zip(pixels, labels)):
            buf = io.BytesIO()
            Image.fromarray(shift(a)).save(buf, format="PNG")
            samples.append({"key": f"test{first + i:06d}", "png": buf.getvalue(), "cls": int(label)})
        write_task(root / name, samples, FASHION_CLASSNAMES, FASHION_TEMPLATES)
    return str(root)
