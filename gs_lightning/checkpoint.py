"""Lightning's ModelCheckpoint, written to `<name>.tmp` and renamed, so a kill never leaves a torn checkpoint."""
import os

from lightning.pytorch.callbacks import ModelCheckpoint


class AtomicCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        tmp = f"{filepath}.tmp"
        super()._save_checkpoint(trainer, tmp)  # collective; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        self._last_checkpoint_saved = filepath
