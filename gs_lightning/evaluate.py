"""Zero-shot metrics of a finished run's best checkpoint on other labelled shards, and its data's load rate.

What `compare` and `eval` ask beyond the training logs: the RGB teacher on eval images re-encoded at splat budgets
(JPEG, WebP) or rendered back from splats, a splat encoder on the same images stored in another record
(quantized), and any run on the tasks of a zero-shot suite. The model is rebuilt from the run's config.yaml
through the builder and its best.ckpt is loaded weights-only; a splat run's model is built as the scratch model
of the same shape (every weight comes from its checkpoint: no teacher, no stage 1 is read).
"""
from __future__ import annotations

import time
from pathlib import Path


def run_config(run_dir: str | Path):
    """The TrainRun a run was trained with (its config.yaml), as `train` composed it."""
    from gs_lightning.config import TrainRun, compose

    return compose(TrainRun, [Path(run_dir) / "config.yaml"])


def evaluate(run_dir: str | Path, path: str, task=None) -> dict[str, float]:
    """{"top1", "top5", "mean_per_class_recall", "f1_macro"} of the run's best checkpoint on the labelled shards
    `path` (images or splats), with the run's own eval set, or the classes of `task` (zeroshot.tasks.Task); and
    "samples", "skipped": how many it scored, and how many could not be read."""
    import torch

    from gs_lightning import build
    from gs_lightning.checkpoint import load_matching, read_state_dict
    from gs_lightning.errors import UserError
    from gs_lightning.models.clip_module import input_kind

    cfg = run_config(run_dir)
    if input_kind(cfg.model.mode) == "splats":  # every weight comes from best.ckpt: no teacher, no stage 1
        cfg.model.mode, cfg.model.rgb_checkpoint, cfg.model.init_checkpoint = "scratch", None, None
        cfg.model.distill.embedding_weight = cfg.model.distill.logit_weight = 0.0
    checkpoint = str(Path(run_dir) / "checkpoints" / "best.ckpt")
    with build.quiet_lightning():
        module = build.clip_module(cfg, with_eval_set=task is None)  # a task's classes, not the run's
        if task is not None:
            module.use_classes(*task.classifier_text())
        load_matching(module.model, read_state_dict(checkpoint, checkpoint), checkpoint, checkpoint)
        trainer = build.trainer(accelerator="cuda" if torch.cuda.is_available() else "cpu", devices=1, logger=False,
                                enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        data = build.eval_data(cfg, path, num_workers=0)
        out = trainer.validate(module, dataloaders=data.val_dataloader(), verbose=False)
    if module.val_samples == 0:  # torchmetrics would give 0.0, and a suite's mean would count it
        raise UserError(path, "none of its samples could be read (the warnings above name them): nothing to score")
    return {**{k.split("/", 1)[1]: float(v) for k, v in out[0].items() if k.startswith("val/")},
            "samples": module.val_samples, "skipped": module.val_skipped}


def load_rate(run_dir: str | Path, path: str) -> float:
    """Samples per second that the run's eval DataModule reads from `path`: decoded and made ready for the model
    (images: open_clip's transform; splats: their records), one process, no model."""
    from gs_lightning import build

    data = build.eval_data(run_config(run_dir), path, num_workers=0)
    t0, n = time.perf_counter(), 0
    for batch in data.val_dataloader():
        n += len(batch["keys"])
    return n / (time.perf_counter() - t0)
