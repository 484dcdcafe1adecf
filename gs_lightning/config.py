"""Config composition: experiments/*.yaml + overlays + key=value overrides (omegaconf).

An override of a key the config does not have is an error that names it, so a
typo never silently does nothing. The key=value form is also what W&B sweep
agents pass (${args_no_hyphens}).
"""
from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


class ConfigError(ValueError):
    pass


def experiment_path(name: str) -> Path:
    path = Path(name) if name.endswith(".yaml") else EXPERIMENTS / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))
        raise ConfigError(f"no experiment or overlay {name!r} ({path}); known: {', '.join(known)}")
    return path


def compose(names: list[str], overrides: list[str] = ()) -> DictConfig:
    cfg = OmegaConf.merge(*(OmegaConf.load(experiment_path(n)) for n in names))
    OmegaConf.set_struct(cfg, True)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value")
        key = item.split("=", 1)[0].lstrip("+")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except ConfigKeyError:
            raise ConfigError(f"unknown config key {key!r} (from override {item!r})") from None
    return cfg


def split_args(args: list[str]) -> tuple[list[str], list[str]]:
    """Positional names (experiments, overlays) and key=value overrides."""
    return [a for a in args if "=" not in a], [a for a in args if "=" in a]
