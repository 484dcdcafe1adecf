"""Zero-shot tasks: class names and prompt templates, by name (`data.eval_set`).

imagenet       open_clip's ImageNet-1K class names and OpenAI's 80 templates (the paper's evaluation).
fashion-mnist  the demo's: Fashion-MNIST's 10 classes and six templates, the ones its training captions are
               drawn from (gs_lightning/data/demo.py).
"""
from __future__ import annotations

from typing import Callable

from gs_lightning.data.demo import FASHION_CLASSNAMES, FASHION_TEMPLATES


def _imagenet() -> tuple[list[str], list[Callable[[str], str]]]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES, OPENAI_IMAGENET_TEMPLATES

    return list(IMAGENET_CLASSNAMES), list(OPENAI_IMAGENET_TEMPLATES)


EVAL_SETS: dict[str, Callable[[], tuple[list[str], list[Callable[[str], str]]]]] = {
    "imagenet": _imagenet,
    "fashion-mnist": lambda: (list(FASHION_CLASSNAMES), list(FASHION_TEMPLATES)),
}


def eval_set(name: str) -> tuple[list[str], list[Callable[[str], str]]]:
    """(class names, prompt templates) of an eval set."""
    return EVAL_SETS[name]()
