"""Atomic writes: an exception inside a write leaves nothing under the final name (and no temporary behind)."""
import pytest
import torch

from gs_lightning.atomic import AtomicFile, write_text_atomic


class Boom(Exception):
    pass


def test_an_exception_inside_the_write_leaves_no_file(tmp_path):
    target = tmp_path / "out" / "x.json"
    with pytest.raises(Boom):
        with AtomicFile(target) as tmp:
            tmp.write_text("half of it")
            raise Boom
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_an_exception_keeps_the_file_that_was_there(tmp_path):
    target = tmp_path / "x.json"
    write_text_atomic(target, "old")
    with pytest.raises(TypeError):
        write_text_atomic(target, b"not text")  # write_text refuses bytes, after the temporary exists
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_a_shard_that_fails_half_way_is_not_under_its_name(tmp_path):
    import numpy as np

    from gs_lightning.data.shards import FittedShard

    shard = FittedShard(tmp_path / "00000.tar", "fp16")
    shard.write("a", np.zeros((2, 8), np.float32) + 0.5, {"psnr": 1.0}, "x", None)
    with pytest.raises(ValueError):
        shard.write("b", np.zeros((2, 7), np.float32), {}, "x", None)  # a bad record: the writer stops
    shard.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_save_that_fails_leaves_no_checkpoint(tmp_path, monkeypatch):
    """The write dies half way (a full disk): neither best.ckpt nor its temporary stays, and the error is the one
    line that names the checkpoint."""
    import lightning as L
    import lightning.fabric.plugins.io.torch_io as torch_io

    from gs_lightning.checkpoint import AtomicCheckpoint

    def half_then_fail(checkpoint, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    model = L.LightningModule()
    model.layer = torch.nn.Linear(2, 2)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(model)
    monkeypatch.setattr(torch_io, "_atomic_save", half_then_fail)
    from gs_lightning.errors import UserError

    with pytest.raises(UserError, match=r"best\.ckpt: no space left on the device"):
        AtomicCheckpoint(dirpath=tmp_path, filename="best")._save_checkpoint(trainer, str(tmp_path / "best.ckpt"))
    assert list(tmp_path.iterdir()) == []


def test_a_checkpoint_is_saved_under_its_name_and_save_last_links_to_it(tmp_path):
    """A save that succeeds leaves best.ckpt (the model's weights) and no temporary; and ModelCheckpoint's
    save_last="link" still makes last.ckpt a link to that checkpoint, not a second copy nor a link to the
    temporary that was renamed away."""
    import lightning as L

    from gs_lightning.checkpoint import AtomicCheckpoint

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.layer(batch).pow(2).mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    model = Tiny()
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False,
                        callbacks=[AtomicCheckpoint(dirpath=tmp_path, filename="best", save_last="link")])
    trainer.fit(model, torch.utils.data.DataLoader(torch.randn(4, 2), batch_size=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
    last, best = tmp_path / "last.ckpt", tmp_path / "best.ckpt"
    assert last.is_symlink() and last.resolve() == best.resolve()
    saved = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
    assert saved.keys() == model.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
