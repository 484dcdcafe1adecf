"""DataModules: both kinds load; DDP ranks get disjoint samples and equal steps; bad samples are counted."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from helpers import datacomp_shards, fitted_shards, image_bytes, smooth_photo

from gs_lightning.data.datamodules import DataCompDataModule, DataPathError, ZeroShotDataModule
from gs_lightning.data.shards import FittedShardWriter, update_sizes, write_image_shard

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
    gs = DataCompDataModule(kind="gs", train=fitted_shards(tmp_path / "gs", [5, 4]), tokenizer=TOKENIZER,
                            batch_size=4, num_workers=0, max_splats=5)
    b = next(iter(gs.train_dataloader()))
    s = b["splats"]
    assert s.xy.shape[0] == 4 and s.xy.shape[1] <= 5 and s.mask.dtype == torch.bool
    assert (s.counts() >= 3).all() and (s.xy[s.mask] <= 1).all()  # unit square
    s.check()


def test_zero_shot_batches_visit_every_sample_once(tmp_path):
    zs = ZeroShotDataModule(kind="gs", path=fitted_shards(tmp_path, [4, 3, 2]), batch_size=4, num_workers=2)
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

    w = FittedShardWriter(tmp_path / "gs" / "00000.tar")
    w.write("ok", np.full((4, 8), 0.5, np.float16), {}, "fine", 1)
    w.write("nan", np.full((4, 8), np.nan, np.float16), {}, "x", 1)
    w._tar.write({"__key__": "shape", "splats.npy": np.zeros((4, 7), np.float16), "txt": "x", "cls": 1})
    w.commit()
    zs = ZeroShotDataModule(kind="gs", path=str(tmp_path / "gs" / "00000.tar"), batch_size=8, num_workers=0)
    with pytest.warns(UserWarning, match="00000.tar/(nan|shape)"):
        (b,) = list(zs.val_dataloader())
    assert b["keys"] == ["00000.tar/ok"] and b["skipped"] == 2


def test_missing_data_path_names_the_key_and_the_demo(tmp_path):
    with pytest.raises(DataPathError, match=r"^data\.train: .*nowhere.*DATA=demo"):
        DataCompDataModule(kind="gs", train=str(tmp_path / "nowhere" / "{00000..00003}.tar"), tokenizer=TOKENIZER,
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

    dm = DataCompDataModule(kind="gs", train=sys.argv[1], tokenizer=open_clip.get_tokenizer("ViT-B-16"),
                            batch_size=2, num_workers=2)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=2, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, use_distributed_sampler=False)
    trainer.fit(Recorder(), datamodule=dm)
''')


@pytest.mark.parametrize("counts", [[6, 5, 7], [9, 3, 4, 5, 6, 2, 4, 3, 7]], ids=["fewer_shards_than_slots", "uneven"])
def test_ddp_ranks_see_disjoint_samples_and_run_equal_steps(tmp_path, counts):
    """2 DDP processes (gloo) x 2 workers; 3 shards (< 4 slots) or 9 uneven shards (> 4 slots)."""
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
    assert seen[0]["0"] != seen[0]["1"]  # reshuffled between epochs
