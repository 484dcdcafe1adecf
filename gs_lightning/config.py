"""Typed configs: experiments/*.yaml + overlays + key=value overrides, checked before any work starts.

Every node is a dataclass, merged with omegaconf as a structured config, so a value of the wrong type and a
key the config does not have are refused naming the key. The values live in the YAML files (base.yaml,
fit.yaml); the dataclasses give their types, and their ranges and choices in field metadata, which
`validate` checks in one pass. Choices name the registry the code itself dispatches on ("module:NAME"),
so a name is declared once.

A YAML file may start with `defaults: [other, ...]`: those are composed first and the file holds only its
differences (experiments/gs98.yaml is gs196 with fewer queries). The key=value form is what W&B sweep
agents pass (${args_no_hyphens}).

Every user error is a UserError: the CLI prints `error: <key or file>: <what is wrong and what to do>`
and exits with status 2.
"""
from __future__ import annotations

import importlib
import os
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional, Union

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


class UserError(Exception):
    """Something the user can fix: `where` is the config key or file, `what` says what is wrong and what to do."""

    def __init__(self, where: str, what: str = ""):
        super().__init__(f"{where}: {what}" if what else where)
        self.where, self.what = where, what


def spec(default: Any = MISSING, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         choices: str | tuple | None = None) -> Any:
    """A field with a range (ge: >=, gt: >, le: <=) or choices ("module:REGISTRY" or a tuple)."""
    return field(default=default, metadata={"ge": ge, "gt": gt, "le": le, "choices": choices})


# ---- fit: `python -m gs_lightning fit` (experiments/fit.yaml) -------------------------------------------


@dataclass
class LearningRates:
    """Adam's per-parameter learning rates, in the units of fit.parameterization."""

    xy: float = spec(gt=0)  # centres
    diagonal: float = spec(gt=0)  # l11, l22 (their logs under log_scale)
    shear: float = spec(gt=0)  # l21
    rgb: float = spec(gt=0)
    decay_to: float = spec(gt=0, le=1)  # every lr decays (cosine) to this fraction of itself
    # The rates above are for fit.iterations = budget; a fit of T iterations scales every rate by
    # (budget / T) ** budget_power, so a short fit takes larger steps (0: the rates do not follow T).
    budget: int = spec(3000, ge=1)
    budget_power: float = spec(0.0, ge=0, le=2)
    beta2: float = spec(0.999, gt=0, le=0.9999)  # Adam's second-moment decay (beta1 stays 0.9)


@dataclass
class PruneConfig:
    """Luminance pruning (paper 4.4); the defaults are no pruning."""

    l1_weight: float = spec(0.0, ge=0)  # weight of the mean |rgb| per image in the loss
    threshold: float = spec(0.0, ge=0)  # prune a Gaussian whose luminance is below this
    at: list[float] = field(default_factory=list)  # when to prune, as fractions of fit.iterations


@dataclass
class FitConfig:
    input: str = MISSING  # shard pattern, image folder, or "embedded"
    output: str = MISSING  # folder of the fitted shards
    num_splats: int = spec(ge=1)
    iterations: int = spec(ge=1)
    init: str = spec(choices="gs_lightning.fit.init:INITS")
    image_size: int = spec(ge=1)
    batch_size: int = spec(ge=1)
    loss: str = spec(choices="gs_lightning.fit.fitter:LOSSES")
    ssim_weight: float = spec(ge=0, le=1)
    backend: str = spec(choices="gs_lightning.render:BACKENDS")
    shard_size: int = spec(ge=1)
    num_workers: int = spec(ge=0)
    parameterization: str = spec(choices="gs_lightning.fit.fitter:PARAMETERIZATIONS")
    lr: LearningRates = field(default_factory=LearningRates)
    prune: PruneConfig = field(default_factory=PruneConfig)
    # Colours by least squares for the init's geometry, and again after each pruning step.
    solve_colours: bool = False
    solve_steps: int = spec(20, ge=1)  # conjugate-gradient steps of a solve, each about one iteration's cost
    # Each image stops once its PSNR (dB) reaches this; fit.iterations stays the cap. null: every image runs
    # fit.iterations.
    target_psnr: Optional[float] = spec(None, gt=0)
    record: str = spec(choices="gs_lightning.codec:RECORDS")  # how a splat set is stored (gs_lightning/codec.py)
    refine_iterations: int = spec(ge=0)  # quantized record: quantization-aware steps after the fit
    refine_lr: float = spec(gt=0)  # their Adam lr, in quantization steps (codes) per step


@dataclass
class DevicesConfig:
    """The Lightning Trainer's placement arguments, passed through as they are."""

    accelerator: str = "auto"
    devices: Union[int, str] = "auto"
    num_nodes: int = spec(1, ge=1)
    strategy: str = "auto"


@dataclass
class FitRun:
    fit: FitConfig = field(default_factory=FitConfig)
    data_root: str = MISSING  # where `fit.input=embedded` writes the photos' shard
    trainer: DevicesConfig = field(default_factory=DevicesConfig)


# ---- train: `python -m gs_lightning train EXP` (experiments/base.yaml) ----------------------------------


@dataclass
class GSConfig:
    """The splat encoder: GSStem -> PerceiverResampler -> the ViT's blocks."""

    num_queries: int = spec(196, ge=1)  # 196 = ViT-B/16's token count; 98 halves it
    # One cross-attention layer with a 1x MLP keeps the transfer's trainable share near the paper's ~7%
    # (two unfrozen ViT-B blocks are already 5.8% of the model).
    resampler_depth: int = spec(1, ge=1)
    resampler_heads: int = spec(8, ge=1)
    resampler_mlp_ratio: float = spec(1.0, gt=0)
    stem_hidden: int = spec(256, ge=1)
    num_freqs: int = spec(8, ge=0)


@dataclass
class ModelConfig:
    name: str = MISSING  # open_clip model config
    mode: str = spec(choices="gs_lightning.models.gs_encoder:MODES")
    rgb_checkpoint: Optional[str] = None
    gs: GSConfig = field(default_factory=GSConfig)
    lr: float = spec(gt=0)
    weight_decay: float = spec(ge=0)
    warmup_steps: int = spec(ge=0)
    transfer_lr_ratio: float = spec(gt=0)  # lr of the unfrozen blocks, ln_post, proj over model.lr
    unfrozen_blocks: int = spec(ge=0)
    logit_scale_max: float = spec(gt=1)


@dataclass
class ShardPaths:
    train: Optional[str] = None
    val: Optional[str] = None


@dataclass
class SplatShardPaths(ShardPaths):
    # The val images fitted with fit.record=quantized: `compare` evaluates the best checkpoint on them too.
    val_quantized: Optional[str] = None


@dataclass
class DataConfig:
    rgb: ShardPaths = field(default_factory=ShardPaths)
    gs: SplatShardPaths = field(default_factory=SplatShardPaths)
    eval_set: str = spec(choices="gs_lightning.eval_sets:EVAL_SETS")  # zero-shot class names + templates
    num_samples: Optional[int] = spec(None, ge=1)
    batch_size: int = spec(ge=1)
    val_batch_size: int = spec(ge=1)
    num_workers: int = spec(ge=0)
    max_splats: Optional[int] = spec(None, ge=1)
    splat_sampling: str = spec(choices=("random", "truncate"))


@dataclass
class TrainerConfig(DevicesConfig):
    """Lightning Trainer arguments (passed through), with Lightning's defaults."""

    precision: str = "32-true"
    max_epochs: Optional[int] = spec(None, ge=1)
    max_steps: int = spec(-1, ge=-1)
    accumulate_grad_batches: int = spec(1, ge=1)
    gradient_clip_val: Optional[float] = spec(None, ge=0)
    log_every_n_steps: int = spec(50, ge=1)
    check_val_every_n_epoch: Optional[int] = spec(1, ge=1)
    num_sanity_val_steps: int = spec(2, ge=-1)
    limit_train_batches: Optional[Union[int, float]] = spec(None, ge=0)
    limit_val_batches: Optional[Union[int, float]] = spec(None, ge=0)
    enable_progress_bar: bool = True


@dataclass
class CheckpointConfig:
    monitor: str = MISSING
    every_n_train_steps: int = spec(ge=1)


@dataclass
class LoggerConfig:
    wandb: bool = MISSING
    project: str = MISSING
    csv: bool = MISSING


@dataclass
class TrainRun:
    name: str = MISSING
    group: str = MISSING
    output_dir: str = MISSING
    seed: int = MISSING
    resume: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


# ---- composition ------------------------------------------------------------------------------------------


def experiment_path(name: str) -> Path:
    path = Path(name) if name.endswith(".yaml") else EXPERIMENTS / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
        raise UserError(name, f"no experiment or overlay of that name ({path}); known: {', '.join(known)}")
    return path


def _load(name: str, seen: tuple[str, ...] = ()) -> list[tuple[str, DictConfig]]:
    """The file's `defaults` (recursively), then the file itself, as (file, config) in merge order."""
    path = experiment_path(name)
    if str(path) in seen:
        raise UserError(str(path), f"`defaults` form a cycle: {' -> '.join(seen + (str(path),))}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml's own errors say where
        raise UserError(str(path), f"not valid YAML: {e}") from None
    defaults = cfg.pop("defaults", [])
    out = [item for d in defaults for item in _load(d, seen + (str(path),))]
    return out + [(str(path), cfg)]


def _merge(cfg: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except ConfigKeyError as e:
        raise UserError(e.full_key or source, f"unknown config key (from {source}); check the spelling") from None
    except ValidationError as e:
        raise UserError(e.full_key or source, f"{e.msg.splitlines()[0]} (from {source})") from None


def compose(schema: type, names: list[str], overrides: list[str] = ()) -> DictConfig:
    """The schema's structured config, merged with each named file and then each key=value override."""
    cfg = OmegaConf.structured(schema)
    for source, node in (item for name in names for item in _load(name)):
        cfg = _merge(cfg, node, source)
    for item in overrides:
        if "=" not in item:
            raise UserError(item, "an override must look like key=value")
        try:
            node = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise UserError(item, f"cannot parse this override: {e}") from None
        cfg = _merge(cfg, node, f"override {item!r}")
    OmegaConf.set_struct(cfg, True)
    return cfg


def load_fit_config(names: list[str] = ("fit",), overrides: list[str] = ()) -> FitConfig:
    """The typed `fit` node of composed experiment files, validated (benchmarks and tests use the shipped ones)."""
    cfg = compose(FitRun, list(names), list(overrides))
    validate(cfg, FitRun)
    return OmegaConf.to_object(cfg.fit)


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional names (experiments, overlays) and key=value overrides."""
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]


# ---- validation ---------------------------------------------------------------------------------------------


def registry(choices: str | tuple) -> tuple:
    if isinstance(choices, tuple):
        return choices
    module, name = choices.split(":")
    return tuple(getattr(importlib.import_module(module), name))


def _check_node(node: DictConfig, schema: type, prefix: str, choices: list) -> None:
    """Check every range of `node`; append (key, value, choices) for the caller to check after them."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        try:
            value = node[f.name]
        except OmegaConfBaseException as e:  # missing values, broken interpolations
            raise UserError(key, e.msg.splitlines()[0] if hasattr(e, "msg") else str(e)) from None
        if is_dataclass(hints[f.name]):
            _check_node(value, hints[f.name], f"{key}.", choices)
            continue
        m = f.metadata
        if value is None or not m:
            continue
        if m["ge"] is not None and not value >= m["ge"]:
            raise UserError(key, f"must be >= {m['ge']}, got {value!r}")
        if m["gt"] is not None and not value > m["gt"]:
            raise UserError(key, f"must be > {m['gt']}, got {value!r}")
        if m["le"] is not None and not value <= m["le"]:
            raise UserError(key, f"must be <= {m['le']}, got {value!r}")
        if m["choices"] is not None:
            choices.append((key, value, m["choices"]))


def validate(cfg: DictConfig, schema: type) -> None:
    """Ranges and choices of every field, then the checks that span fields."""
    choices: list[tuple[str, Any, str | tuple]] = []
    _check_node(cfg, schema, "", choices)
    for key, value, names in choices:  # after the ranges: a registry may be a heavy import
        if value not in (known := registry(names)):
            raise UserError(key, f"must be one of {', '.join(map(str, known))}; got {value!r}")
    if schema is FitRun:
        f = cfg.fit
        if outside := [a for a in f.prune.at if not 0 <= a < 1]:
            raise UserError("fit.prune.at", f"{outside}: prune at fractions of fit.iterations in [0, 1)")
        check_output_folder(f.output, "fit.output")
    if schema is TrainRun:
        _validate_model(cfg.model)
        check_output_folder(cfg.output_dir, "output_dir")
        from gs_lightning.data.datamodules import DEMO_HINT
        from gs_lightning.data.shards import existing_sources

        kind = "rgb" if cfg.model.mode == "rgb" else "gs"
        for split in ("train", "val"):
            existing_sources(cfg.data[kind][split], f"data.{kind}.{split}", DEMO_HINT)
        if kind == "gs" and cfg.data.gs.val_quantized is not None:
            existing_sources(cfg.data.gs.val_quantized, "data.gs.val_quantized", DEMO_HINT)


def _validate_model(m: DictConfig) -> None:
    import open_clip

    import gs_lightning.models  # noqa: F401  registers the project's model configs with open_clip

    if m.name not in open_clip.list_models():
        raise UserError("model.name", f"{m.name!r} is not an open_clip model config; the project's are "
                                      f"{', '.join(sorted(p.stem for p in gs_lightning.models.CONFIG_DIR.glob('*.json')))}")
    vision = open_clip.get_model_config(m.name)["vision_cfg"]
    if m.mode != "rgb" and vision["width"] % m.gs.resampler_heads:
        raise UserError("model.gs.resampler_heads", f"must divide the ViT width {vision['width']}, got "
                                                    f"{m.gs.resampler_heads}")
    if m.mode == "transfer" and m.unfrozen_blocks > vision["layers"]:
        raise UserError("model.unfrozen_blocks", f"{m.name} has {vision['layers']} blocks, got {m.unfrozen_blocks}")
    if m.mode == "transfer":
        check_file(m.rgb_checkpoint, "model.rgb_checkpoint", "the RGB run's best checkpoint (make train EXP=rgb)")


def check_output_folder(path: str, key: str) -> None:
    """An output must be a folder, or a path where one can be made."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(key, f"{path} exists and is not a folder; give a folder (it is created if missing)")
    parent = next(q for q in (p, *p.parents) if q.exists())
    if not parent.is_dir():
        raise UserError(key, f"{path} cannot be made: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(key, f"{path} cannot be written: no write permission in {parent}")


def check_file(path: str | None, key: str, what: str) -> None:
    if not path:
        raise UserError(key, f"is not set; give {what}")
    if not Path(path).is_file():
        raise UserError(key, f"{path} does not exist or is not a file; give {what}")
