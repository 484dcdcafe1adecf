"""The RGB teacher's embeddings of the training pairs, computed once (python -m gs_lightning embed) and read
beside their splats, so that a distilled splat run reads no pixels.

An embedding shard mirrors its input shard (the same name and keys, as a fitted shard does): {key}.teacher.npy
holds float16 [2, D], the teacher's L2-normalised embedding of the image (row 0) and of its caption (row 1).
The folder's embed.yaml names the teacher (its checkpoint's sha256, model config, width and logit scale): an
embed rerun there with another teacher is refused, and so is a training run that reads the folder with another
one, naming the folder and its first shard.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import yaml

from gs_lightning.atomic import write_text_atomic
from gs_lightning.data.image_batches import SETTINGS_FILES, check_output_kind, input_origin, stats_path
from gs_lightning.data.shards import ShardWriter, Source, TarShard, tar_groups, update_sizes, warn_skipped
from gs_lightning.errors import UserError

MEMBER = "teacher.npy"
SETTINGS = SETTINGS_FILES["embed"]


def checkpoint_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def keep_embed_settings(folder: str | Path, settings: dict) -> None:
    """Write the teacher's identity to folder/embed.yaml, or refuse a rerun there with another teacher. The
    teacher's path is kept for the record, not compared: the same checkpoint (its sha256) moved or named another
    way is the same teacher."""
    check_output_kind(folder, "embed", "data.embeddings")
    path = Path(folder) / SETTINGS
    if path.exists():
        before = yaml.safe_load(path.read_text())
        differ = [f"{k} was {before.get(k)!r}, now {v!r}" for k, v in settings.items()
                  if k != "teacher" and before.get(k) != v]
        if differ:
            raise UserError("data.embeddings", f"{folder} holds another teacher's embeddings ({'; '.join(differ)}); "
                                               "give a new folder, or the teacher that made them")
        return
    write_text_atomic(path, yaml.safe_dump(settings, sort_keys=False))


def embedding_settings(folder: str | Path) -> dict:
    """The teacher's identity that an embeddings folder keeps (embed.yaml): teacher, teacher_sha256, model, dim,
    logit_scale."""
    return yaml.safe_load((Path(folder) / SETTINGS).read_text())


def check_embeddings(folder: str | Path, shards: dict[str, str | None], teacher_sha256: str, dim: int) -> dict:
    """The settings of the embeddings folder that a run reads (embed.yaml), once it is known to hold this teacher's
    embeddings, of this width, for every one of `shards`, made from the input each was fitted from; else a
    UserError naming the folder and a shard. shards: training shard name -> the origin of the input its splats
    were fitted from (Source.origin), None where its fit kept no account."""
    folder = Path(folder)
    path = folder / SETTINGS
    first = folder / next(iter(shards), "")
    how = "compute them with `python -m gs_lightning embed EXP ...` (the same experiment and overrides)"
    if not path.exists():
        raise UserError("data.embeddings", f"{first} and the rest of {folder} do not exist; {how}")
    settings = yaml.safe_load(path.read_text())
    if settings.get("teacher_sha256") != teacher_sha256:
        raise UserError("data.embeddings", f"{first} holds the embeddings of another teacher (sha256 "
                                           f"{str(settings.get('teacher_sha256'))[:12]}..., model.rgb_checkpoint is "
                                           f"{teacher_sha256[:12]}...); {how}")
    if settings.get("dim") != dim:
        raise UserError("data.embeddings", f"{first} holds embeddings of width {settings.get('dim')}, the model's is "
                                           f"{dim}; {how}")
    missing = [s for s in shards if not (folder / s).exists()]
    if missing:
        raise UserError("data.embeddings", f"{folder / missing[0]} does not exist"
                                           f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}; {how}")
    for shard, fitted_from in shards.items():
        # img2dataset names keys by shard and row, so another download's embeddings find every key, of other images
        embedded_from = input_origin(folder, shard)
        if fitted_from is not None and embedded_from is not None and embedded_from != fitted_from:
            raise UserError("data.embeddings", f"{folder / shard} was computed from {embedded_from}, but its splats "
                                               f"were fitted from {fitted_from}: give data.rgb.train the shards "
                                               f"the splats were fitted from; {how}")
    return settings


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """{key: float16 [2, D]} of an embedding shard; members that do not read as such an array are left out (the
    reader of a key then finds none, and says so)."""
    out = {}
    for key, members in tar_groups(str(path), []):
        try:
            a = np.load(io.BytesIO(members[MEMBER]), allow_pickle=False)
        except (KeyError, ValueError, OSError):
            continue
        if a.ndim == 2 and a.shape[0] == 2:
            out[key] = a
    return out


class EmbeddingShard(TarShard):
    """An embedding shard being written (TarShard: whole under its final name, or not there)."""

    def write(self, key: str, rows: np.ndarray) -> None:  # rows: [2, D] image and text embeddings
        buf = io.BytesIO()
        np.save(buf, np.asarray(rows, dtype=np.float16), allow_pickle=False)
        self._write({"__key__": key, MEMBER: buf.getvalue()})


class EmbeddingWriter(ShardWriter):
    """Writes this rank's embedding shards as their batches arrive (predictions: (ImageBatch, rows [b, 2, D])),
    with each finished shard's account beside it (_stats/<shard>.json: images, seconds, skips, its input)."""

    def __init__(self, folder: str | Path, sources: list[Source]):
        super().__init__()
        self.folder = Path(folder)
        self.sources = {s.name: s for s in sources}  # a finished shard's account names its input (Source.origin)
        self.open: dict[str, tuple[EmbeddingShard, dict]] = {}

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):
        b, rows = prediction
        if b.shard not in self.open:
            self.open[b.shard] = EmbeddingShard(self.folder / b.shard), {"images": 0, "seconds": 0.0, "skipped": []}
        shard, account = self.open[b.shard]
        for key, reason in b.skipped:
            warn_skipped(b.shard, key, reason)
            account["skipped"].append(f"{b.shard}/{key}: {reason}")
        for sample, r in zip(b.samples, rows):
            shard.write(sample.key, r)
        account["images"] += len(b.samples)
        account["seconds"] += self.batch_seconds()
        if b.last and b.unreadable:
            self.drop_unreadable(b.shard, b.unreadable)
        elif b.last:  # the account first, as fit's (FitWriter)
            account["inputs"] = {b.shard: self.sources[b.shard].origin()}
            write_text_atomic(stats_path(self.folder, b.shard), json.dumps(account))
            shard.commit()
            del self.open[b.shard]


def summarise_embeddings(folder: str | Path) -> dict:
    """Images, skipped samples and seconds over every shard of the folder (sizes.json too)."""
    folder = Path(folder)
    accounts = {p.name[: -len(".json")]: json.loads(p.read_text()) for p in sorted((folder / "_stats").glob("*.json"))
                if (folder / p.name[: -len(".json")]).exists()}
    update_sizes(folder, {name: a["images"] for name, a in accounts.items()})
    images = sum(a["images"] for a in accounts.values())
    seconds = sum(a["seconds"] for a in accounts.values())
    return {"images": images, "shards": len(accounts), "skipped": [k for a in accounts.values() for k in a["skipped"]],
            "seconds": seconds, "ms_per_image": 1000 * seconds / images if images else None}
