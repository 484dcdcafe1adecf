"""DataModule throughput: samples/s of decode + tokenize + collate with 2 workers, the DataModules `train`
builds (gs_lightning/build.py) for the paper's model (224x224).

    python -m gs_lightning.benchmarks.data [--samples 4000]

RGB: Fashion-MNIST demo shards through open_clip's 224x224 train/val transforms.
Splats: fitted-shard records of 400 splats (float16 [400, 8]) written for the benchmark.
"""
import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import open_clip

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
    a = p.parse_args(argv)
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
