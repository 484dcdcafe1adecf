"""ZeroShotDataModule: labelled eval images, or their fitted splat sets, each counted once across ranks."""
from __future__ import annotations

import random
import zlib
from typing import Callable

import lightning as L
from torch.utils.data import DataLoader

from gs_lightning.data.datamodules import (
    SampleStream, check_kind, check_sampling, collate, image_of, label_of, loader, splats_of,
)
from gs_lightning.data.shards import RawSample, existing_sources, shard_sizes


class ZeroShotDataModule(L.LightningDataModule):
    def __init__(
        self,
        *,
        kind: str,  # rgb | splats
        path: str,
        batch_size: int,
        preprocess: Callable | None = None,  # open_clip's val transform (kind="rgb")
        max_splats: int | None = None,
        splat_sampling: str = "random",  # random | truncate, when a set has more than max_splats
        num_workers: int = 2,
        key: str = "data.val",  # the config key, for error messages
    ):
        super().__init__()
        check_kind(kind)
        if kind == "rgb" and preprocess is None:
            raise ValueError("ZeroShotDataModule(kind='rgb') needs open_clip's preprocess transform")
        check_sampling(splat_sampling)
        self.kind, self.batch_size, self.preprocess, self.max_splats = kind, batch_size, preprocess, max_splats
        self.splat_sampling = splat_sampling
        self.num_workers = num_workers
        self.sources = existing_sources(path, key)

    def decode(self, raw: RawSample, rng: random.Random) -> dict:
        sample = {"label": label_of(raw)}
        if self.kind == "rgb":
            sample["image"] = image_of(raw, self.preprocess)
        else:
            # The subset training draws from (a set's rows keep the init's order, so its first rows are one band of
            # the image), drawn by the sample's key: the same for every epoch, rank and worker count.
            rng = random.Random(zlib.crc32(raw.key.encode())) if self.splat_sampling == "random" else None
            sample["splats"] = splats_of(raw, self.max_splats, rng)
        return sample

    def val_dataloader(self) -> DataLoader:
        # sizes.json (written beside a task's shards and fitted ones): a torn shard's unread samples count
        stream = SampleStream(self.sources, self.decode, collate, self.batch_size, train=False,
                              sizes=shard_sizes([s.url for s in self.sources if s.url]))
        return loader(stream, self.num_workers)
