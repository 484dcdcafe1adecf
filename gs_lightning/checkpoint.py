"""Checkpoints: written atomically, and read as weights only.

A kill never leaves a torn checkpoint under a final name.

Lightning's own save writes the system temp dir and then moves the file into place. On a cluster /tmp is a local
disk and the checkpoints live on a shared filesystem, so that move is a copy, and a job killed during it leaves
half a last.ckpt. AtomicCheckpoint (ModelCheckpoint) and SaveOnSigterm save to a temporary beside the target
and rename it (gs_lightning.atomic), which is atomic whatever the filesystems. SaveOnSigterm saves last.ckpt
when the job is told to stop (SIGTERM: preemption, a time limit, scancel), at the batch boundary where
Lightning raises its SIGTERMException on every rank, so that `resume=true` goes on from there.

Weights are only ever read with torch.load(weights_only=True): unpickling a file runs whatever code it
names, and RGB teachers are files people pass around.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import Tensor, nn

from gs_lightning.atomic import AtomicFile, no_space_named
from gs_lightning.errors import UserError


class AtomicCheckpoint(ModelCheckpoint):
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        target = AtomicFile(filepath)
        try:
            with no_space_named(filepath):
                super()._save_checkpoint(trainer, str(target.tmp))  # collective; rank 0 writes
        except BaseException:
            target.abort()  # a save that failed half way (a full disk) leaves nothing behind
            raise
        if trainer.is_global_zero:
            target.commit()
        self._last_checkpoint_saved = filepath


class SaveOnSigterm(Callback):
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            target = AtomicFile(self.path)
            try:
                trainer.save_checkpoint(target.tmp, weights_only=False)  # the whole state: resume needs it
            except BaseException:
                target.abort()
                raise
            if trainer.is_global_zero:
                target.commit()


def read_state_dict(path: str | Path, key: str) -> dict[str, Tensor]:
    """CLIP weights from a ClipModule (Lightning) checkpoint or an open_clip one, prefixes removed. Anything
    but a checkpoint of plain tensors is a UserError naming `key` (the config key that gave the path)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):
            head = Path(path).read_bytes()[:16]
            raise UserError(key, f"{path} is not a torch checkpoint: it starts with {head!r}") from None
        found = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "objects beyond tensors")
        raise UserError(key, f"{path} holds pickled code or objects, which are never loaded ({found}); give a "
                             "checkpoint of plain weights, such as the RGB run's best.ckpt") from None
    except Exception as e:  # noqa: BLE001  torch raises many types for a file that is not a checkpoint
        raise UserError(key, f"{path} is not a torch checkpoint ({type(e).__name__}: {e})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(key, f"{path} holds a {type(state).__name__}, not a dict of weights (a state_dict)")
    for prefix in ("model.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_matching(model: nn.Module, state: dict[str, Tensor], source: str, key: str) -> None:
    """load_state_dict, but a mismatch says which weights did not match and how."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def head(items):
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = [f"{len(shapes)} with another shape: {head(shapes)}" if shapes else "",
                 f"{len(missing)} missing from the checkpoint: {head(missing)}" if missing else "",
                 f"{len(unexpected)} not in the model: {head(unexpected)}" if unexpected else ""]
        raise UserError(key, f"{source} does not match the model; weights " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)
