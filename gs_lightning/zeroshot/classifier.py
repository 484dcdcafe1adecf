"""Zero-shot classification: a classifier of class names x prompt templates from the text tower."""
from __future__ import annotations

import open_clip
import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix


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


class MeanPerClassRecall(MulticlassConfusionMatrix):
    """clip_benchmark's mean_per_class_recall (sklearn's balanced_accuracy_score): recall averaged over the classes
    that have test images. torchmetrics' macro recall also averages in a class with none that was predicted, as a
    recall of 0."""

    def compute(self) -> Tensor:
        confusion = super().compute()  # [true, predicted] counts, summed over DDP ranks
        support = confusion.sum(1)
        has = support > 0
        return (confusion.diagonal()[has] / support[has]).mean()


class MacroF1(MulticlassConfusionMatrix):
    """DataComp's F1-macro_all (WILDS' F1: sklearn's f1_score with average="macro" over the labels present in the
    test set): F1 averaged over the classes that have test images. torchmetrics' macro F1 also averages in a
    class with none that was predicted, as an F1 of 0."""

    def compute(self) -> Tensor:
        confusion = super().compute()  # [true, predicted] counts, summed over DDP ranks
        support = confusion.sum(1)
        has = support > 0
        f1 = 2 * confusion.diagonal() / (support + confusion.sum(0)).clamp(min=1)  # 2 tp / (2 tp + fp + fn)
        return f1[has].mean()


def zero_shot_metrics(num_classes: int, prefix: str = "val/") -> MetricCollection:
    """Top-1 and top-5 accuracy (micro: the share of images right), the mean of per-class recall (clip_benchmark's
    mean_per_class_recall: each class weighs alike) and the macro F1, synced across DDP ranks by torchmetrics."""
    return MetricCollection(
        {
            "top1": MulticlassAccuracy(num_classes=num_classes, top_k=1, average="micro"),
            "top5": MulticlassAccuracy(num_classes=num_classes, top_k=min(5, num_classes), average="micro"),
            "mean_per_class_recall": MeanPerClassRecall(num_classes=num_classes),
            "f1_macro": MacroF1(num_classes=num_classes),
        },
        prefix=prefix,
        # The two scores of one confusion matrix share it (one update, one DDP sync). Groups are named, not found:
        # torchmetrics merges metrics whose states are equal after their first update, for their life, and metrics
        # of other meanings can count alike on one batch (torchmetrics' top-5 accuracy and macro F1 did on a batch
        # right at top-1, the sanity check's), and the top-5 then reported top-1 in every later epoch.
        compute_groups=[["mean_per_class_recall", "f1_macro"]],
    )
