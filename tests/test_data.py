"""DataModules: both kinds load; DDP ranks get disjoint samples and equal steps; bad samples are counted."""
import io
import json
import re
import subprocess
import sys
import tarfile
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import patch

import numpy as np
import open_clip
import pytest
import torch
from helpers import datacomp_shards, fitted_shards, image_bytes, smooth_photo

from gs_lightning.data.datamodules import DataCompDataModule, DataPathError, SampleStream
from gs_lightning.errors import UserError
from gs_lightning.zeroshot.datamodule import ZeroShotDataModule
from gs_lightning.data.shards import FittedShard, decode_image, list_sources, update_sizes, write_image_shard

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = open_clip.get_tokenizer("ViT-B-16")
PREPROCESS = open_clip.image_transform(16, is_train=True)


def test_rgb_and_splat_training_batches(tmp_path):
    rgb = DataCompDataModule(kind="rgb", train=datacomp_shards(tmp_path / "rgb", [5, 4]), tokenizer=TOKENIZER,
                             preprocess=PREPROCESS, batch_size=3, num_workers=0)
    batches = list(rgb.train_dataloader())
    assert len(batches) == 9 // 3  # the epoch's whole batches, from sizes.json
    b = batches[0]
    assert b["image"].shape == (3, 3, 16, 16) and b["text"].shape == (3, 77) and b["text"].dtype == torch.long
    gs = DataCompDataModule(kind="splats", train=fitted_shards(tmp_path / "gs", [5, 4]), tokenizer=TOKENIZER,
                            batch_size=4, num_workers=0, max_splats=5)
    b = next(iter(gs.train_dataloader()))
    s = b["splats"]
    assert s.xy.shape[0] == 4 and s.xy.shape[1] <= 5 and s.mask.dtype == torch.bool
    assert (s.counts() >= 3).all() and (s.xy[s.mask] <= 1).all() and s.units == "unit"  # the unit square
    s.check()


def test_zero_shot_batches_visit_every_sample_once(tmp_path):
    zs = ZeroShotDataModule(kind="splats", path=fitted_shards(tmp_path, [4, 3, 2]), batch_size=4, num_workers=2)
    keys = [k for b in zs.val_dataloader() for k in b["keys"]]
    assert sorted(keys) == sorted(f"{k:05d}.tar/s{k}_{i:03d}" for k, n in enumerate([4, 3, 2]) for i in range(n))


def test_bad_samples_are_skipped_and_counted(tmp_path):
    good = image_bytes(smooth_photo(20, 20), "JPEG")
    write_image_shard(tmp_path / "rgb" / "00000.tar", [
        {"key": "ok", "jpg": good, "txt": "fine"},
        {"key": "corrupt", "jpg": b"\xff\xd8garbage", "txt": "x"},
        {"key": "nocaption", "jpg": good},
        {"key": "empty", "jpg": good, "txt": "   "},
        {"key": "long", "jpg": good, "txt": "word " * 2000},
    ])
    (tmp_path / "rgb" / "00001.tar").write_bytes(b"this is not a tar file")
    update_sizes(tmp_path / "rgb", {"00000.tar": 5, "00001.tar": 1})
    dm = DataCompDataModule(kind="rgb", train=str(tmp_path / "rgb" / "{00000..00001}.tar"), tokenizer=TOKENIZER,
                            preprocess=PREPROCESS, batch_size=1, num_workers=0, num_samples=2)
    with pytest.warns(UserWarning) as record:
        batches = [b for b, _ in zip(dm.train_dataloader(), range(2))]
    text = " ".join(str(w.message) for w in record)
    for key in ("00000.tar/corrupt", "00000.tar/nocaption", "00000.tar/empty", "00001.tar"):
        assert key in text
    assert sorted(k for b in batches for k in b["keys"]) == ["00000.tar/long", "00000.tar/ok"]
    assert sum(b["skipped"] for b in batches) == 4
    long = next(b for b in batches if b["keys"] == ["00000.tar/long"])
    assert long["text"].shape == (1, 77) and long["text"][0, -1] != 0  # truncated, ends in EOT

    w = FittedShard(tmp_path / "gs" / "00000.tar", "fp16")
    w.write("ok", np.full((4, 8), 0.5, np.float16), {}, "fine", 1)
    w.write("nan", np.full((4, 8), np.nan, np.float16), {}, "x", 1)
    w._tar.write({"__key__": "shape", "splats.npy": np.zeros((4, 7), np.float16), "txt": "x", "cls": 1})
    w.commit()
    zs = ZeroShotDataModule(kind="splats", path=str(tmp_path / "gs" / "00000.tar"), batch_size=8, num_workers=0)
    with pytest.warns(UserWarning, match="00000.tar/(nan|shape)"):
        (b,) = list(zs.val_dataloader())
    assert b["keys"] == ["00000.tar/ok"] and b["skipped"] == 2


def test_eval_subsamples_splat_sets_as_training_does_the_same_subset_each_time(tmp_path):
    """With data.max_splats, eval takes each set's random subset (rows keep the init's order: the first ones are
    one band of the image), drawn by the sample's key: the same on every read, whatever the workers; truncate
    takes the first rows."""
    w = FittedShard(tmp_path / "00000.tar", "fp16")
    for i in range(6):
        rows = np.full((64, 8), 0.5, np.float16)
        rows[:, 0] = (np.arange(64) + 0.5) / 64  # each row's x tells which row it is
        w.write(f"k{i}", rows, {}, "x", 1)
    w.commit()

    def rows_read(sampling, workers):  # {key: row numbers}
        zs = ZeroShotDataModule(kind="splats", path=str(tmp_path / "00000.tar"), batch_size=4, max_splats=16,
                                splat_sampling=sampling, num_workers=workers)
        got = {}
        for b in zs.val_dataloader():
            for key, x in zip(b["keys"], b["splats"].xy[..., 0]):
                got[key] = [round(float(v) * 64 - 0.5) for v in x]
        return got

    truncated, drawn, again = rows_read("truncate", 0), rows_read("random", 0), rows_read("random", 2)
    assert truncated == {f"00000.tar/k{i}": list(range(16)) for i in range(6)}
    assert drawn == again and len(drawn) == 6
    for rows in drawn.values():
        assert len(rows) == 16 and rows == sorted(set(rows)) and rows[-1] >= 16  # a subset in order, not a band
    assert len({tuple(r) for r in drawn.values()}) > 1  # each set its own draw


def test_samples_skipped_after_an_eval_streams_last_full_batch_are_counted(tmp_path):
    w = FittedShard(tmp_path / "00000.tar", "fp16")
    for key in ("a", "b", "nan"):  # a full batch of two, then one that cannot be read: no batch follows it
        w.write(key, np.full((4, 8), np.nan if key == "nan" else 0.5, np.float16), {}, "x", 1)
    w.commit()
    zs = ZeroShotDataModule(kind="splats", path=str(tmp_path / "00000.tar"), batch_size=2, num_workers=0)
    with pytest.warns(UserWarning, match="00000.tar/nan"):
        batches = list(zs.val_dataloader())
    # webdataset's batched holds a full batch until the next sample or the end: the skip rides on it
    assert [(b["keys"], b["skipped"]) for b in batches] == [(["00000.tar/a", "00000.tar/b"], 1)]


def test_a_shard_shared_by_more_workers_than_shards_counts_a_dropped_sample_once(tmp_path):
    """With one shard and three workers, every worker meets the duplicate key; one of them counts it."""
    w = FittedShard(tmp_path / "gs" / "00000.tar", "fp16")
    for i in range(7):
        w.write(f"k{i}", np.full((4, 8), 0.5, np.float16), {}, "x", 1)
    w._tar.write({"__key__": "k2", "splats.npy": np.full((4, 8), 0.5, np.float16), "txt": "x", "cls": 1})
    w.commit()
    zs = ZeroShotDataModule(kind="splats", path=str(tmp_path / "gs" / "00000.tar"), batch_size=2, num_workers=3)
    batches = list(zs.val_dataloader())
    assert sorted(k for b in batches for k in b["keys"]) == [f"00000.tar/k{i}" for i in range(7)]
    assert sum(b["skipped"] for b in batches) == 1


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_a_torn_shard_shared_by_workers_counts_every_sample_once(tmp_path, monkeypatch, suffix):
    """One torn shard read by two workers: each of its samples is yielded or counted skipped, once, by the
    workers together, so what the tar never reached counts as sizes.json's samples less those read. Without
    sizes.json that rest is unknown, and counts as one. A gzipped shard, cut, is counted the same way."""
    import gzip

    import gs_lightning.data.datamodules as dm

    fitted_shards(tmp_path, [20])
    whole = (tmp_path / "00000.tar").read_bytes()
    (tmp_path / "00000.tar").unlink()
    torn = tmp_path / f"00000{suffix}"
    data = whole if suffix == ".tar" else gzip.compress(whole)
    torn.write_bytes(data[: 21000 if suffix == ".tar" else len(data) // 2])  # some samples read, one cut, the rest
    (tmp_path / "sizes.json").write_text(json.dumps({torn.name: 20}))

    def read_by_two_workers():
        seen, skipped, told = [], 0, []
        for slot in range(2):
            monkeypatch.setattr(dm, "worker_slot", lambda: (slot, 2))
            stream = dm.SampleStream(dm.existing_sources(str(torn), "data.train"),
                                     lambda raw, rng: {"splats": dm.splats_of(raw, None, None)}, dm.collate, 4,
                                     train=False, sizes=dm.shard_sizes([str(torn)]))
            with warnings.catch_warnings(record=True) as record:
                warnings.simplefilter("always")
                batches = list(stream)
            seen += [k for b in batches for k in b["keys"]]
            skipped += sum(b["skipped"] for b in batches)
            told += [str(w.message) for w in record]
        return seen, skipped, " ".join(told)

    seen, skipped, told = read_by_two_workers()
    assert len(seen) == len(set(seen)) and 1 < len(seen) < 20 and skipped == 20 - len(seen), (seen, skipped, told)
    (unread,) = map(int, re.findall(r"\((\d+) of its 20 samples unread\)", told))
    assert unread > 1, told
    (tmp_path / "sizes.json").unlink()
    unsized, skipped_unsized, told = read_by_two_workers()
    assert unsized == seen and skipped_unsized == skipped - unread + 1 and "(the rest of it)" in told, told


def test_missing_data_path_names_the_key_and_the_path(tmp_path):
    with pytest.raises(DataPathError, match=r"^data\.train: no shards or images found at .*nowhere.* \(missing .*"
                                            r"nowhere/00000\.tar and others\)$"):
        DataCompDataModule(kind="splats", train=str(tmp_path / "nowhere" / "{00000..00003}.tar"), tokenizer=TOKENIZER,
                           batch_size=2)


DDP_SCRIPT = textwrap.dedent('''
    import json, sys
    import lightning as L, open_clip, torch
    from gs_lightning.data.datamodules import DataCompDataModule

    class Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = {}
        def training_step(self, batch, i):
            self.seen.setdefault(self.current_epoch, []).extend(batch["keys"])
            return (self.w * 0).sum() + self.w.sum() * 0
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)
        def on_train_end(self):
            with open(f"{sys.argv[2]}/rank{self.global_rank}.json", "w") as f:
                json.dump(self.seen, f)

    dm = DataCompDataModule(kind="splats", train=sys.argv[1], tokenizer=open_clip.get_tokenizer("ViT-B-16"),
                            batch_size=2, num_workers=2)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False)
    trainer.fit(Recorder(), datamodule=dm)
''')


@pytest.mark.parametrize("counts", [[6, 5, 7], [9, 3, 4, 5, 6, 2, 4, 3, 7], [5] * 8],
                         ids=["fewer_shards_than_slots", "uneven", "even"])
def test_ddp_ranks_see_disjoint_samples_and_run_equal_steps(tmp_path, counts):
    """2 DDP processes (gloo) x 2 workers; 3 shards (< 4 slots), 9 uneven shards, or 8 equal ones (> 4 slots).

    With equal shards every (rank, worker) slot's share is exactly its quota of an epoch, so each epoch covers
    every sample once: no repeats within a rank, and nothing missing across ranks."""
    pattern = fitted_shards(tmp_path / "gs", counts)
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    subprocess.run([sys.executable, str(script), pattern, str(tmp_path)], cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps_per_epoch = sum(counts) // (2 * 2)  # num_samples // (world * batch)
    for epoch in ("0", "1"):
        r0, r1 = seen[0][epoch], seen[1][epoch]
        assert len(r0) == len(r1) == 2 * steps_per_epoch  # equal steps, whole batches of 2
        assert not set(r0) & set(r1), "ranks must see disjoint samples"
        if len(set(counts)) == 1:
            assert len(set(r0)) == len(r0) and len(set(r1)) == len(r1), "a sample repeated within an epoch"
            assert set(r0) | set(r1) == {f"{k:05d}.tar/s{k}_{i:03d}" for k, n in enumerate(counts) for i in range(n)}
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled between epochs


COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def test_every_caption_stays_with_its_image_through_shuffled_batches(tmp_path):
    """Captions name their image's colour, so a batch can be checked pair by pair: RGB images and splat sets."""
    names = list(COLOURS)
    rgb_samples, gs = [], FittedShard(tmp_path / "gs" / "00000.tar", "fp16")
    for i in range(24):
        name = names[(i * 7) % 3]
        square = np.zeros((16, 16, 3), np.uint8) + np.array(COLOURS[name], np.uint8)
        rgb_samples.append({"key": f"k{i:03d}", "png": image_bytes(square, "PNG"), "txt": f"a {name} square"})
        record = np.zeros((4, 8), np.float16)
        record[:, :2], record[:, 2], record[:, 4] = 0.5, 0.2, 0.2
        record[:, 5:] = np.array(COLOURS[name]) / 255
        gs.write(f"k{i:03d}", record, {}, f"a {name} square", None)
    gs.commit()
    write_image_shard(tmp_path / "rgb" / "00000.tar", rgb_samples)
    want = {name: TOKENIZER([f"a {name} square"])[0] for name in names}
    for kind, path in (("rgb", tmp_path / "rgb" / "00000.tar"), ("splats", tmp_path / "gs" / "00000.tar")):
        dm = DataCompDataModule(kind=kind, train=str(path), tokenizer=TOKENIZER, batch_size=8, num_workers=2,
                                num_samples=24, shuffle_buffer=24,
                                preprocess=open_clip.image_transform(16, is_train=False) if kind == "rgb" else None)
        for batch in dm.train_dataloader():
            if kind == "rgb":
                colour = batch["image"].mean(dim=(2, 3)).argmax(dim=1)  # normalised, but the lit channel still wins
            else:
                colour = batch["splats"].rgb.mean(dim=1).argmax(dim=1)
            for i, c in enumerate(colour.tolist()):
                assert torch.equal(batch["text"][i], want[names[c]]), (kind, batch["keys"][i])


def test_the_training_shuffle_follows_the_seed(tmp_path):
    """The same seed gives the same order of samples, another seed another order of the same samples."""
    path = fitted_shards(tmp_path / "gs", [12, 12])

    def order(seed: int) -> list[str]:
        dm = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4, num_workers=0,
                                num_samples=24, shuffle_buffer=24, seed=seed)
        loader = dm.train_dataloader()
        assert len(loader) == 24 // 4  # the batches the schedule counts on: every sample once
        return [key for batch in loader for key in batch["keys"]]

    first = order(3)
    assert order(3) == first
    other = order(4)
    assert other != first and sorted(other) == sorted(first) and len(set(first)) == 24


def test_each_epoch_is_shuffled_anew_with_dataloader_workers(tmp_path):
    """Lightning iterates one DataLoader per epoch; its workers (kept between epochs) count their passes, so
    epoch 2 is another order of the same samples, as it is without workers."""
    path = fitted_shards(tmp_path / "gs", [8, 8])
    for workers in (0, 2):
        loader = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4,
                                    num_workers=workers, num_samples=16, shuffle_buffer=16).train_dataloader()
        epochs = [[key for batch in loader for key in batch["keys"]] for _ in range(2)]
        assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1]), (workers, epochs)


def test_a_resumed_run_shuffles_anew_and_never_replays_the_killed_attempts_epochs(tmp_path):
    """A resumed run's loader is made in a fresh process: were its passes seeded as a fresh run's, its epochs would
    be the killed attempt's first ones again, in their order. Seeded by the step it goes on from, they are new
    orders of the same samples, the same ones on every resume from that step."""
    path = fitted_shards(tmp_path / "gs", [8, 8])

    def epochs(step: int) -> list[list[str]]:
        dm = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4, num_workers=0,
                                num_samples=16, shuffle_buffer=16)
        dm.trainer = SimpleNamespace(world_size=1)
        dm.load_state_dict({"global_step": step})
        loader = dm.train_dataloader()
        return [[key for batch in loader for key in batch["keys"]] for _ in range(2)]

    fresh, resumed = epochs(0), epochs(13)
    assert resumed == epochs(13) and all(sorted(e) == sorted(fresh[0]) for e in resumed)
    assert not {tuple(e) for e in resumed} & {tuple(e) for e in fresh}


def test_a_resume_through_lightning_seeds_its_stream_with_the_step_it_goes_on_from(tmp_path):
    """Lightning builds the train loader while configure_optimizers asks for estimated_stepping_batches, before
    it restores the trainer's step: the step the stream is seeded with comes from the checkpoint itself."""
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return (self.w - len(batch["keys"])).pow(2).sum()

        def configure_optimizers(self):  # as ClipModule's: the schedule's length
            assert self.trainer.estimated_stepping_batches > 0
            return torch.optim.SGD(self.parameters(), lr=0.01)

    path = fitted_shards(tmp_path / "gs", [8, 8])

    def run(epochs: int, ckpt=None):  # epochs, not max_steps, as a run's: the schedule's length needs the loader
        dm = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4, num_workers=0,
                                num_samples=16, shuffle_buffer=16)
        trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
        trainer.fit(Module(), datamodule=dm, ckpt_path=ckpt)
        return trainer, trainer.train_dataloader.dataset.resumed_at

    trainer, resumed_at = run(1)
    assert resumed_at == 0 and trainer.global_step == 4
    trainer.save_checkpoint(tmp_path / "at4.ckpt")
    trainer, resumed_at = run(2, str(tmp_path / "at4.ckpt"))
    assert resumed_at == 4 and trainer.global_step == 8
    # a run on two processes resumed on one: each epoch twice as many steps as its schedule was made for
    ckpt = torch.load(tmp_path / "at4.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["DataCompDataModule"]["world_size"] == 1
    ckpt["DataCompDataModule"]["world_size"] = 2
    torch.save(ckpt, tmp_path / "on2.ckpt")
    with pytest.raises(UserError, match=r"^trainer\.devices: the run was trained on 2 processes .* this resume "
                                        r"starts 1: "):
        run(2, str(tmp_path / "on2.ckpt"))


def test_a_slot_whose_pass_holds_no_whole_batch_is_refused_before_training(tmp_path):
    """A slot (a rank's dataloader worker) whose samples make no whole batch ends its stream at once (webdataset
    stops repeating an empty pass): its rank would train fewer steps than the others. Refused, naming the batch."""
    path = fitted_shards(tmp_path / "gs", [3, 9, 9])
    dm = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4, num_workers=0)
    for world, fewest in ((3, 3), (6, 21 // 6)):  # 3 slots: shard 0 alone; 6: every 6th sample of the 21
        dm.trainer = SimpleNamespace(world_size=world)
        with pytest.raises(UserError, match=rf"^data\.batch_size: is 4, but the loader slot with the fewest "
                                            rf"samples reads {fewest} a pass \(3 shards over {world} slots"):
            dm.train_dataloader()
    dm.trainer = SimpleNamespace(world_size=2)  # shards 0 and 2 (12 samples), and shard 1 (9)
    assert len(list(dm.train_dataloader())) == dm.batches_per_rank(2) == 21 // 8
    # the oracle: the refused slot's stream, made anyway, gives no batch at all
    stream = SampleStream(dm.sources, dm.decode, lambda b: b, 4, train=True, batches_per_slot=2)
    with patch("gs_lightning.data.datamodules.worker_slot", return_value=(0, 3)):
        assert list(stream) == []


def test_an_epoch_is_whole_batches(tmp_path):
    dm = DataCompDataModule(kind="splats", train=fitted_shards(tmp_path / "gs", [22]), tokenizer=TOKENIZER,
                            batch_size=4, num_workers=0, num_samples=22)
    assert [dm.batches_per_rank(world) for world in (1, 2, 3, 8)] == [5, 2, 1, 1]  # at least one


@pytest.mark.parametrize("sampling", ["random", "truncate"])
def test_a_set_over_max_splats_is_a_random_subset_in_order_or_its_first_rows(tmp_path, sampling):
    import random

    path = fitted_shards(tmp_path / "gs", [3], n_splats=(30, 40))
    dm = DataCompDataModule(kind="splats", train=path, tokenizer=TOKENIZER, batch_size=4, num_workers=0,
                            max_splats=5, splat_sampling=sampling)
    for raw in list_sources(path)[0].samples([]):
        rows = np.load(io.BytesIO(raw.splats))
        got = dm.decode(raw, random.Random(7))["splats"]
        where = [int(np.flatnonzero((rows == r).all(1))[0]) for r in got]  # each kept row is one of the set's
        assert len(got) == 5 and where == sorted(where)
        assert (where == list(range(5))) == (sampling == "truncate"), where


def write_idx(path, array: np.ndarray) -> None:
    """An MNIST idx file by the format's definition: 0, 0, dtype 0x08 (uint8), ndim, big-endian sizes, data."""
    import gzip

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_the_demo_writes_fashion_mnist_as_shards(tmp_path):
    """make demo's data path: Debian's idx files in, DataComp-style train shards and labelled test shards out."""
    from gs_lightning.data.demo import read_idx, write_fashion_mnist
    from gs_lightning.data.demo import FASHION_CLASSNAMES

    rng = np.random.default_rng(0)
    split = {"train": (rng.integers(0, 256, (7, 28, 28)), np.array([0, 1, 2, 3, 9, 9, 5])),
             "t10k": (rng.integers(0, 256, (3, 28, 28)), np.array([8, 0, 4]))}
    for prefix, (images, labels) in split.items():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), split["train"][0])
    patterns = write_fashion_mnist(tmp_path / "out", shard_size=4, source=tmp_path)
    assert patterns == {"train": str(tmp_path / "out" / "fashion-mnist" / "train" / "{00000..00001}.tar"),
                        "test": str(tmp_path / "out" / "fashion-mnist" / "test" / "{00000..00000}.tar")}
    for name, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = split[prefix]
        folder = tmp_path / "out" / "fashion-mnist" / name
        sizes = json.loads((folder / "sizes.json").read_text())
        assert sum(sizes.values()) == len(images)
        samples = {}
        for shard in sorted(folder.glob("*.tar")):
            with tarfile.open(shard) as tar:
                for m in tar.getmembers():
                    key, ext = m.name.split(".", 1)
                    samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
        for i, (image, label) in enumerate(zip(images, labels)):
            s = samples[f"{name}{i:06d}"]
            decoded = decode_image(s["png"])  # grey PNG -> [3, 28, 28]
            torch.testing.assert_close(decoded[0], torch.from_numpy(image).float() / 255)
            assert int(s["cls"]) == label and FASHION_CLASSNAMES[label] in s["txt"].decode()
