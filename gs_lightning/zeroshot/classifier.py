"""Zero-shot classification: a classifier of class names x prompt templates from the text tower."""
from __future__ import annotations

import open_clip
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassRecall


@torch.no_grad()
def zero_shot_classifier(model: open_clip.CLIP, tokenizer, classnames: list[str], templates: list[str],
                         device: torch.device) -> Tensor:  # [embed_dim, num_classes], unit columns
    """open_clip's builder: mean of the normalised text features of every template, per class."""
    was_training = model.training
    model.eval()
    try:
        return open_clip.build_zero_shot_classifier(
            model, tokenizer=tokenizer, classnames=classnames, templates=templates, device=device
        )
    finally:
        model.train(was_training)


def zero_shot_metrics(num_classes: int, prefix: str = "val/") -> MetricCollection:
    """Top-1 and top-5 accuracy (micro: the share of images right), the mean of per-class recall (clip_benchmark's
    mean_per_class_recall: each class weighs alike) and the macro F1, synced across DDP ranks by torchmetrics."""
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro"),
            "mean_per_class_recall": MulticlassRecall(num_classes=num_classes, average="macro"),
            "f1_macro": MulticlassF1Score(num_classes=num_classes, average="macro"),
        },
        prefix=prefix,
    )
