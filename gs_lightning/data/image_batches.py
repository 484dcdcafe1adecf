"""Input images for fitting (and for the teacher's embeddings): batches of decoded, resized images, one input
shard at a time.

Input shards are split across ranks and each rank's dataloader workers by shard, so `trainer.devices=8` or
several nodes each fit their share. A batch never spans two shards, and the last batch of a shard says so:
its output shard is complete once that batch is written. Shards whose output already exists are not read,
which is how a rerun of an interrupted fit resumes; each output shard's account (_stats/<shard>.json) names the
input it was made from, so a rerun whose shard of that name holds other images is refused, not skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from torch.utils.data import IterableDataset

from gs_lightning.data.shards import (
    BadSample, RawSample, Source, UnreadableShard, decode_image, decode_pil, resize_center_crop, worker_slot,
)
from gs_lightning.errors import UserError


def stats_path(output: str | Path, shard: str) -> Path:
    """The account of an output shard, written beside it once the shard is complete."""
    return Path(output) / "_stats" / f"{shard}.json"


def input_origin(output: str | Path, shard: str) -> str | None:
    """What the input of an output shard was (Source.origin), as the shard's account names it; None where the
    folder keeps no such account."""
    f = stats_path(output, shard)
    return json.loads(f.read_text()).get("inputs", {}).get(shard) if f.exists() else None


# The settings file that each command keeps in its output folder, which tells one command's folder from the other's.
SETTINGS_FILES = {"fit": "fit.yaml", "embed": "embed.yaml"}


def check_output_kind(output: str | Path, command: str, output_key: str) -> None:
    """Refuse to write `command`'s shards into a folder of the other command's: its shards take their inputs'
    names too, so every input would be taken as done and nothing written."""
    for other, name in SETTINGS_FILES.items():
        if other != command and (Path(output) / name).exists():
            raise UserError(output_key, f"{output} holds {name}: it is the output of `{other}`, whose shards would "
                                        f"be taken as this {command}'s and none written; give {output_key} a folder "
                                        "of its own")


@dataclass
class ImageBatch:
    shard: str  # the input shard's name, which its output shard takes
    images: Tensor  # [b, 3, S, S] float in [0, 1]
    samples: list[RawSample] = field(default_factory=list)  # per image: key, caption, class, meta (no bytes)
    source_sizes: list[tuple[int, int]] = field(default_factory=list)  # per image: (H, W) before resizing
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (key, reason) of unusable samples
    last: bool = False  # the shard's last batch
    unreadable: str | None = None  # on the last batch: why the input shard could not be read to its end


def as_is(batch: ImageBatch) -> ImageBatch:
    """The DataLoader's collate_fn: ImageBatches batch themselves (a batch never spans two shards)."""
    return batch


class ImageBatches(IterableDataset):
    """This rank's and worker's share of the input shards whose output is not written yet, as ImageBatches."""

    def __init__(self, sources: list[Source], output: str | Path, image_size: int, batch_size: int,
                 preprocess: Callable | None = None):
        """preprocess: a PIL image to [3, image_size, image_size] (open_clip's eval transform, for a model); by
        default the fit's resize and centre crop, in [0, 1]."""
        self.sources, self.output = sources, Path(output)
        self.image_size, self.batch_size, self.preprocess = image_size, batch_size, preprocess
        # Dealt to the slots from this list, taken before any rank can write: a slot that starts after another
        # has finished a shard would deal a shorter list, fitting one shard twice and another not at all. Every
        # rank builds its dataset before the process group's rendezvous, and every worker gets a copy.
        self.todo = self.shards_to_do()

    def check_done(self, key: str, output_key: str) -> None:
        """Refuse a run whose input shard of a name already made in the output holds other images: it would be
        skipped as done and those images never read. Image files are chunked into 00000.tar, ... by their order,
        so a second photo folder run into the first one's output meets this at once. key, output_key: the config
        keys of the input and the output, which the message names."""
        for source in self.sources:
            if source.url is not None and Path(source.url).resolve() == (self.output / source.name).resolve():
                raise UserError(output_key, f"is the folder of {key}'s shard {source.name}: an output shard takes "
                                            "its input's name, so every input would be taken as fitted and none "
                                            f"fitted; give {output_key} a folder of its own")
            if not (self.output / source.name).exists():
                continue
            before = input_origin(self.output, source.name)
            if before is not None and before != (now := source.origin()):
                raise UserError(key, f"its shard {source.name} is {now}, but {self.output / source.name} was made "
                                     f"from {before}. A rerun into the same {output_key} resumes by shard name, so "
                                     f"these images would be skipped as done: give a new {output_key}.")

    def shards_to_do(self) -> list[Source]:
        """The input shards whose output is not written yet, now."""
        return [s for s in self.sources if not (self.output / s.name).exists()]

    def __iter__(self):
        slot, slots = worker_slot()
        for source in self.todo[slot::slots]:
            yield from self._batches(source)

    def _batches(self, source: Source):
        # `errors` is the one list the shard's reader reports into; each batch takes what came since the last.
        images, batch, errors = [], ImageBatch(source.name, torch.empty(0)), []
        try:
            for sample in source.samples(errors, whole=True):
                try:
                    if sample.image is None:
                        raise BadSample("no image member (.jpg/.png/.webp)")
                    if self.preprocess is None:
                        image = decode_image(sample.image)
                        prepared, size = resize_center_crop(image, self.image_size), tuple(image.shape[1:])
                    else:
                        image = decode_pil(sample.image)
                        prepared, size = self.preprocess(image), (image.height, image.width)
                except BadSample as e:
                    errors.append((sample.key, f"{sample.path}: {e}" if sample.path else str(e)))
                    continue
                images.append(prepared)
                batch.source_sizes.append(size)
                sample.image = None  # the decoded pixels travel on; the bytes are done with
                batch.samples.append(sample)
                if len(images) == self.batch_size:
                    batch.images, batch.skipped = torch.stack(images), errors.copy()
                    errors.clear()
                    yield batch
                    images, batch = [], ImageBatch(source.name, torch.empty(0))
        except UnreadableShard as e:
            batch.unreadable = str(e)
        size = self.image_size
        batch.images = torch.stack(images) if images else torch.zeros(0, 3, size, size)
        batch.skipped, batch.last = errors.copy(), True
        yield batch
