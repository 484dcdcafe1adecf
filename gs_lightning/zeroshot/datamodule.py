"""ZeroShotDataModule: labelled eval images, or their fitted splat sets, each counted once across ranks."""
from __future__ import annotations

import random
from typing import Callable

import lightning as L
from torch.utils.data import DataLoader

from gs_lightning.data.datamodules import SampleStream, check_kind, collate, image_of, label_of, loader, splats_of
from gs_lightning.data.shards import RawSample, existing_sources


class ZeroShotDataModule(L.LightningDataModule):
    def __init__(
        self,
        *,
        kind: str,  # rgb | splats
        path: str,
        batch_size: int,
        preprocess: Callable | None = None,  # open_clip's val transform (kind="rgb")
        max_splats: int | None = None,
        num_workers: int = 2,
        key: str = "data.val",  # the config key, for error messages
    ):
        super().__init__()
        check_kind(kind)
        if kind == "rgb" and preprocess is None:
            raise ValueError("ZeroShotDataModule(kind='rgb') needs open_clip's preprocess transform")
        self.kind, self.batch_size, self.preprocess, self.max_splats = kind, batch_size, preprocess, max_splats
        self.num_workers = num_workers
        self.sources = existing_sources(path, key)

    def decode(self, raw: RawSample, rng: random.Random) -> dict:
        sample = {"label": label_of(raw)}
        if self.kind == "rgb":
            sample["image"] = image_of(raw, self.preprocess)
        else:
            sample["splats"] = splats_of(raw, self.max_splats, None)
        return sample

    def val_dataloader(self) -> DataLoader:
        stream = SampleStream(self.sources, self.decode, collate, self.batch_size, train=False)
        return loader(stream, self.num_workers)
