"""Checkpoints written atomically: a kill never leaves a torn checkpoint under a final name.

Lightning's own save writes the system temp dir and then moves the file into place. On a cluster /tmp is a local
disk and the checkpoints live on a shared filesystem, so that move is a copy, and a job killed during it leaves
half a last.ckpt. AtomicCheckpoint (ModelCheckpoint) and SaveOnSigterm save to a temporary beside the target
and rename it (gs_lightning.atomic), which is atomic whatever the filesystems. SaveOnSigterm saves last.ckpt
when the job is told to stop (SIGTERM: preemption, a time limit, scancel), at the batch boundary where
Lightning raises its SIGTERMException on every rank, so that `resume=true` goes on from there.
"""
from pathlib import Path

from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gs_lightning.atomic import AtomicFile


class AtomicCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        target = AtomicFile(filepath)
        super()._save_checkpoint(trainer, str(target.tmp))  # collective; rank 0 writes
        if trainer.is_global_zero:
            target.commit()
        self._last_checkpoint_saved = filepath


class SaveOnSigterm(Callback):
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            target = AtomicFile(self.path)
            trainer.save_checkpoint(target.tmp, weights_only=False)  # the whole state: resume needs it
            if trainer.is_global_zero:
                target.commit()
