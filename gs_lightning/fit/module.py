"""Fitting as a Lightning prediction: SplatFitModule fits ImageBatches, FitWriter writes their shards.

The writer keeps each output shard open as `<shard>.tmp` while its batches arrive and renames it when the
shard's last batch is written, so a shard under its final name is always whole; anything still open when a
run stops (an exception, SIGTERM, Ctrl-C) is dropped, and a rerun redoes just that shard.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from gs_lightning.data.image_batches import ImageBatch
from gs_lightning.data.shards import FittedShard, ShardWriter, Source, warn_skipped
from gs_lightning.fit.config import FitConfig
from gs_lightning.fit.fitter import FitStats, fit_images
from gs_lightning.fit.summary import Tally


@dataclass
class FittedBatch:
    batch: ImageBatch
    rows: list[np.ndarray]  # per image: float32 [n, 8] in the unit square (the writer's record encodes them)
    stats: FitStats


class SplatFitModule(L.LightningModule):
    """predict_step fits one ImageBatch to splat sets with fit_images."""

    def __init__(self, cfg: FitConfig):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"fit": asdict(cfg)})

    def predict_step(self, batch: ImageBatch, batch_idx: int) -> FittedBatch:
        bar = self.trainer.progress_bar_callback if self._trainer is not None else None
        report = (lambda step, psnr: bar.fit_step(step, self.cfg.iterations, psnr)) if isinstance(
            bar, FitProgressBar) else None
        if len(batch.images) == 0:
            none = torch.zeros(0)
            return FittedBatch(batch, [], FitStats(none, none, none, none))
        with torch.enable_grad():  # the predict loop runs under no_grad
            splats, stats = fit_images(batch.images, self.cfg, callback=report, callback_every=10)
        size = batch.images.shape[-1]
        return FittedBatch(batch, splats.to_rows(size, size), stats)


class FitWriter(ShardWriter):
    """Writes this rank's fitted shards as their batches arrive; each finished shard's account goes beside it
    (_stats/<shard>.json)."""

    def __init__(self, cfg: FitConfig, sources: list[Source]):
        super().__init__()
        self.cfg, self.output = cfg, Path(cfg.output)
        self.sources = {s.name: s for s in sources}  # a finished shard's account names its input (Source.origin)
        self.open: dict[str, tuple[FittedShard, Tally]] = {}

    def write_on_batch_end(self, trainer, pl_module, prediction: FittedBatch, batch_indices, batch, batch_idx,
                           dataloader_idx=0):
        b = prediction.batch
        if b.shard not in self.open:
            self.open[b.shard] = FittedShard(self.output / b.shard, self.cfg.record), Tally()
        shard, tally = self.open[b.shard]
        for key, reason in b.skipped:
            warn_skipped(b.shard, key, reason)
            tally.skipped.append(f"{b.shard}/{key}: {reason}")
        for i, (sample, size, rows) in enumerate(zip(b.samples, b.source_sizes, prediction.rows)):
            fit = {**prediction.stats.image(i), "image_size": self.cfg.image_size, "source_size": list(size),
                   "source": sample.meta}
            shard.write(sample.key, rows, fit, sample.caption, sample.cls)
        tally.add(prediction.stats, self.cfg.iterations)
        tally.seconds += self.batch_seconds()
        if b.last and b.unreadable:
            self.drop_unreadable(b.shard, b.unreadable)
        elif b.last:  # the account first: a kill between the two leaves an account of no shard, which the rerun
            # writes again, rather than a shard of no account (its input, skipped images and time unknown)
            tally.shards[b.shard], tally.ranks[b.shard] = shard.count, trainer.global_rank
            tally.inputs[b.shard] = self.sources[b.shard].origin()
            tally.bytes_splats += shard.bytes_splats
            tally.save(self.output, b.shard)
            shard.commit()
            del self.open[b.shard]


class FitProgressBar(TQDMProgressBar):
    """The predict bar shows images/s and the running mean PSNR of the images done, and while a batch fits,
    its iteration and its images' mean PSNR so far (fit_step, called by SplatFitModule)."""

    def __init__(self):
        super().__init__()
        self._images, self._psnr_sum, self._t0 = 0, 0.0, None

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self._t0 is None:
            self._t0 = time.perf_counter()
        super().on_predict_batch_start(trainer, pl_module, batch, batch_idx, dataloader_idx)

    def on_predict_batch_end(self, trainer, pl_module, outputs: FittedBatch, batch, batch_idx, dataloader_idx=0):
        super().on_predict_batch_end(trainer, pl_module, outputs, batch, batch_idx, dataloader_idx)
        self._images += len(outputs.stats.psnr)
        self._psnr_sum += float(outputs.stats.psnr.sum())
        if self._images:
            rate = self._images / (time.perf_counter() - self._t0)
            self.predict_progress_bar.set_postfix(
                {"img/s": f"{rate:.2f}", "psnr": f"{self._psnr_sum / self._images:.2f}", "shard": outputs.batch.shard}
            )

    def fit_step(self, step: int, total: int, psnr: torch.Tensor) -> None:  # psnr: [B] this batch's images
        if self.predict_progress_bar is not None:
            self.predict_progress_bar.set_postfix({"iteration": f"{step}/{total}", "batch psnr": f"{psnr.mean():.2f}"})
