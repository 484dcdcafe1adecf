"""Fitting as a Lightning prediction: SplatFitModule, its per-shard dataset and shard writer.

Input shards are split across ranks (and across a rank's dataloader workers)
by shard, so `trainer.devices=8` or several nodes each fit their share. A batch
never spans two shards; the last batch of a shard says so, and the writer then
renames `<shard>.tmp` to its final name. A shard whose output already exists is
skipped, so rerunning an interrupted fit resumes it; `record_fit_config` makes
sure the rerun fits the way the first run did.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, TQDMProgressBar
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import IterableDataset

from gs_lightning.config import ConfigError
from gs_lightning.data.shards import (
    BadSample, FittedShardWriter, Source, decode_image, resize_center_crop, update_sizes, warn_skipped, worker_slot,
    write_text_atomic,
)
from gs_lightning.fit.fitter import FitConfig, fit_batch
from gs_lightning.splats import BYTES_PER_SPLAT


class ShardBatches(IterableDataset):
    """Batches of decoded, resized images, one input shard at a time (this rank's and worker's share).

    Each batch: shard (name), last (bool), keys, images [b, 3, S, S], captions, classes, sizes,
    metas, and skipped [(key, reason)] for the samples that could not be used.
    """

    def __init__(self, sources: list[Source], output: str, image_size: int, batch_size: int):
        self.sources, self.output = sources, Path(output)
        self.image_size, self.batch_size = image_size, batch_size

    def shards_to_do(self) -> list[Source]:
        return [s for s in self.sources if not (self.output / s.name).exists()]

    def __iter__(self):
        slot, slots = worker_slot()
        for source in self.shards_to_do()[slot::slots]:
            yield from self._batches(source)

    def _empty(self, source: Source) -> dict:
        return {"shard": source.name, "last": False, "keys": [], "images": [], "captions": [], "classes": [],
                "sizes": [], "metas": [], "skipped": []}

    def _finish(self, batch: dict, last: bool) -> dict:
        size = self.image_size
        batch["images"] = torch.stack(batch["images"]) if batch["images"] else torch.zeros(0, 3, size, size)
        batch["last"] = last
        return batch

    def _batches(self, source: Source):
        batch = self._empty(source)
        for sample in source.samples(batch["skipped"]):
            try:
                if sample.image is None:
                    raise BadSample("no image member (.jpg/.png/.webp)")
                image = decode_image(sample.image)
            except BadSample as e:
                batch["skipped"].append((sample.key, str(e)))
                continue
            batch["keys"].append(sample.key)
            batch["images"].append(resize_center_crop(image, self.image_size))
            batch["captions"].append(sample.caption)
            batch["classes"].append(sample.cls)
            batch["sizes"].append(list(image.shape[1:]))
            batch["metas"].append(sample.meta)
            if len(batch["keys"]) == self.batch_size:
                yield self._finish(batch, last=False)
                batch = self._empty(source)
        yield self._finish(batch, last=True)


def collate_one(batch: dict) -> dict:
    return batch  # the dataset batches itself (a batch never spans two shards)


class SplatFitModule(L.LightningModule):
    """predict_step fits one batch of images to splat sets with fit_batch."""

    def __init__(self, cfg: FitConfig, backend: str = "auto"):
        super().__init__()
        self.cfg, self.backend = cfg, backend
        self.save_hyperparameters({"fit": asdict(cfg), "backend": backend})

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        images = batch["images"]
        out = {k: batch[k] for k in ("shard", "last", "keys", "captions", "classes", "sizes", "metas", "skipped")}
        out["records"], out["psnr"], out["n_init"], out["n_final"] = [], [], [], []
        if len(images) == 0:
            return out
        with torch.enable_grad():  # the predict loop runs under no_grad
            splats, stats = fit_batch(images, self.cfg, backend=self.backend)
        size = images.shape[-1]
        out["records"] = splats.to_records(size, size)
        out["psnr"] = stats.psnr.tolist()
        out["n_init"], out["n_final"] = stats.n_init.tolist(), stats.n_final.tolist()
        return out


class SplatShardWriter(BasePredictionWriter):
    """Writes fitted shards (per rank, as its batches arrive) and keeps this rank's tally."""

    def __init__(self, output: str, image_size: int, iterations: int):
        super().__init__(write_interval="batch")
        self.output, self.image_size, self.iterations = Path(output), image_size, iterations
        self.open: dict[str, FittedShardWriter] = {}
        self.tally = {"images": 0, "skipped": 0, "shards": 0, "bytes_splats": 0, "psnr": [], "n_final": [],
                      "n_init": [], "skipped_keys": [], "seconds": 0.0, "sizes": {}}
        self._t0 = time.perf_counter()

    def _stats_path(self, rank: int) -> Path:
        return self.output / "_stats" / f"rank{rank:04d}.json"

    def on_predict_start(self, trainer, pl_module):
        self._stats_path(trainer.global_rank).unlink(missing_ok=True)  # a previous run's tally
        self._t0 = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        p = prediction
        writer = self.open.get(p["shard"]) or self.open.setdefault(
            p["shard"], FittedShardWriter(self.output / p["shard"])
        )
        for key, reason in p["skipped"]:
            warn_skipped(p["shard"], key, reason)
            self.tally["skipped_keys"].append(f"{p['shard']}/{key}: {reason}")
        self.tally["skipped"] += len(p["skipped"])
        for i, key in enumerate(p["keys"]):
            record = {
                "psnr": round(p["psnr"][i], 3), "n_init": p["n_init"][i], "n_final": p["n_final"][i],
                "iterations": self.iterations, "image_size": self.image_size, "source_size": p["sizes"][i],
                "source": p["metas"][i],
            }
            writer.write(key, p["records"][i], record, p["captions"][i], p["classes"][i])
        self.tally["images"] += len(p["keys"])
        self.tally["psnr"] += p["psnr"]
        self.tally["n_final"] += p["n_final"]
        self.tally["n_init"] += p["n_init"]
        if p["last"]:
            writer.commit()
            self.tally["sizes"][p["shard"]] = writer.count
            self.tally["bytes_splats"] += writer.bytes_splats
            self.tally["shards"] += 1
            del self.open[p["shard"]]
        self.tally["seconds"] = time.perf_counter() - self._t0

    def on_predict_end(self, trainer, pl_module):
        # Anything still open did not finish its shard: leave no partial output behind.
        for writer in self.open.values():
            writer.abort()
        self.open.clear()
        path = self._stats_path(trainer.global_rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.tally))


class FitProgressBar(TQDMProgressBar):
    """The predict bar shows images/s and the running mean PSNR."""

    def __init__(self):
        super().__init__()
        self._images, self._psnr_sum, self._t0 = 0, 0.0, None

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._t0 is None:
            self._t0 = time.perf_counter()
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._images += len(outputs["keys"])
        self._psnr_sum += sum(outputs["psnr"])
        if self._images:
            rate = self._images / (time.perf_counter() - self._t0)
            self.predict_progress_bar.set_postfix(
                {"img/s": f"{rate:.2f}", "psnr": f"{self._psnr_sum / self._images:.2f}", "shard": outputs["shard"]}
            )


# Keys a rerun into the same output may change: which images (to fit more shards into a folder), and
# how fast. The rest decide what a splat set is, and one folder holds one kind.
FREE_KEYS = ("input", "output", "batch_size", "backend", "num_workers")


def record_fit_config(output: str | Path, fit: DictConfig) -> None:
    """Keep the `fit` config in output/fit.yaml. A rerun into the same folder resumes there, so it must
    fit the way the first run did, or the folder would mix two kinds of splats: name the keys that differ."""
    now = OmegaConf.masked_copy(fit, [k for k in fit if k not in FREE_KEYS])
    path = Path(output) / "fit.yaml"
    if path.exists():
        before, after = _leaves(OmegaConf.load(path)), _leaves(now)
        differ = [f"fit.{k} was {before.get(k)!r}, now {after.get(k)!r}" for k in sorted(before.keys() | after.keys())
                  if before.get(k) != after.get(k)]
        if differ:
            raise ConfigError(
                f"{output} holds a fit made with other settings ({'; '.join(differ)}). A rerun into the same "
                f"fit.output resumes that fit: pass the same settings, or a new fit.output."
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, OmegaConf.to_yaml(now, resolve=True))  # every rank may write it: the same text


def _leaves(cfg: DictConfig) -> dict:  # {"prune.threshold": 0.02, ...}
    out = {}
    for k, v in OmegaConf.to_container(cfg, resolve=True).items():
        out.update({f"{k}.{kk}": vv for kk, vv in v.items()} if isinstance(v, dict) else {k: v})
    return out


def summarise(output: str | Path, image_size: int, world_size: int = 1) -> dict:
    """Merge this run's tallies of ranks 0..world_size-1 into summary.json and return it."""
    output = Path(output)
    paths = [output / "_stats" / f"rank{r:04d}.json" for r in range(world_size)]
    tallies = [json.loads(p.read_text()) for p in paths if p.exists()]
    psnr = [x for t in tallies for x in t["psnr"]]
    n_final = [x for t in tallies for x in t["n_final"]]
    n_init = [x for t in tallies for x in t["n_init"]]
    images = sum(t["images"] for t in tallies)
    bytes_splats = sum(t["bytes_splats"] for t in tallies)
    seconds = max((t["seconds"] for t in tallies), default=0.0)
    mean_n = sum(n_final) / len(n_final) if n_final else 0.0
    update_sizes(output, {k: v for t in tallies for k, v in t.get("sizes", {}).items()})
    summary = {
        "images_fitted": images,
        "images_skipped": sum(t["skipped"] for t in tallies),
        "skipped": [k for t in tallies for k in t["skipped_keys"]],
        "shards_written": sum(t["shards"] for t in tallies),
        "psnr_mean": sum(psnr) / len(psnr) if psnr else None,
        "psnr_min": min(psnr) if psnr else None,
        "splats_mean": mean_n,
        "pruned_fraction": 1 - sum(n_final) / sum(n_init) if n_init else 0.0,
        "image_size": image_size,
        "bytes_splats": bytes_splats,
        "compression_ratio": (images * image_size * image_size * 3 / bytes_splats) if bytes_splats else None,
        "seconds": seconds,
        "images_per_second": images / seconds if seconds else None,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def format_summary(s: dict) -> str:
    def f(x, spec):
        return "n/a" if x is None else format(x, spec)

    lines = [
        f"images fitted     {s['images_fitted']}  (skipped {s['images_skipped']})",
        f"shards written    {s['shards_written']}",
        f"PSNR mean / min   {f(s['psnr_mean'], '.2f')} / {f(s['psnr_min'], '.2f')} dB",
        f"splats per image  {s['splats_mean']:.1f}  (pruned {100 * s['pruned_fraction']:.1f}%)",
        f"bytes written     {s['bytes_splats']:,} of splats ({BYTES_PER_SPLAT} B per splat)",
        f"compression       {f(s['compression_ratio'], '.1f')}x vs uint8 pixels",
        f"throughput        {f(s['images_per_second'], '.2f')} images/s",
    ]
    lines += [f"skipped: {k}" for k in s["skipped"]]
    return "\n".join(lines)
