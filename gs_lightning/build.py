"""One builder: a composed config to the Lightning objects a command runs. `train`, `evaluate` and the
benchmarks build their Trainer, DataModules and ClipModule here, so each config key reaches its constructor
in one place. The config nodes that only this builder reads live beside it: data, trainer, checkpoint, logger.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from gs_lightning.errors import UserError
from gs_lightning.schema import setting

# ---- the config nodes ------------------------------------------------------------------------------------


@dataclass
class ShardPaths:
    train: Optional[str] = setting(None, "training shards: a pattern (dir/{00000..00099}.tar), glob or folder")
    val: Optional[str] = setting(None, "labelled eval shards or an image folder (val/<class>/*.JPEG), "
                                       "evaluated zero-shot every epoch")


@dataclass
class SplatShardPaths(ShardPaths):
    val_quantized: Optional[str] = setting(None, "the eval images fitted with fit.record=quantized: `compare` "
                                                 "evaluates the best checkpoint on them too")


@dataclass
class DataConfig:
    """Where a run's data is: RGB runs read data.rgb, splat runs (transfer, scratch) data.splats."""

    rgb: ShardPaths = setting(ShardPaths)
    splats: SplatShardPaths = setting(SplatShardPaths)
    eval_set: str = setting("imagenet", "zero-shot class names + prompt templates: imagenet | fashion-mnist, or a "
                                        "task folder in clip_benchmark's layout (gs_lightning/zeroshot/tasks.py)")
    embeddings: Optional[str] = setting(None, "folder of the teacher's embeddings of the training pairs (shards "
                                              "named as data.rgb.train's; python -m gs_lightning embed writes "
                                              "them): what distillation reads")
    num_samples: Optional[int] = setting(None, "epoch length; null: sizes.json beside the train shards", ge=1)
    batch_size: int = setting(256, "per device", ge=1)
    val_batch_size: int = setting(256, "per device", ge=1)
    num_workers: int = setting(8, "dataloader workers per device", ge=0)
    max_splats: Optional[int] = setting(None, "subsample larger splat sets to this many", ge=1)
    splat_sampling: str = setting("random", "how max_splats subsamples: random | truncate",
                                  choices=("random", "truncate"))
    max_lost_share: float = setting(0.01, "a training run stops when more than this share of an epoch's samples "
                                          "cannot be read (corrupt or truncated shards, bad records)", ge=0, le=1)


@dataclass
class DevicesConfig:
    """The Lightning Trainer's placement arguments, passed through as they are."""

    accelerator: str = setting("auto", "cpu | gpu | auto (Lightning's)")
    devices: Union[int, str] = setting("auto", "devices per node: a count, or auto")
    num_nodes: int = setting(1, "nodes (a SLURM job's --nodes)", ge=1)
    strategy: str = setting("auto", "auto | ddp (Lightning's)")


@dataclass
class TrainerConfig(DevicesConfig):
    """Lightning Trainer arguments, passed through."""

    precision: str = setting("32-true", "32-true | bf16-mixed | 16-mixed (Lightning's)")
    max_epochs: Optional[int] = setting(32, "epochs", ge=1)
    max_steps: int = setting(-1, "stop after this many steps (-1: max_epochs decides)", ge=-1)
    accumulate_grad_batches: int = setting(1, "batches per optimizer step", ge=1)
    gradient_clip_val: Optional[float] = setting(None, "clip the gradient norm to this", ge=0)
    log_every_n_steps: int = setting(50, "how often to log", ge=1)
    check_val_every_n_epoch: Optional[int] = setting(1, "zero-shot evaluation every this many epochs", ge=1)
    num_sanity_val_steps: int = setting(0, "validation batches before training (-1: all)", ge=-1)
    limit_train_batches: Optional[Union[int, float]] = setting(None, "batches (int) or share (float) of an "
                                                                     "epoch", ge=0)
    limit_val_batches: Optional[Union[int, float]] = setting(None, "batches (int) or share (float) of the "
                                                                   "eval set", ge=0)
    enable_progress_bar: bool = setting(True, "show the progress bar")


@dataclass
class CheckpointConfig:
    # The names zero_shot_metrics logs (a test holds the two alike): another would stop the run at its first
    # validation, after an epoch of training.
    monitor: str = setting("val/top1", "best.ckpt is the epoch with the highest of this (transfer loads it)",
                           choices=("val/top1", "val/top5", "val/mean_per_class_recall", "val/f1_macro"))
    every_n_train_steps: int = setting(500, "also save last.ckpt this often, so a killed run resumes "
                                            "mid-epoch", ge=1)


@dataclass
class LoggerConfig:
    wandb: bool = setting(True, "log to W&B: online when logged in, offline otherwise")
    project: str = setting("gs-lightning", "the W&B project")
    csv: bool = setting(True, "CSV log in the run folder (what `compare` reads)")


# ---- Lightning objects -------------------------------------------------------------------------------------

# What Lightning prints on every Trainer it builds ("GPU available: ..."), news for a training run but noise in
# a fit and in each of compare's evaluations; and open_clip's "No pretrained weights loaded", untrue where the
# weights come from a checkpoint.
BANNER_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
RANDOM_INIT_WARNING = "No pretrained weights loaded"


@contextlib.contextmanager
def quiet_lightning():
    """No device banner from the Trainers built inside, and no open_clip random-init warning."""
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


# The trainer keys Lightning checks when a Trainer is built, in the order they depend on each other (the devices
# an accelerator can have, the strategies a device count allows).
PLACEMENT = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def _refusal(**kwargs) -> Optional[Exception]:
    import lightning as L

    try:
        L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                  **kwargs)
    except Exception as e:  # noqa: BLE001  Lightning refuses settings with ValueError, TypeError, ImportError, ...
        return e
    return None


def check_trainer(node, prefix: str = "trainer") -> None:
    """Lightning's refusal of the trainer's placement and precision (node: DevicesConfig or TrainerConfig), as a
    UserError naming the key, before any work: a Trainer built with them alone costs milliseconds, and its
    refusals are a TypeError or an ImportError as often as the MisconfigurationException `trainer` expects. The
    keys are added one at a time, so the one named is the first Lightning cannot take with those before it."""
    given = {k: node[k] for k in PLACEMENT if k in node}
    with quiet_lightning():
        if _refusal(**given) is None:
            return
        for i, key in enumerate(given):
            if e := _refusal(**dict(list(given.items())[: i + 1])):
                raise UserError(f"{prefix}.{key}", f"Lightning cannot take {given[key]!r}: "
                                                   f"{str(e).splitlines()[0][:200]}")


def missing_accelerator(node) -> Optional[str]:
    """The accelerator the trainer names (node: DevicesConfig or TrainerConfig) that this machine lacks, as
    Lightning words it, or None: a cluster's login node has no GPU, yet it is where runs are composed."""
    from lightning.pytorch.accelerators import AcceleratorRegistry, CUDAAccelerator, MPSAccelerator

    name = str(node.get("accelerator", "auto"))
    if name == "gpu":
        return None if CUDAAccelerator.is_available() or MPSAccelerator.is_available() else "gpu"
    if name in AcceleratorRegistry.available_accelerators():
        return None if AcceleratorRegistry[name]["accelerator"].is_available() else name
    return None


# fit and embed deal shards to ranks, which end up to a shard's fitting apart (an hour and more of the paper's
# recipe) and then meet at a barrier: far past the 30 minutes DDP gives a collective by default
RANKS_MAY_WAIT_S = 3 * 24 * 3600


def trainer(*, ranks_may_wait: bool = False, **kwargs):
    """L.Trainer, with Lightning's refusal of a trainer setting reported as the user error it is. ranks_may_wait:
    its DDP collectives wait RANKS_MAY_WAIT_S for a rank."""
    from datetime import timedelta

    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.strategies import DDPStrategy

    try:
        run = L.Trainer(**kwargs)
    except (MisconfigurationException, ValueError) as e:
        raise UserError("trainer", str(e).splitlines()[0]) from None
    if ranks_may_wait and isinstance(run.strategy, DDPStrategy):  # whichever DDP `auto` or `ddp` chose, unstarted
        run.strategy._timeout = timedelta(seconds=RANKS_MAY_WAIT_S)
    return run


def clip_module(cfg, *, with_eval_set: bool = True):  # cfg: TrainRun -> ClipModule
    """The run's module; with_eval_set=False leaves its classes to the caller (use_classes: a suite's task), and
    data.eval_set unread."""
    from omegaconf import OmegaConf

    from gs_lightning.models.clip_module import ClipModule

    teacher_logit_scale = None
    if cfg.model.distill.logit_weight > 0 and cfg.data.embeddings:
        from gs_lightning.data.embeddings import embedding_settings

        teacher_logit_scale = embedding_settings(cfg.data.embeddings)["logit_scale"]
    return ClipModule(**OmegaConf.to_container(cfg.model, resolve=True),
                      eval_set=cfg.data.eval_set if with_eval_set else None, teacher_logit_scale=teacher_logit_scale)


def image_size(cfg) -> int:
    """The model's input size in pixels (what RGB images are resized to)."""
    import open_clip

    import gs_lightning.models  # noqa: F401  registers the project's model configs with open_clip

    return open_clip.get_model_config(cfg.model.name)["vision_cfg"]["image_size"]


def eval_data(cfg, path: str | None = None, *, num_workers: int | None = None):
    """The zero-shot DataModule of a run (cfg: TrainRun): its data.<kind>.val, or the labelled shards `path`
    read the same way."""
    import open_clip

    from gs_lightning.models.clip_module import input_kind
    from gs_lightning.zeroshot.datamodule import ZeroShotDataModule

    kind = input_kind(cfg.model.mode)
    d = cfg.data
    return ZeroShotDataModule(
        kind=kind, path=path or d[kind].val, batch_size=d.val_batch_size,
        num_workers=d.num_workers if num_workers is None else num_workers,
        preprocess=open_clip.image_transform(image_size(cfg), is_train=False) if kind == "rgb" else None,
        max_splats=d.max_splats, splat_sampling=d.splat_sampling, key=path or f"data.{kind}.val",
    )


def train_data(cfg, tokenizer):
    """The training DataModule of a run (cfg: TrainRun), with its zero-shot eval as validation."""
    import open_clip

    from gs_lightning.data.datamodules import DataCompDataModule
    from gs_lightning.models.clip_module import ModelConfig, input_kind

    kind = input_kind(cfg.model.mode)
    d = cfg.data
    return DataCompDataModule(
        kind=kind, train=d[kind].train, tokenizer=tokenizer, batch_size=d.batch_size,
        preprocess=open_clip.image_transform(image_size(cfg), is_train=True) if kind == "rgb" else None,
        max_splats=d.max_splats, splat_sampling=d.splat_sampling, num_samples=d.num_samples,
        num_workers=d.num_workers, seed=cfg.seed, key=f"data.{kind}.train", val=eval_data(cfg),
        embeddings=d.embeddings if ModelConfig.reads_teacher_embeddings(cfg.model) else None,
    )


def callbacks(cfg, run_dir: Path) -> list:
    """best.ckpt (by checkpoint.monitor), last.ckpt (every checkpoint.every_n_train_steps and at epoch ends),
    last.ckpt when a cluster stops the job, and the stop when too many samples cannot be read."""
    from gs_lightning.checkpoint import AtomicCheckpoint, SaveOnSigterm
    from gs_lightning.data.datamodules import LostSamples

    folder = run_dir / "checkpoints"
    return [
        LostSamples(cfg.data.max_lost_share),
        AtomicCheckpoint(dirpath=folder, filename="best", monitor=cfg.checkpoint.monitor, mode="max",
                         save_top_k=1, save_last=False, enable_version_counter=False),  # best.ckpt is what eval reads
        # Lightning takes steps or epochs for a checkpoint's schedule, not both: one writer of last.ckpt for each.
        AtomicCheckpoint(dirpath=folder, filename="last", every_n_train_steps=cfg.checkpoint.every_n_train_steps,
                         save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False),
        AtomicCheckpoint(dirpath=folder, filename="last", every_n_epochs=1, save_top_k=1,
                         save_on_train_epoch_end=True, enable_version_counter=False),
        SaveOnSigterm(folder / "last.ckpt"),
    ]


def loggers(cfg, run_dir: Path, job: str) -> list:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from omegaconf import OmegaConf

    out = []
    if cfg.logger.csv:
        out.append(CSVLogger(save_dir=str(run_dir), name="csv", version=""))
    if cfg.logger.wandb:
        import wandb

        # Online when W&B finds credentials (its own check, no prompt, no network), offline otherwise, so a node
        # without `wandb login` still logs; WANDB_MODE, when set, decides.
        offline = not wandb.login(prompt=False, verify=False)
        out.append(WandbLogger(project=cfg.logger.project, name=cfg.name, group=cfg.group, save_dir=str(run_dir),
                               job_type=job, offline=offline, config=OmegaConf.to_container(cfg, resolve=True)))
    return out
