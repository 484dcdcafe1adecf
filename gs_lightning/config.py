"""Composition and checks: experiments/<group>/*.yaml + key=value overrides onto the typed configs.

The run schemas here (FitRun, TrainRun, DemoPlan) are made of the nodes their owners declare beside what they
configure: FitConfig in fit/, ModelConfig in models/, the data, trainer, checkpoint and logger nodes in
build.py. Those dataclasses hold every default; an experiment file holds only its differences, and may start
with `defaults: [other, ...]` (files of its own group, composed first). omegaconf merges them as structured
configs, so a value of the wrong type and a key the config does not have are refused naming the key; `validate`
then checks every range and choice the fields declare (gs_lightning/schema.py), in one pass.

Groups (experiments/):
    fit/       fitting recipes and overlays        python -m gs_lightning fit [NAME ...] [key=value ...]
    train/     training experiments                python -m gs_lightning train EXP [OVERLAY ...] [key=value ...]
    overlays/  what a training run is laid over (the demo's data, a tiny model)
    sweeps/    W&B sweeps; demo.yaml: the runs of `python -m gs_lightning demo`

The key=value form is what W&B sweep agents pass (${args_no_hyphens}).
"""
from __future__ import annotations

import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from gs_lightning.build import CheckpointConfig, DataConfig, DevicesConfig, LoggerConfig, TrainerConfig
from gs_lightning.errors import UserError
from gs_lightning.fit.config import FitConfig
from gs_lightning.models.clip_module import ModelConfig, input_kind
from gs_lightning.schema import setting

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
GROUPS = ("fit", "train", "overlays")


@dataclass
class FitRun:
    fit: FitConfig = setting(FitConfig)
    data_root: str = setting("outputs/data", "where fit.input=embedded writes the photos' shard")
    trainer: DevicesConfig = setting(lambda: DevicesConfig(devices=1))


@dataclass
class TrainRun:
    name: str = setting("${model.mode}", "run name: the run lands in output_dir/name")
    group: str = setting("default", "W&B group: the runs of one comparison share it")
    output_dir: str = setting("outputs/runs", "folder of the runs")
    seed: int = setting(0, "seeds the model's init, the shuffle and the splat subsampling")
    resume: bool = setting(False, "go on from output_dir/name/checkpoints/last.ckpt")
    resume_from: Optional[str] = setting(None, "with resume: go on from this checkpoint instead (an older good one)")
    model: ModelConfig = setting(ModelConfig)
    data: DataConfig = setting(DataConfig)
    trainer: TrainerConfig = setting(TrainerConfig)
    checkpoint: CheckpointConfig = setting(CheckpointConfig)
    logger: LoggerConfig = setting(LoggerConfig)


@dataclass
class SuiteConfig:
    name: str = setting("imagenet", "a suite of experiments/suites/ (datacomp, imagenet, demo) or a suite file")
    root: str = setting("/data/clip_benchmark", "the folder that holds the suite's task folders (clip_benchmark's "
                                                "layout, as DataComp's download_evalsets.py writes it)")


@dataclass
class EvalRun:
    """`python -m gs_lightning eval RUN_DIR ... [key=value ...]`: the runs' best checkpoints on a zero-shot suite."""

    suite: SuiteConfig = setting(SuiteConfig)
    out: str = setting("outputs/eval", "where the suite table (markdown, CSV) and its plot are written")
    fitted: str = setting("outputs/eval/fitted", "the tasks' images fitted with each splat run's fit settings, "
                                                 "kept to be reused by later evals")
    reference: Optional[str] = setting(None, "the run (its name) the ratios are taken to; default: the first RGB "
                                             "run given")


@dataclass
class DemoPlan:
    """experiments/demo.yaml: what `python -m gs_lightning demo` runs, in order."""

    data_root: str = setting("outputs/demo/data", "where the demo's Fashion-MNIST shards are written")
    train_images: int = setting(10000, "Fashion-MNIST training pairs written (of 60,000)", ge=1)
    test_images: int = setting(5000, "Fashion-MNIST labelled test images written (the first of 10,000; at most "
                                     "5,000: the suite's tasks are images 5,000-5,999, which validation never sees)",
                               ge=1, le=5000)
    steps: list[list[str]] = setting(list, "the commands, in order, each as [fit | embed | train, arguments...]")
    optional: dict[str, list[list[str]]] = setting(dict, "more steps by name, run after the others with "
                                                         "`demo --with NAME`")
    results: str = setting("outputs/demo/results", "where `compare` and `eval` write the tables and plots of the "
                                                   "train steps' runs")
    suite: SuiteConfig = setting(lambda: SuiteConfig(name="demo", root="outputs/demo/suite"))


# ---- composition ------------------------------------------------------------------------------------------


def group_names(group: str) -> list[str]:
    return sorted(p.stem for p in (EXPERIMENTS / group).glob("*.yaml"))


def find(name: str, group: str) -> Path:
    """The file of `name` in `group` (or a path to a .yaml file)."""
    path = Path(name) if name.endswith(".yaml") else EXPERIMENTS / group / f"{name}.yaml"
    if not path.is_file():
        what = {"fit": "fitting recipe or overlay", "train": "experiment", "overlays": "overlay"}[group]
        raise UserError(name, f"no {what} of that name ({path}); known: {', '.join(group_names(group))}")
    return path


def _load(path: Path, groups: tuple[str, ...], seen: tuple[str, ...] = ()) -> list[tuple[str, DictConfig]]:
    """The file's `defaults` (recursively: each from the file's own folder, else from the first of `groups` that
    holds it), then the file itself, in merge order."""
    if str(path) in seen:
        raise UserError(str(path), f"`defaults` form a cycle: {' -> '.join(seen + (str(path),))}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml's own errors say where
        raise UserError(str(path), f"not valid YAML: {e}") from None
    defaults = cfg.pop("defaults", [])
    if not (isinstance(defaults, (list, ListConfig)) and all(isinstance(d, str) for d in defaults)):
        raise UserError(str(path), f"`defaults` is a list of file names, e.g. `defaults: [gs196]`, not {defaults!r}")
    out = []
    for d in defaults:
        places = [path.parent, *(EXPERIMENTS / g for g in groups)]
        found = next((p / f"{d}.yaml" for p in places if (p / f"{d}.yaml").is_file()), None)
        if found is None:
            raise UserError(str(path), f"its default {d!r} is in none of {', '.join(map(str, dict.fromkeys(places)))}")
        out += _load(found, groups, seen + (str(path),))
    return out + [(str(path), cfg)]


def _misshapen(expected: Any, given: Any, prefix: str = "") -> Optional[tuple[str, str]]:
    """(key, what is wrong) of the first value in `given` whose shape is not the one `expected` (the config
    so far, as plain containers) has there: a group of keys given one value, or a list given keys."""
    if not isinstance(given, dict) or not isinstance(expected, dict):
        return None
    for k, v in given.items():
        key, want = f"{prefix}{k}", expected.get(k)
        if isinstance(want, dict) and not isinstance(v, dict):
            names = list(map(str, want))
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            return key, (f"is a group of keys ({shown}), not a value; set the keys inside it, e.g. "
                         f"{key}.{names[0] if names else 'KEY'}=... (--help lists them)")
        if isinstance(want, list) and isinstance(v, dict):
            return key, f"is a list, not a group of keys; give the whole list, e.g. {key}=[...]"
        if found := _misshapen(want, v, f"{key}."):
            return found
    return None


def _merge(cfg: DictConfig, other: DictConfig, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, other)
    except ConfigKeyError as e:
        raise UserError(e.full_key or source, f"unknown config key (from {source}); check the spelling") from None
    except (ValidationError, TypeError) as e:
        # omegaconf's refusal of a value where the schema has a group of keys names no key and has no message,
        # and keys given to a list end in a bare TypeError: find the key by comparing the two shapes.
        if shape := _misshapen(OmegaConf.to_container(cfg, resolve=False),
                               OmegaConf.to_container(other, resolve=False)):
            raise UserError(shape[0], f"{shape[1]} (from {source})") from None
        if not isinstance(e, ValidationError):
            raise
        raise UserError(e.full_key or source, f"{(e.msg or str(e)).splitlines()[0]} (from {source})") from None


def compose(schema: type, files: list[Path], overrides: list[str] = ()) -> DictConfig:
    """The schema's defaults, merged with each file (its `defaults` first) and then each key=value override."""
    cfg = OmegaConf.structured(schema)
    groups = {FitRun: ("fit",), TrainRun: ("train", "overlays")}.get(schema, ())  # where a user file's defaults are
    for source, node in (item for f in files for item in _load(Path(f), groups)):
        cfg = _merge(cfg, node, source)
    for item in overrides:
        if "=" not in item:
            raise UserError(item, "an override must look like key=value")
        try:
            node = OmegaConf.from_dotlist([item])
        except OmegaConfBaseException as e:
            raise UserError(item, f"cannot parse this override: {e}") from None
        except yaml.YAMLError:  # not YAML (`fit.input=*.jpg`: a leading * is an alias): its text, checked as such
            key, value = item.split("=", 1)
            node = OmegaConf.create()
            OmegaConf.update(node, key, value)
        cfg = _merge(cfg, node, f"override {item!r}")
    OmegaConf.set_struct(cfg, True)
    return cfg


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional names (experiments, overlays) and key=value overrides."""
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]


def compose_fit(names: list[str] = (), overrides: list[str] = ()) -> DictConfig:
    """FitRun from fitting recipes and overlays (experiments/fit/) and overrides."""
    return compose(FitRun, [find(n, "fit") for n in names], overrides)


def compose_train(names: list[str], overrides: list[str] = ()) -> DictConfig:
    """TrainRun from an experiment (experiments/train/), overlays (experiments/overlays/) and overrides."""
    if not names:
        raise UserError("train", "needs an experiment name, e.g. `python -m gs_lightning train gs196 demo`; "
                                 f"experiments: {', '.join(group_names('train'))}")
    return compose(TrainRun, [find(names[0], "train"), *(find(n, "overlays") for n in names[1:])], overrides)


def load_fit_config(names: list[str] = (), overrides: list[str] = ()) -> FitConfig:
    """The typed `fit` node of the shipped recipe and overlays, validated (benchmarks and tests use it)."""
    cfg = compose_fit(list(names), list(overrides))
    validate(cfg, FitRun)
    return OmegaConf.to_object(cfg.fit)


# ---- validation ---------------------------------------------------------------------------------------------


def _bounds(value: Any, m: dict, key: str) -> None:
    for bound, ok, word in (("ge", lambda v, b: v >= b, ">="), ("gt", lambda v, b: v > b, ">"),
                            ("le", lambda v, b: v <= b, "<="), ("lt", lambda v, b: v < b, "<")):
        if m.get(bound) is not None and not ok(value, m[bound]):
            raise UserError(key, f"must be {word} {m[bound]}, got {value!r}")


def _check_node(node: DictConfig, schema: type, prefix: str) -> None:
    """Every range and choice of `node`, in field order."""
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        try:
            value = node[f.name]
        except OmegaConfBaseException as e:  # missing values, broken interpolations
            raise UserError(key, e.msg.splitlines()[0] if hasattr(e, "msg") else str(e)) from None
        if is_dataclass(hints[f.name]):
            _check_node(value, hints[f.name], f"{key}.")
            continue
        m = f.metadata
        if value is None or not m:
            continue
        for i, v in enumerate(value) if isinstance(value, ListConfig) else [(None, value)]:
            _bounds(v, m, key if i is None else f"{key}[{i}]")
        if m["choices"] is not None and value not in m["choices"]:
            raise UserError(key, f"must be one of {', '.join(map(str, m['choices']))}; got {value!r}")


def validate(cfg: DictConfig, schema: type) -> None:
    """Every field's range and choices, then the checks that span fields or need the model's own config."""
    _check_node(cfg, schema, "")
    if schema is FitRun and 2 ** len(cfg.fit.coarse_iterations) > cfg.fit.image_size:
        raise UserError("fit.coarse_iterations", f"{len(cfg.fit.coarse_iterations)} levels average the images down "
                                                 f"{2 ** len(cfg.fit.coarse_iterations)}x, more than fit.image_size "
                                                 f"{cfg.fit.image_size}")
    if schema is TrainRun:
        _validate_model(cfg.model)
        from gs_lightning.zeroshot.tasks import EVAL_SETS

        if cfg.data.eval_set not in EVAL_SETS and not Path(cfg.data.eval_set).is_dir():
            raise UserError("data.eval_set", f"{cfg.data.eval_set!r} is neither {' nor '.join(EVAL_SETS)} nor a task "
                                             "folder (clip_benchmark's layout)")


def _validate_model(m: DictConfig) -> None:
    import open_clip

    import gs_lightning.models  # noqa: F401  registers the project's model configs with open_clip

    if m.name not in open_clip.list_models():
        raise UserError("model.name", f"{m.name!r} is not an open_clip model config; the project's are "
                                      f"{', '.join(sorted(p.stem for p in gs_lightning.models.CONFIG_DIR.glob('*.json')))}")
    config = open_clip.get_model_config(m.name)
    vision = config["vision_cfg"]
    if "init_logit_bias" in config:
        raise UserError("model.name", f"{m.name} is a SigLIP config, trained by a sigmoid loss with a logit bias; the "
                                      "project trains with CLIP's contrastive loss: give a CLIP config, e.g. ViT-B-16")
    if input_kind(m.mode) == "splats" and (vision.get("timm_model_name") or not isinstance(vision.get("layers"), int)):
        tower = "timm" if vision.get("timm_model_name") else "ResNet"
        raise UserError("model.name", f"{m.name} has a {tower} image tower; a splat encoder is a stem and resampler "
                                      "before open_clip's own ViT blocks (transfer takes them from the RGB teacher): "
                                      "give a ViT config, e.g. ViT-B-16")
    heads = m.splat_encoder.resampler_heads
    if input_kind(m.mode) == "splats" and vision["width"] % heads:
        raise UserError("model.splat_encoder.resampler_heads", f"must divide the ViT width {vision['width']}, got "
                                                               f"{heads}")
    if m.mode == "transfer" and m.unfrozen_blocks > vision["layers"]:
        raise UserError("model.unfrozen_blocks", f"{m.name} has {vision['layers']} blocks, got {m.unfrozen_blocks}")
    if m.mode in ("rgb", "distill") and (m.distill.embedding_weight > 0 or m.distill.logit_weight > 0):
        key = "model.distill." + ("embedding_weight" if m.distill.embedding_weight > 0 else "logit_weight")
        raise UserError(key, "must be 0 for model.mode=rgb: the RGB run is the teacher and distills from no one"
                        if m.mode == "rgb" else "must be 0 for model.mode=distill: stage 1 trains on the embedding "
                        "distance alone, weighed by none; the weighted terms are stage 2's (mode=transfer or scratch)")
    if m.init_checkpoint and m.mode not in ("distill", "transfer"):  # else a warm start would be dropped unsaid
        raise UserError("model.init_checkpoint", f"is read by model.mode=distill or transfer alone; mode={m.mode} "
                                                 "starts from its own weights (set model.init_checkpoint=null)")
    if len(m.betas) != 2 or not all(0 <= b < 1 for b in m.betas):
        raise UserError("model.betas", f"must be two numbers in [0, 1), got {list(m.betas)}")


# ---- help ------------------------------------------------------------------------------------------------------


def _type_name(hint) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union:
        return " | ".join(_type_name(a) for a in args) + (" | null" if type(None) in typing.get_args(hint) else "")
    if typing.get_origin(hint) is list:
        return f"list[{_type_name(args[0])}]"
    return getattr(hint, "__name__", str(hint))


def keys(schema: type, cfg: DictConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, value in cfg, meaning) of every leaf of the schema, in field order."""
    hints = typing.get_type_hints(schema)
    values = OmegaConf.to_container(cfg, resolve=False)
    out = []
    for f in fields(schema):
        key, hint = f"{prefix}{f.name}", hints[f.name]
        if is_dataclass(hint):
            out += keys(hint, cfg[f.name], f"{key}.")
            continue
        value = values.get(f.name)
        shown = "null" if value is None else str(value)
        m = f.metadata
        limits = [f"{word} {m[b]}" for b, word in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                  if m.get(b) is not None]
        if m.get("choices") is not None and not all(str(c) in m["help"] for c in m["choices"]):
            limits.append("one of " + " | ".join(map(str, m["choices"])))
        meaning = m["help"] + (f" ({', '.join(limits)})" if limits else "")
        out.append((key, _type_name(hint), shown, meaning))
    return out


def describe(schema: type, cfg: DictConfig) -> str:
    """Every key of `cfg` with its type, its value here (the default, or what the named files give) and its
    meaning: what `fit --help` and `train --help` print."""
    rows = keys(schema, cfg)
    w = [max(len(r[i]) for r in rows) for i in range(2)]
    return "\n".join(f"  {k:<{w[0]}}  {t:<{w[1]}}  {v}\n  {'':<{w[0]}}  {'':<{w[1]}}  {m}" if len(v) > 24 else
                     f"  {k:<{w[0]}}  {t:<{w[1]}}  {v:<24}  {m}" for k, t, v, m in rows)
