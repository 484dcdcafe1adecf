"""Zero-shot accuracy of a finished run's best checkpoint on another eval set.

What `compare` asks beyond the training logs: the RGB teacher on eval images re-encoded at splat budgets
(JPEG, WebP), and a splat encoder on the same images stored in another record (quantized). The model is
rebuilt from the run's config.yaml and its best.ckpt is loaded weights-only; a transfer run's model is built
as the scratch model of the same shape (every weight comes from its checkpoint, the teacher is not read).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import yaml

# What an evaluation would print that is noise in it: Lightning's device banner ("GPU available: ..."), news once
# per run but repeated for every evaluation compare makes (one per budget and codec), and open_clip's "No
# pretrained weights loaded", untrue here: the weights come from the run's checkpoint.
BANNER_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
RANDOM_INIT_WARNING = "No pretrained weights loaded"


@contextlib.contextmanager
def quiet_evaluation():
    loggers = [logging.getLogger(name) for name in BANNER_LOGGERS]
    levels = [log.level for log in loggers]
    root = logging.getLogger()
    drop = logging.Filter()
    drop.filter = lambda record: RANDOM_INIT_WARNING not in record.getMessage()
    for log in loggers:
        log.setLevel(logging.WARNING)
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def evaluate(run_dir: str | Path, path: str, batch_size: int | None = None) -> dict[str, float]:
    """{"top1", "top5"} of the run's best checkpoint on the labelled shards `path` (images or splats)."""
    import lightning as L
    import open_clip
    import torch

    from gs_lightning.data.datamodules import ZeroShotDataModule
    from gs_lightning.models.clip_module import ClipModule
    from gs_lightning.models.gs_encoder import load_matching, read_state_dict

    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    model, data = dict(cfg["model"]), cfg["data"]
    kind = "rgb" if model["mode"] == "rgb" else "gs"
    if kind == "gs":
        model.update(mode="scratch", rgb_checkpoint=None)
    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    size = open_clip.get_model_config(model["name"])["vision_cfg"]["image_size"]
    dm = ZeroShotDataModule(kind=kind, path=path, batch_size=batch_size or data["val_batch_size"], num_workers=0,
                            preprocess=open_clip.image_transform(size, is_train=False) if kind == "rgb" else None,
                            max_splats=data.get("max_splats"), key=path)
    with quiet_evaluation():
        module = ClipModule(**model, eval_set=data["eval_set"])
        load_matching(module.model, read_state_dict(checkpoint, str(checkpoint)), str(checkpoint), str(checkpoint))
        trainer = L.Trainer(accelerator="cuda" if torch.cuda.is_available() else "cpu", devices=1, logger=False,
                            enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        out = trainer.validate(module, dataloaders=dm.val_dataloader(), verbose=False)[0]
    return {"top1": float(out["val/top1"]), "top5": float(out["val/top5"])}
