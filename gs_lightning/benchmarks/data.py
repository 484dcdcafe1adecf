"""DataModule throughput: samples/s of decode + tokenize + collate with 2 workers, the DataModules `train`
builds (gs_lightning/build.py) for the paper's model (224x224); and the load speed-up of splat records over JPEG.

    python -m gs_lightning.benchmarks.data [--samples 4000] [--section all|throughput|speedup|memory]

throughput  RGB: Fashion-MNIST demo shards through open_clip's 224x224 train/val transforms. Splats:
            fitted-shard records of 400 splats (float16 [400, 8]) written for the benchmark.
speedup     the published table's "load speed-up": reading a zero-shot batch ready for the model, in one process,
            from JPEG shards of 224x224 photos (decode + open_clip's eval transform) against splat records of
            400 and 3136 splats, fp16 and quantized (decode + collate), measured side by side in one run.
memory      peak resident memory of `fit` over 1x and 10x the images (32x32, 16 splats), and of a training
            epoch over 1x and 10x the splat samples, each a fresh process (GNU time's maximum RSS): the
            pipeline streams, so 10x the work must not take 10x the memory. Not in `all` (several minutes).
"""
import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip
import torch

from gs_lightning import build
from gs_lightning.benchmarks.common import print_table
from gs_lightning.config import TrainRun, compose
from gs_lightning.data.demo import write_fashion_mnist
from gs_lightning.data.shards import FittedShard, update_sizes


def splat_shards(root: Path, shards: int, per_shard: int, n: int = 400) -> str:
    rng = np.random.default_rng(0)
    for k in range(shards):
        w = FittedShard(root / f"{k:05d}.tar", "fp16")
        for i in range(per_shard):
            rec = np.concatenate([rng.random((n, 2)), 0.02 + 0.02 * rng.random((n, 1)), 0.005 * rng.standard_normal(
                (n, 1)), 0.02 + 0.02 * rng.random((n, 1)), rng.random((n, 3))], 1).astype(np.float16)
            w.write(f"{k}_{i}", rec, {"psnr": 28.0}, "a photo of a thing.", i % 10)
        w.commit()
    update_sizes(root, {f"{k:05d}.tar": per_shard for k in range(shards)})
    return str(root / f"{{00000..{shards - 1:05d}}}.tar")


def jpeg_shards(root: Path, count: int, size: int = 224) -> str:
    """`count` 224x224 JPEGs (quality 90, crops of the embedded photos), labelled, in one shard."""
    import io

    from PIL import Image

    from gs_lightning.benchmarks.fit import photos
    from gs_lightning.data.shards import write_image_shard

    base = photos(8, None)  # [8, 3, 224, 224]
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        image = base[i % 8]
        dy, dx = rng.integers(0, 32, 2)  # another crop of the photo, resized back: distinct files
        crop = torch.nn.functional.interpolate(image[None, :, dy : dy + 192, dx : dx + 192], size=(size, size),
                                               mode="bilinear", align_corners=False)[0]
        buf = io.BytesIO()
        Image.fromarray((crop.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(buf, "JPEG",
                                                                                               quality=90)
        samples.append({"key": f"{i:06d}", "jpg": buf.getvalue(), "cls": i % 10})
    write_image_shard(root / "00000.tar", samples)
    return str(root / "00000.tar")


def record_shards(root: Path, count: int, n: int, record: str) -> str:
    """`count` splat sets of n splats (fitted-like values) in `record`, labelled, in one shard."""
    rng = np.random.default_rng(1)
    w = FittedShard(root / "00000.tar", record)
    for i in range(count):
        rows = np.concatenate([rng.random((n, 2)), 0.01 + 0.02 * rng.random((n, 1)), 0.005 * rng.standard_normal(
            (n, 1)), 0.01 + 0.02 * rng.random((n, 1)), rng.random((n, 3))], 1).astype(np.float32)
        w.write(f"{i:06d}", rows, {}, None, i % 10)
    w.commit()
    return str(root / "00000.tar")


def speedup(count: int) -> list[list]:
    """Samples/s of a zero-shot batch ready for the model, JPEG 224 against splat records; and the ratio."""
    rows, rates = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"JPEG 224x224 (q90), open_clip eval transform": (jpeg_shards(Path(tmp) / "jpeg", count), "rgb")}
        for n in (400, 3136):
            for record in ("fp16", "quantized"):
                sources[f"{n} splats, {record} record"] = (record_shards(Path(tmp) / f"{n}-{record}", count, n,
                                                                         record), "scratch")
        for name, (path, mode) in sources.items():
            cfg = compose(TrainRun, [], ["data.val_batch_size=64", f"model.mode={mode}"])
            loader = build.eval_data(cfg, path, num_workers=0).val_dataloader()
            t0, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch["keys"])
            rates[name] = seen / (time.perf_counter() - t0)
        jpeg = next(iter(rates.values()))
        for name, r in rates.items():
            rows.append([name, f"{r:.0f}", f"{r / jpeg:.1f}x"])
    return rows


def peak_rss_mib(args: list[str]) -> float:
    """Maximum resident set of `python -m gs_lightning ARGS` (GNU time: the largest of the process and its
    dataloader workers), MiB."""
    out = subprocess.run(["/usr/bin/time", "-f", "PEAK %M", sys.executable, "-m", "gs_lightning", *args],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out.stderr[-2000:]}")
    return int(out.stderr.strip().splitlines()[-1].split()[-1]) / 1024


def memory(images: int) -> list[list]:
    """Peak RSS of a fit and of a training epoch at 1x and 10x the work."""
    from PIL import Image

    from gs_lightning.data.shards import write_image_shard

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        for scale in (1, 10):
            n = images * scale
            root = Path(tmp) / f"in{scale}"
            per = 500
            for k in range(0, n, per):  # small distinct images, 500 to a shard as img2dataset would write them
                samples = []
                for i in range(k, min(k + per, n)):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
                    samples.append({"key": f"{i:07d}", "png": buf.getvalue(), "txt": "a photo"})
                write_image_shard(root / f"{k // per:05d}.tar", samples)
            pattern = str(root / f"{{00000..{(n - 1) // per:05d}}}.tar")
            fit_peak = peak_rss_mib(["fit", f"fit.input={pattern}", f"fit.output={tmp}/fit{scale}",
                                     "fit.num_splats=16", "fit.iterations=20", "fit.image_size=32", "fit.batch_size=256",
                                     "trainer.accelerator=cpu"])
            splats = splat_shards(Path(tmp) / f"gs{scale}", shards=max(1, n // per), per_shard=min(per, n), n=16)
            train_peak = peak_rss_mib(["train", "gs196_scratch", "demo", f"output_dir={tmp}/runs{scale}",
                                       f"data.splats.train={splats}", f"data.splats.val={splats}",
                                       "trainer.max_epochs=1", "trainer.limit_val_batches=1",
                                       "trainer.enable_progress_bar=false", "data.batch_size=128"])
            rows.append([f"{scale}x", n, f"{fit_peak:.0f}", f"{train_peak:.0f}"])
    return rows


def rate(loader, samples: int) -> float:
    it, seen = iter(loader), 0
    next(it)  # workers started, first batch decoded
    t0 = time.perf_counter()
    for batch in it:
        seen += len(batch["keys"])
        if seen >= samples:
            break
    return seen / (time.perf_counter() - t0)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4000)
    p.add_argument("--data-root", default="outputs/data")
    p.add_argument("--section", choices=("all", "throughput", "speedup", "memory"), default="all")
    p.add_argument("--images", type=int, default=500, help="(memory) the 1x work: images fitted, samples trained")
    a = p.parse_args(argv)
    if a.section == "memory":
        print("Peak resident memory (MiB), each command a fresh process: the same pipeline on 10x the work")
        print_table(["work", "images / samples", "fit peak MiB", "train epoch peak MiB"], memory(a.images))
        return
    if a.section in ("all", "speedup"):
        print(f"Load speed-up: a zero-shot batch of 64 ready for the model, one process, {a.samples // 4} samples each")
        print_table(["input", "samples/s", "vs JPEG"], speedup(a.samples // 4))
    if a.section == "speedup":
        return
    fm = write_fashion_mnist(a.data_root)
    with tempfile.TemporaryDirectory() as tmp:
        gs = splat_shards(Path(tmp), shards=4, per_shard=a.samples // 4 + 64)
        common = ["data.batch_size=64", "data.val_batch_size=64", "data.num_workers=2", "data.num_samples=100000"]
        rgb = compose(TrainRun, [], [*common, f"data.rgb.train={fm['train']}", f"data.rgb.val={fm['test']}"])
        splats = compose(TrainRun, [], [*common, "model.mode=scratch", f"data.splats.train={gs}",
                                        f"data.splats.val={gs}"])
        tokenizer = open_clip.get_tokenizer(rgb.model.name)
        rows = []
        for name, dm, get in [
            (f"DataComp rgb ({build.image_size(rgb)}, train transform)", build.train_data(rgb, tokenizer),
             "train_dataloader"),
            ("DataComp splats (400)", build.train_data(splats, tokenizer), "train_dataloader"),
            (f"ZeroShot rgb ({build.image_size(rgb)}, val transform)", build.eval_data(rgb), "val_dataloader"),
            ("ZeroShot splats (400)", build.eval_data(splats), "val_dataloader"),
        ]:
            rows.append([name, f"{rate(getattr(dm, get)(), a.samples):.0f}"])
    print(f"DataModule throughput, batch 64, 2 workers, {a.samples} samples each")
    print_table(["DataModule", "samples/s"], rows)


if __name__ == "__main__":
    main()
