"""Shared test data: random splat batches with controllable footprints."""
import torch

from gs_lightning.splats import Splats


def random_splats(
    batch: int,
    n: int,
    height: int,
    width: int,
    *,
    scale: tuple[float, float] = (0.7, 6.0),  # range of l11, l22 in pixels
    margin: float = 0.0,  # centres may fall this many pixels outside the image
    keep: float = 1.0,  # fraction of rows that are real (mask True)
    seed: int = 0,
    requires_grad: bool = True,
) -> Splats:
    g = torch.Generator().manual_seed(seed)
    lo, hi = scale
    xy = torch.rand(batch, n, 2, generator=g) * torch.tensor([width + 2 * margin, height + 2 * margin]) - margin
    l11 = lo + (hi - lo) * torch.rand(batch, n, generator=g)
    l22 = lo + (hi - lo) * torch.rand(batch, n, generator=g)
    l21 = torch.randn(batch, n, generator=g) * 0.5 * (l11 + l22) / 2
    chol = torch.stack([l11, l21, l22], dim=-1)
    rgb = torch.randn(batch, n, 3, generator=g) * 0.5
    mask = torch.rand(batch, n, generator=g) < keep
    return Splats(
        xy.requires_grad_(requires_grad), chol.requires_grad_(requires_grad), rgb.requires_grad_(requires_grad), mask
    )


def image_bytes(array, fmt: str, mode: str | None = None) -> bytes:
    """Encode a numpy array with PIL (fmt: JPEG | PNG, mode: PIL mode such as CMYK or I;16)."""
    import io

    from PIL import Image

    h, w = array.shape[:2]
    im = Image.frombytes(mode, (w, h), array.tobytes()) if mode else Image.fromarray(array)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def smooth_photo(height: int, width: int, seed: int = 0):
    """A smooth random RGB uint8 image (a few blobs and a gradient): fits well with few splats."""
    import numpy as np

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([0.5 + 0.3 * np.sin(3 * x + c) * np.cos(2 * y - c) for c in rng.uniform(0, 3, 3)], -1)
    return (255 * img.clip(0, 1)).astype(np.uint8)


def smooth_photos(seeds, height: int, width: int | None = None):  # -> [len(seeds), 3, height, width] in [0, 1]
    """smooth_photo for each seed (width: height's by default), as one float batch, the way images are fitted."""
    import torch

    return torch.stack([torch.from_numpy(smooth_photo(height, width or height, seed=s)).permute(2, 0, 1).float() / 255
                        for s in seeds])


def datacomp_shards(root, counts: list[int], *, size: int = 24, labelled: bool = False) -> str:
    """DataComp-layout shards with real JPEG bytes (`counts[i]` samples in shard i) and sizes.json; the pattern."""
    import json
    from pathlib import Path

    from gs_lightning.data.shards import update_sizes, write_image_shard

    root = Path(root)
    for k, n in enumerate(counts):
        samples = []
        for i in range(n):
            s = {"key": f"s{k}_{i:03d}", "jpg": image_bytes(smooth_photo(size, size, seed=100 * k + i), "JPEG"),
                 "txt": f"a photo of thing {i % 3}", "json": json.dumps({"uid": f"{k}-{i}"})}
            if labelled:
                s["cls"] = i % 3
            samples.append(s)
        write_image_shard(root / f"{k:05d}.tar", samples)
    update_sizes(root, {f"{k:05d}.tar": n for k, n in enumerate(counts)})
    return str(root / f"{{00000..{len(counts) - 1:05d}}}.tar")


def fitted_shards(root, counts: list[int], *, n_splats=(3, 9), labelled: bool = True, record: str = "fp16") -> str:
    """Fitted splat shards with random valid sets (varying N) in `record`, and sizes.json; the pattern."""
    from pathlib import Path

    import numpy as np

    from gs_lightning.data.shards import FittedShard, update_sizes

    rng = np.random.default_rng(0)
    root = Path(root)
    for k, n in enumerate(counts):
        w = FittedShard(root / f"{k:05d}.tar", record)
        for i in range(n):
            m = int(rng.integers(*n_splats))
            rec = np.concatenate([rng.random((m, 2)), 0.05 + 0.1 * rng.random((m, 1)), 0.02 * rng.standard_normal((m, 1)),
                                  0.05 + 0.1 * rng.random((m, 1)), rng.random((m, 3))], 1).astype(np.float16)
            w.write(f"s{k}_{i:03d}", rec, {"psnr": 30.0}, f"a photo of thing {i % 3}", i % 3 if labelled else None)
        w.commit()
    update_sizes(root, {f"{k:05d}.tar": n for k, n in enumerate(counts)})
    return str(root / f"{{00000..{len(counts) - 1:05d}}}.tar")


def fake_run(run_dir, name: str, mode: str, top1: list[float], top5: list[float], fit_dir=None,
             trainable: float = 0.0822) -> None:
    """A finished train run as `compare` reads it: config.yaml, csv/metrics.csv, csv/hparams.yaml."""
    from pathlib import Path

    import yaml

    run_dir = Path(run_dir)
    (run_dir / "csv").mkdir(parents=True, exist_ok=True)
    cfg = {"name": name, "model": {"mode": mode}, "data": {"splats": {"train": ""}}}
    if fit_dir is not None:
        cfg["data"]["splats"]["train"] = str(Path(fit_dir) / "{00000..00001}.tar")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    queries = None if mode == "rgb" else 196
    (run_dir / "csv" / "hparams.yaml").write_text(f"trainable_share: {trainable}\nqueries: {'null' if queries is None else queries}\n")
    rows = ["epoch,step,val/top1,val/top5,train/loss_epoch,train/logit_scale_epoch"]
    for e, (a, b) in enumerate(zip(top1, top5)):
        rows += [f"{e},{10 * e + 9},{a},{b},,", f"{e},{10 * e + 9},,,{4.0 - e},{14.0 + e}"]
    (run_dir / "csv" / "metrics.csv").write_text("\n".join(rows) + "\n")
