"""setting(): a config field with its default, its meaning, and its range or choices.

Every config dataclass declares its fields with it, beside the code it configures (FitConfig in fit/,
ModelConfig in models/, ...). The dataclass is the one home of each default; experiment files hold only
their differences. gs_lightning/config.py composes, checks the ranges and choices, and prints `--help`
from these fields.
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Collection

from omegaconf import MISSING


def setting(default: Any = MISSING, help: str = "", *, ge: float | None = None, gt: float | None = None,
            le: float | None = None, lt: float | None = None, choices: Collection | None = None) -> Any:
    """A field: ge >=, gt >, le <=, lt < bound its value; choices is the registry the code dispatches on.
    A list or dataclass default is given as a factory (a callable), as dataclasses require."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if callable(default):
        return field(default_factory=default, metadata=meta)
    return field(default=default, metadata=meta)
