"""Training pairs from DataComp-style shards, images or splats, and the sample stream that zero-shot
evaluation (gs_lightning/zeroshot) reads labelled shards with.

Every (DDP rank, dataloader worker) pair is a *slot*. Shards are dealt to
slots round-robin; when there are fewer shards than slots, every slot reads
all shards and keeps every slots-th sample. Either way the slots' samples are
disjoint.

Training streams repeat their share and stop after the same number of batches
on every slot (`with_epoch`), so DDP ranks always run the same number of steps
even when the shards do not divide evenly. The epoch length comes from
`num_samples` or the shards' sizes.json. Evaluation streams make one pass, so
every labelled sample is counted exactly once across ranks.

Bad samples (undecodable image, missing or empty caption, bad splat record,
a shard that is not a tar) are skipped with a warning naming the key and
counted: each batch carries `skipped`, the number this worker dropped since
its previous batch, so the sum over batches and ranks is the total (less any
met after a worker's very last batch of the run, which are still warned).
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
import torch
import webdataset as wds
from torch.utils.data import DataLoader

from gs_lightning.data.shards import (
    BadSample, DataPathError, RawSample, Source, decode_pil, decode_splats, existing_sources, read_sizes, shard_sizes,
    warn_skipped, worker_slot,
)
from gs_lightning.splats import Splats

KINDS = ("rgb", "splats")  # what a DataModule reads: images, or their fitted splat sets


class SampleStream(wds.DataPipeline):
    """This slot's samples of `sources`, decoded by `decode`, batched by `collate`."""

    def __init__(
        self,
        sources: list[Source],
        decode: Callable[[RawSample, random.Random], dict],
        collate: Callable[[list[dict]], dict],
        batch_size: int,
        *,
        train: bool,
        batches_per_slot: int | None = None,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        join: Callable[[Source], Callable[[str], dict]] | None = None,
        sizes: dict[str, int] | None = None,
        resumed_at: int = 0,
    ):
        """join: for a source, the lookup of what joins its samples by key (the teacher's embeddings), applied
        before the shuffle, so a sample and what joins it travel together. sizes: {shard: samples} as written
        (sizes.json), so that the samples of a truncated or corrupt shard that were never read count as skipped.
        resumed_at: the step a resumed run goes on from. Its passes are shuffled anew, not as the killed attempt's
        first ones were (which it would train on again in their order); as open_clip does, the batches of the
        interrupted epoch that were trained on are not skipped."""
        self.sources, self.decode, self.collate, self.join = sources, decode, collate, join
        self.sizes = sizes or {}
        self.train, self.seed = train, seed
        self.batches_per_slot = batches_per_slot
        self.passes = 0  # per worker process; persistent workers make every epoch's shuffle differ
        self.resumed_at = resumed_at
        self.pending_skips = 0  # bad samples met since this process's previous batch
        # Reseeded at the start of every pass (in _samples) from (seed, slot, pass), so runs repeat.
        self.shuffle_rng = random.Random()
        stages = [self._samples]
        if train:
            stages.append(wds.shuffle(shuffle_buffer, min(100, shuffle_buffer), rng=self.shuffle_rng))
        stages += [wds.batched(batch_size, collation_fn=collate, partial=not train), self._count_skips]
        super().__init__(*stages)
        if train:
            self.repeat(nepochs=-1).with_epoch(nbatches=batches_per_slot)

    def _samples(self, _=None):
        slot, slots = worker_slot()
        self.passes += 1
        this = (self.seed, slot, self.passes, *((self.resumed_at,) if self.resumed_at else ()))
        rng = random.Random(hash(this))
        self.shuffle_rng.seed(hash((*this, 1)))  # ints only: str hashes vary by process
        if len(self.sources) >= slots:
            mine, keep, reports = self.sources[slot::slots], lambda i: True, True
            if self.train:
                mine = rng.sample(mine, len(mine))
        else:  # every slot reads every shard in the same order, keeping its own positions
            mine, keep = self.sources, lambda i: i % slots == slot
            reports = slot == 0  # what cannot be read, every slot meets: one of them tells
        index = 0
        for source in mine:
            errors: list[tuple[str, str]] = []
            joined = self.join(source) if self.join is not None else None
            read = 0
            for raw in source.samples(errors):
                read += 1
                index += 1
                if not keep(index - 1):
                    continue
                try:
                    sample = self.decode(raw, rng)
                    if joined is not None:
                        sample.update(joined(raw.key))
                except BadSample as e:
                    warn_skipped(source.name, raw.key, str(e))
                    self.pending_skips += 1
                    continue
                sample["key"] = f"{source.name}/{raw.key}"
                yield sample
            dropped = [e for e in errors if e[0] != source.name]  # samples (bad keys); the rest: the shard
            for key, reason in dropped if reports else ():
                warn_skipped(source.name, key, reason)
                self.pending_skips += 1
            broken = [reason for key, reason in errors if key == source.name]  # the tar itself: torn, corrupt
            if broken and reports:
                known = source.name in self.sizes  # a slot that reports has read the whole shard, shared or not
                lost = max(self.sizes.get(source.name, 0) - read - len(dropped), 0) if known else 1
                warn_skipped(source.name, f"({lost} of its {self.sizes[source.name]} samples unread)" if known else
                             "(the rest of it)", "; ".join(broken))
                self.pending_skips += lost

    def _count_skips(self, batches):
        for batch in batches:
            batch["skipped"], self.pending_skips = self.pending_skips, 0
            yield batch


# ---- decoding and collation per kind ------------------------------------------------


def caption_of(raw: RawSample) -> str:
    if raw.caption is None:
        raise BadSample("no caption (.txt)")
    if not raw.caption.strip():
        raise BadSample("empty caption")
    return raw.caption


def label_of(raw: RawSample) -> int:
    if raw.cls is None:
        raise BadSample("no class label (.cls)")
    return raw.cls


def splats_of(raw: RawSample, max_splats: int | None, rng: random.Random | None) -> np.ndarray:
    if raw.splats is None:
        raise BadSample("no splat record (.splats.npy or .splats.gsq)")
    nrng = np.random.default_rng(rng.getrandbits(32)) if rng is not None else None
    return decode_splats(raw.splats, raw.record, max_splats, nrng)


def image_of(raw: RawSample, preprocess: Callable) -> torch.Tensor:
    if raw.image is None:
        raise BadSample("no image (.jpg/.png/.webp)")
    return preprocess(decode_pil(raw.image))


def collate(samples: list[dict], tokenizer: Callable | None = None) -> dict:
    """Stack images or pad splat sets (Splats in the unit square, with a mask); tokenize captions."""
    batch: dict = {"keys": [s["key"] for s in samples]}
    if "image" in samples[0]:
        batch["image"] = torch.stack([s["image"] for s in samples])
    else:
        batch["splats"] = Splats.from_rows([s["splats"] for s in samples])
    if "caption" in samples[0]:
        batch["text"] = tokenizer([s["caption"] for s in samples])
    if "label" in samples[0]:
        batch["label"] = torch.tensor([s["label"] for s in samples])
    if "teacher" in samples[0]:  # [B, 2, D]: the teacher's image and caption embeddings
        batch["teacher"] = torch.from_numpy(np.stack([s["teacher"] for s in samples]).astype(np.float32))
    return batch


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def check_sampling(splat_sampling: str) -> None:
    if splat_sampling not in ("random", "truncate"):
        raise ValueError(f"splat_sampling must be 'random' or 'truncate', got {splat_sampling!r}")


class DataCompDataModule(L.LightningDataModule):
    """Training pairs: (image or splat set, tokenized caption) from DataComp-style or fitted shards."""

    def __init__(
        self,
        *,
        kind: str,
        train: str,
        tokenizer: Callable[[list[str]], torch.Tensor],
        batch_size: int,
        preprocess: Callable | None = None,  # open_clip's train transform (kind="rgb")
        max_splats: int | None = None,
        splat_sampling: str = "random",  # random | truncate, when a set has more than max_splats
        num_samples: int | None = None,  # epoch length; default: the shards' sizes.json
        num_workers: int = 2,
        shuffle_buffer: int = 1000,
        seed: int = 0,
        key: str = "data.train",  # the config key, for error messages
        val: L.LightningDataModule | None = None,  # zero-shot eval run each validation (its val_dataloader)
        embeddings: str | None = None,  # the teacher's embeddings of these pairs: a folder of shards, named alike
    ):
        super().__init__()
        check_kind(kind)
        self.val = val
        if kind == "rgb" and preprocess is None:
            raise ValueError("DataCompDataModule(kind='rgb') needs open_clip's preprocess transform")
        check_sampling(splat_sampling)
        self.kind, self.tokenizer, self.batch_size, self.preprocess = kind, tokenizer, batch_size, preprocess
        self.max_splats, self.splat_sampling = max_splats, splat_sampling
        self.num_workers, self.shuffle_buffer, self.seed = num_workers, shuffle_buffer, seed
        self.embeddings = embeddings
        self.sources = existing_sources(train, key)
        self.num_samples = num_samples or read_sizes([s.url for s in self.sources if s.url]) or (
            sum(len(s.files) for s in self.sources) if all(s.files is not None for s in self.sources) else None
        )
        if not self.num_samples:
            raise DataPathError(f"{key}={train!r}: no sizes.json beside the shards; set data.num_samples")
        self.resumed_at = 0  # the step a resumed run goes on from (load_state_dict)

    # Lightning builds the train loader before it restores the trainer's step (configure_optimizers asks for
    # estimated_stepping_batches), and restores a DataModule's state before both: the step rides here.
    def state_dict(self) -> dict:
        if self.trainer is None:
            return {}
        return {"global_step": self.trainer.global_step, "world_size": self.trainer.world_size}

    def load_state_dict(self, state_dict: dict) -> None:
        from gs_lightning.errors import UserError

        saved, now = state_dict.get("world_size"), self.trainer.world_size if self.trainer is not None else None
        if saved is not None and now is not None and saved != now:
            # The epoch's steps are split over the processes, and the schedule's length counts them
            raise UserError("trainer.devices", f"the run was trained on {saved} processes (devices x nodes), and "
                                               f"this resume starts {now}: its steps per epoch and its learning-rate "
                                               "schedule follow that count, and its restored step would land "
                                               "elsewhere on the schedule. Resume on devices and nodes that make "
                                               f"{saved}, or train a new run")
        self.resumed_at = int(state_dict.get("global_step", 0))

    def decode(self, raw: RawSample, rng: random.Random) -> dict:
        sample = {"caption": caption_of(raw)}
        if self.kind == "rgb":
            sample["image"] = image_of(raw, self.preprocess)
        else:
            sample["splats"] = splats_of(raw, self.max_splats, rng if self.splat_sampling == "random" else None)
        return sample

    def teacher_of(self, source: Source) -> Callable[[str], dict]:
        """The lookup of a shard's teacher embeddings by key (data/embeddings.py), read once per shard."""
        from gs_lightning.data.embeddings import read_embeddings

        path = Path(self.embeddings) / source.name
        table = read_embeddings(path)

        def lookup(key: str) -> dict:
            if key not in table:
                raise BadSample(f"no teacher embedding for it in {path}")
            return {"teacher": table[key]}

        return lookup

    def check_slots(self, slots: int, sizes: dict[str, int]) -> None:
        """Each slot's pass must hold a whole batch: a pass that gives none ends that slot's stream (webdataset's
        repeat stops at an empty pass), so its rank would run fewer steps than the others, or none. sizes:
        {shard: samples} from sizes.json."""
        from gs_lightning.errors import UserError

        if len(self.sources) >= slots:  # dealt round-robin: a slot's shards
            if not all(s.name in sizes for s in self.sources):
                return  # sizes unknown: the epoch's length was given, the shards' are not
            fewest = min(sum(sizes[s.name] for s in self.sources[k::slots]) for k in range(slots))
        else:  # every slots-th sample of all
            fewest = self.num_samples // slots
        if fewest < self.batch_size:
            raise UserError("data.batch_size", f"is {self.batch_size}, but the loader slot with the fewest samples "
                                               f"reads {fewest} a pass ({len(self.sources)} shards over {slots} "
                                               "slots, a slot being a rank's dataloader worker): it would give no "
                                               "whole batch, and its rank fewer steps than the others. Lower "
                                               "data.batch_size or data.num_workers, or cut the data into more, "
                                               "even shards")

    def batches_per_rank(self, world_size: int) -> int:
        """Steps per epoch on every rank: the epoch's samples split evenly, whole batches only."""
        return max(1, self.num_samples // (world_size * self.batch_size))

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer is not None else 1
        workers = max(self.num_workers, 1)
        sizes = shard_sizes([s.url for s in self.sources if s.url])
        self.check_slots(world * workers, sizes)
        stream = SampleStream(
            self.sources, self.decode, lambda s: collate(s, self.tokenizer), self.batch_size, train=True,
            batches_per_slot=math.ceil(self.batches_per_rank(world) / workers),
            shuffle_buffer=self.shuffle_buffer, seed=self.seed,
            join=self.teacher_of if self.embeddings is not None else None,
            sizes=sizes,
            resumed_at=self.resumed_at,
        )
        stream.with_length(workers * stream.batches_per_slot, silent=True)  # batches per rank, for the schedule
        return loader(stream, self.num_workers)

    def val_dataloader(self) -> DataLoader | list:
        return self.val.val_dataloader() if self.val is not None else []


def loader(stream: SampleStream, num_workers: int) -> DataLoader:
    return DataLoader(
        stream, batch_size=None, num_workers=num_workers, persistent_workers=num_workers > 0,
        multiprocessing_context="fork" if num_workers > 0 else None,
    )


class LostSamples(Callback):
    """Stops a training run that loses more than `max_share` of an epoch's samples (corrupt or truncated shards,
    bad records): the warnings name them, batch["skipped"] counts them, and the run logs train/samples and
    train/lost per epoch. Checked every 50 batches and at each epoch's end, over all ranks. A checkpoint keeps
    the epoch's counts so far, so that a run resumed mid-epoch judges the whole epoch."""

    def __init__(self, max_share: float, every: int = 50):
        self.max_share, self.every = max_share, every
        self.seen = self.skipped = 0  # this rank's
        self.totals = (0, 0)  # all ranks' (seen, skipped) at the last check
        self.restored: dict | None = None

    def on_train_epoch_start(self, trainer, pl_module):  # not called for an epoch resumed mid-way
        self.seen = self.skipped = 0
        self.totals = (0, 0)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        # Training saves on every rank at once. A save in validation (best.ckpt; a SIGTERM there stops one rank
        # alone) starts no collective of its own, which the others could pair with theirs: it keeps the last
        # check's totals.
        seen, skipped = self._totals(trainer, pl_module) if trainer.training else self.totals
        checkpoint["lost_samples"] = {"epoch": trainer.current_epoch, "seen": seen, "skipped": skipped}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self.restored = checkpoint.get("lost_samples")

    def on_train_start(self, trainer, pl_module):
        # After the restore: an epoch the checkpoint ended (saved at its last batch) is over, and the next one
        # starts from 0. The counts are all ranks' summed: rank 0 takes them on, the others start at 0.
        r, self.restored = self.restored, None
        if r and r["epoch"] == trainer.current_epoch:
            self.totals = r["seen"], r["skipped"]
            if trainer.is_global_zero:
                self.seen, self.skipped = self.totals

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen += len(batch["keys"])
        self.skipped += int(batch.get("skipped", 0))
        if (batch_idx + 1) % self.every == 0:
            self._check(trainer, pl_module, final=False)

    def on_train_epoch_end(self, trainer, pl_module):
        self._check(trainer, pl_module, final=True)

    def _totals(self, trainer, pl_module) -> tuple[int, int]:  # (seen, skipped), summed over ranks
        counts = trainer.strategy.reduce(torch.tensor([self.seen, self.skipped], dtype=torch.float64,
                                                      device=pl_module.device), reduce_op="sum")
        return tuple(int(c) for c in counts.tolist())

    def _check(self, trainer, pl_module, final: bool) -> None:
        seen, skipped = self.totals = self._totals(trainer, pl_module)
        if final:
            pl_module.log_dict({"train/samples": float(seen), "train/lost": float(skipped)}, rank_zero_only=True)
        if skipped > self.max_share * (seen + skipped):
            from gs_lightning.errors import UserError

            raise UserError("data.max_lost_share", f"{skipped} of the {seen + skipped} samples of epoch "
                                                   f"{trainer.current_epoch} could not be read (the warnings above name "
                                                   f"them), more than {self.max_share:.1%}; the run stops: repair or "
                                                   "remove those shards, or raise data.max_lost_share")
