"""ClipModule: one LightningModule for the RGB baseline and the splat encoders (distill, transfer, scratch),
and ModelConfig, the `model` node that configures it.

rgb       open_clip's CLIP, every parameter trained at lr.
distill   stage 1 of the published two-stage recipe: the best RGB checkpoint's CLIP with a splat visual tower,
          where only the stem, the resampler and the new embeddings train (at lr), on the squared distance
          between the student's L2-normalised image embedding and the teacher's (data.embeddings).
transfer  stage 2 (and the paper's own recipe): the same model, from model.init_checkpoint (stage 1's best)
          when set; the text tower and the ViT blocks are frozen except blocks 0..unfrozen_blocks-1; lr for the
          stem, resampler and new embeddings, transfer_lr_ratio x lr for the unfrozen blocks, ln_post and proj
          (paper 5.1), and for the logit scale, which 5.1 does not name but its Fig. 7d shows moving in training.
scratch   the same splat model from random init, every parameter trained at lr.

transfer and scratch train on open_clip's ClipLoss, with features gathered across ranks, plus the optional
distillation terms (model.distill): the embedding distance above, and open_clip's DistillClipLoss, the
cross-entropy of the student's image-text logits against the teacher's (CLIP-KD, TinyCLIP).
The constructor's keywords are ModelConfig's fields, plus the zero-shot eval set (data.eval_set) and the
teacher's logit scale (from its embeddings, for DistillClipLoss). The logit scale is clamped at
log(logit_scale_max) after every step. Weight decay applies to matrices only (p.ndim >= 2, nanoGPT's rule): never to
biases, norms, the class embedding or the logit scale. The schedule (linear warmup, cosine) multiplies
every group's own lr, so their ratio holds.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from dataclasses import dataclass
from typing import Optional

import lightning as L
import open_clip
import torch
from lightning.pytorch.utilities import rank_zero_info
from open_clip.loss import ClipLoss, DistillClipLoss

from gs_lightning.checkpoint import load_matching, read_state_dict
from gs_lightning.errors import UserError
from gs_lightning.models.encoder import SplatEncoder, SplatEncoderConfig
from gs_lightning.schema import setting
from gs_lightning.zeroshot.classifier import zero_shot_classifier, zero_shot_metrics
from gs_lightning.zeroshot.tasks import eval_set as eval_set_metadata

# model.mode -> what the model reads: images (rgb) or splat sets (splats), the data node it trains on.
MODES = {"rgb": "rgb", "distill": "splats", "transfer": "splats", "scratch": "splats"}
# The parameters a splat encoder adds to the teacher's CLIP: what distill trains, what transfer trains at lr.
NEW_MODULES = ("visual.stem.", "visual.resampler.", "visual.class_embedding", "visual.positional_embedding")


def input_kind(mode: str) -> str:
    """"rgb" or "splats": what a model of this mode reads, and so which data node (data.rgb, data.splats)."""
    if mode not in MODES:
        raise ValueError(f"model.mode must be one of {sorted(MODES)}, got {mode!r}")
    return MODES[mode]


@dataclass
class DistillConfig:
    """The distillation terms added to the contrastive loss of transfer and scratch (0: off)."""

    embedding_weight: float = setting(0.0, "weight of the squared distance between the student's and the "
                                           "teacher's L2-normalised image embeddings", ge=0)
    logit_weight: float = setting(0.0, "weight of open_clip's DistillClipLoss: the student's image-text logits "
                                       "against the teacher's", ge=0)


def embedding_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:  # [B, D] x2, unit rows
    """Squared distance of L2-normalised embeddings, averaged over the batch: 2 - 2 cos, whatever D is."""
    return (student - teacher).square().sum(-1).mean()


@dataclass
class ModelConfig:
    name: str = setting("ViT-B-16-w512", "open_clip model config (gs_lightning/models/configs/*.json or "
                                         "open_clip's own)")
    mode: str = setting("rgb", "rgb (the teacher) | distill (stage 1: the splat stem and resampler learn the "
                               "teacher's image embeddings, the rest frozen) | transfer (splat encoder on the RGB "
                               "checkpoint's frozen ViT) | scratch (the splat encoder from random init)",
                        choices=MODES)
    rgb_checkpoint: Optional[str] = setting(None, "the RGB teacher's best checkpoint: distill and transfer start "
                                                  "from its weights; any run that distills names its teacher here")
    init_checkpoint: Optional[str] = setting(None, "distill, transfer: the splat CLIP weights to start from "
                                                   "(stage 1's best checkpoint), over the teacher's")
    splat_encoder: SplatEncoderConfig = setting(SplatEncoderConfig)
    lr: float = setting(1e-3, "peak learning rate (AdamW); the new modules' under transfer", gt=0)
    weight_decay: float = setting(0.2, "AdamW's, on matrices only", ge=0)
    betas: list[float] = setting(lambda: [0.9, 0.98], "AdamW's (beta1, beta2)")
    eps: float = setting(1e-6, "AdamW's epsilon", gt=0)
    warmup_steps: int = setting(2000, "linear warmup, then cosine decay to 0; at most half the run's steps (a short "
                                      "run is no warmup alone)", ge=0)
    transfer_lr_ratio: float = setting(0.1, "transfer: lr of the unfrozen blocks, ln_post and proj over lr", gt=0)
    unfrozen_blocks: int = setting(2, "transfer: ViT blocks 0..n-1 train, the rest stay frozen", ge=0)
    logit_scale_max: float = setting(100.0, "the logit scale is clamped to this after every step", gt=1)
    distill: DistillConfig = setting(DistillConfig)

    @staticmethod
    def reads_teacher_embeddings(model) -> bool:  # model: this node, as a dataclass or a DictConfig
        """Whether a run of this model reads the teacher's embeddings (data.embeddings)."""
        return model.mode == "distill" or (input_kind(model.mode) == "splats" and (
            model.distill.embedding_weight > 0 or model.distill.logit_weight > 0))


def build_clip(model_name: str, *, mode: str, splat_encoder: SplatEncoderConfig, rgb_checkpoint: str | None,
               init_checkpoint: str | None = None) -> open_clip.CLIP:
    """rgb: open_clip's CLIP. distill, transfer: the RGB checkpoint's CLIP with a splat visual tower, then the
    weights of init_checkpoint when given. scratch: the same splat model from random init."""
    input_kind(mode)
    model = open_clip.create_model(model_name, pretrained=None)
    if mode in ("distill", "transfer"):
        if not rgb_checkpoint:
            raise ValueError(f"model.mode={mode} needs model.rgb_checkpoint (the best RGB CLIP checkpoint)")
        load_matching(model, read_state_dict(rgb_checkpoint, "model.rgb_checkpoint"), rgb_checkpoint,
                      "model.rgb_checkpoint")
    if input_kind(mode) == "splats":
        model.visual = SplatEncoder(vit=model.visual, cfg=splat_encoder)
    if init_checkpoint and mode in ("distill", "transfer"):
        load_matching(model, read_state_dict(init_checkpoint, "model.init_checkpoint"), init_checkpoint,
                      "model.init_checkpoint")
    return model


class ClipModule(L.LightningModule):
    def __init__(
        self,
        *,
        name: str,
        mode: str,
        rgb_checkpoint: str | None,
        init_checkpoint: str | None,
        splat_encoder: dict,  # SplatEncoderConfig's fields
        lr: float,
        weight_decay: float,
        betas: list[float],
        eps: float,
        warmup_steps: int,
        transfer_lr_ratio: float,
        unfrozen_blocks: int,
        logit_scale_max: float,
        distill: dict,  # DistillConfig's fields
        eval_set: str | None = None,  # zero-shot classes + templates (gs_lightning/zeroshot/tasks.py)
        teacher_logit_scale: float | None = None,  # the teacher's, for DistillClipLoss (data/embeddings.py)
    ):
        super().__init__()
        # The arguments as given, not read from the caller's frame (a wrapper around __init__ would hide them).
        self.save_hyperparameters({k: v for k, v in locals().items() if k not in ("self", "__class__")})
        self.mode = mode
        self.distill = DistillConfig(**distill)
        if self.distill.logit_weight > 0 and teacher_logit_scale is None:
            raise ValueError("model.distill.logit_weight > 0 needs the teacher's logit scale (its embeddings')")
        self.model = build_clip(name, mode=mode, splat_encoder=SplatEncoderConfig(**splat_encoder),
                                rgb_checkpoint=rgb_checkpoint, init_checkpoint=init_checkpoint)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.apply_trainable()
        self.classnames, self.templates, self.metrics = None, None, None
        self.val_samples = self.val_skipped = 0
        if eval_set:
            self.use_classes(*eval_set_metadata(eval_set))
        self.classifier = None
        self.loss = None

    # ---- what trains, and how fast ----------------------------------------------------

    def apply_trainable(self) -> None:
        """Freeze what `self.mode` freezes; `self.lr_ratio` maps every trainable parameter to its lr multiplier."""
        self.lr_ratio = {n: r for n, _ in self.model.named_parameters() if (r := self.lr_ratio_of(n)) is not None}
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in self.lr_ratio)

    def lr_ratio_of(self, name: str) -> float | None:
        """The lr multiplier of a parameter, None when it is frozen."""
        if self.mode == "distill":
            return 1.0 if name.startswith(NEW_MODULES) else None
        if self.mode != "transfer":
            return 1.0
        slow = tuple(f"visual.transformer.resblocks.{i}." for i in range(self.hparams.unfrozen_blocks))
        if name.startswith(NEW_MODULES):
            return 1.0
        if name.startswith(slow + ("visual.ln_post.",)) or name in ("visual.proj", "logit_scale"):
            return self.hparams.transfer_lr_ratio
        return None

    @property
    def queries(self) -> int | None:
        """The splat encoder's resampler queries; None for the RGB ViT."""
        return None if input_kind(self.mode) == "rgb" else self.model.visual.resampler.latents.shape[0]

    def parameter_table(self) -> tuple[list[list], float]:
        """Rows (module, parameters, trainable|frozen, lr) and the trainable share of the whole model."""
        rows: OrderedDict[str, list] = OrderedDict()
        for name, p in self.model.named_parameters():
            parts = name.split(".")
            if parts[0] != "visual":
                key = "logit_scale" if name == "logit_scale" else "text tower"
            elif parts[1] == "transformer":
                key = f"visual.blocks.{parts[3]}"
            elif parts[1] in ("class_embedding", "positional_embedding"):
                key = "visual.embeddings"
            else:
                key = f"visual.{parts[1]}"
            ratio = self.lr_ratio.get(name)
            row = rows.setdefault(key, [key, 0, "frozen" if ratio is None else "trainable",
                                        "-" if ratio is None else f"{self.hparams.lr * ratio:g}"])
            row[1] += p.numel()
        merged: list[list] = []  # runs of blocks with the same status become one row
        for row in rows.values():
            last = merged[-1] if merged else None
            if last and last[0].startswith("visual.blocks.") and row[0].startswith("visual.blocks.") \
                    and last[2:] == row[2:]:
                last[0] = f"{last[0].split('-')[0]}-{row[0].rsplit('.', 1)[1]}"
                last[1] += row[1]
            else:
                merged.append(list(row))
        total = sum(p.numel() for p in self.model.parameters())
        trainable = sum(p.numel() for n, p in self.model.named_parameters() if n in self.lr_ratio)
        return merged, trainable / total

    def on_fit_start(self) -> None:
        rows, share = self.parameter_table()
        width = max(len(r[0]) for r in rows)
        lines = [f"{'module':<{width}}  {'params':>11}  {'status':<9}  lr"]
        lines += [f"{r[0]:<{width}}  {r[1]:>11,}  {r[2]:<9}  {r[3]}" for r in rows]
        lines.append(f"trainable: {100 * share:.2f}% of {sum(r[1] for r in rows):,} parameters ({self.mode})")
        rank_zero_info("\n".join(lines))
        for logger in self.loggers:
            logger.log_hyperparams({"trainable_share": share, "queries": self.queries})
            if hasattr(logger, "log_table"):  # W&B
                logger.log_table("parameters", columns=["module", "params", "status", "lr"], data=rows)
        clip_loss = DistillClipLoss if self.distill.logit_weight > 0 else ClipLoss
        self.loss = clip_loss(local_loss=False, gather_with_grad=True, cache_labels=True, rank=self.global_rank,
                              world_size=self.trainer.world_size)

    def on_train_start(self) -> None:
        rank_zero_info(f"training from global step {self.global_step} (epoch {self.current_epoch})")

    def configure_optimizers(self):
        groups: dict[tuple[float, bool], list] = {}
        for name, p in self.model.named_parameters():
            if name in self.lr_ratio:
                groups.setdefault((self.lr_ratio[name], p.ndim >= 2), []).append(p)
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            [{"params": ps, "lr": hp.lr * ratio, "weight_decay": hp.weight_decay if decay else 0.0,
              "lr_ratio": ratio} for (ratio, decay), ps in groups.items()],
            betas=tuple(hp.betas), eps=hp.eps,
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(hp.warmup_steps, total // 2)

        def factor(step: int) -> float:  # multiplies every group's own lr
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- steps ----------------------------------------------------------------------------

    @staticmethod
    def visual_input(batch: dict):
        return batch["splats"] if "splats" in batch else batch["image"]

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        """The loss and its terms on a batch: "loss" always; "contrastive", "embedding", "logit" where they apply;
        "logit_scale" for the contrastive ones."""
        if self.mode == "distill":  # the text tower is not needed: the target is the teacher's image embedding
            image_features = self.model.encode_image(self.visual_input(batch), normalize=True)
            embedding = embedding_distance(image_features, batch["teacher"][:, 0])
            return {"loss": embedding, "embedding": embedding}
        image_features, text_features, logit_scale = self.model(self.visual_input(batch), batch["text"])
        out = {"logit_scale": logit_scale}
        d = self.distill
        if d.logit_weight > 0:
            teacher = batch["teacher"]
            out["contrastive"], out["logit"] = self.loss(
                image_features, text_features, logit_scale, teacher[:, 0], teacher[:, 1],
                torch.tensor(self.hparams.teacher_logit_scale, device=teacher.device))
        else:
            out["contrastive"] = self.loss(image_features, text_features, logit_scale)
        if d.embedding_weight > 0:
            out["embedding"] = embedding_distance(image_features, batch["teacher"][:, 0])
        out["loss"] = out["contrastive"] + d.logit_weight * out.get("logit", 0.0) + \
            d.embedding_weight * out.get("embedding", 0.0)
        return out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        terms = self.losses(batch)
        loss = terms["loss"]
        # Before the step, so no weight takes it and no checkpoint saves it.
        finite = bool(torch.isfinite(loss))
        stop = not finite
        if self._trainer is not None:  # all ranks stop, none left waiting in the gradients' all-reduce
            stop = self.trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise UserError("train/loss", f"is {float(loss) if not finite else 'not finite on another rank'} at step "
                                          f"{self.global_step} ("
                                          f"{', '.join(f'{k} {float(v):.4g}' for k, v in terms.items() if k != 'loss')}"
                                          f"; the batch's first samples: {', '.join(batch['keys'][:3])}); the run "
                                          f"stops here. {self.last_good_checkpoint()}")
        n = len(batch["text"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True, batch_size=n)
        parts = [name for name in ("contrastive", "embedding", "logit") if name in terms]
        for name in parts if len(parts) > 1 else ():  # the parts of a loss made of several
            self.log(f"train/{name}", terms[name], on_step=False, on_epoch=True, sync_dist=True, batch_size=n)
        if "logit_scale" in terms:
            self.log("train/logit_scale", terms["logit_scale"], on_step=True, on_epoch=True, batch_size=n)
        self.log("train/skipped", float(batch.get("skipped", 0)), on_step=False, on_epoch=True, reduce_fx="sum",
                 sync_dist=True, batch_size=n)
        return loss

    def last_good_checkpoint(self) -> str:
        """Where to go on from after a stop: the checkpoints this run has saved, newest first."""
        saved = sorted((p for cb in self.trainer.checkpoint_callbacks for p in Path(cb.dirpath).glob("*.ckpt")),
                       key=lambda p: p.stat().st_mtime, reverse=True) if self._trainer is not None else []
        if not saved:
            return "No checkpoint was saved before it: lower model.lr or set trainer.gradient_clip_val, and start again."
        return (f"The last good checkpoint is {saved[0]}: lower model.lr or set trainer.gradient_clip_val, and go on "
                f"from it with resume=true resume_from={saved[0]}.")

    def optimizer_step(self, *args, **kwargs) -> None:
        super().optimizer_step(*args, **kwargs)
        # Right after the step, as open_clip clamps: a checkpoint saved at the batch's end (callbacks run their
        # on_train_batch_end before the module's) holds the clamped scale
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(self.hparams.logit_scale_max))

    def use_classes(self, classnames: list[str], templates: list) -> None:
        """Validate zero-shot on these classes and prompt templates (an eval set, or a suite's task)."""
        self.classnames, self.templates = classnames, templates
        self.metrics = zero_shot_metrics(len(classnames))

    def on_validation_epoch_start(self) -> None:
        if self.metrics is None:
            raise ValueError("ClipModule needs an eval_set to validate (zero-shot)")
        self.metrics = self.metrics.to(self.device)
        # This rank's samples scored and skipped (unreadable), for evaluate: a task none of whose images could be
        # read has no score, and one that lost some says how many.
        self.val_samples = self.val_skipped = 0
        self.bad_label: tuple[str, int] | None = None  # (key, .cls) of this rank's first label beyond the classes
        self.classifier = zero_shot_classifier(self.model, self.tokenizer, self.classnames, self.templates,
                                               self.device)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_skipped += int(batch.get("skipped", 0))
        labels = batch["label"]
        if (beyond := (labels < 0) | (labels >= len(self.classnames))).any():
            # Raised at the epoch's end, on every rank at once: a rank raising alone would leave the others waiting
            # in the metrics' sync, and ranks hold different numbers of eval batches, so no step can agree on it.
            i = int(beyond.nonzero()[0, 0])
            self.bad_label = self.bad_label or (batch["keys"][i], int(labels[i]))
            return
        features = self.model.encode_image(self.visual_input(batch), normalize=True)
        self.metrics.update(features @ self.classifier, labels)
        self.val_samples += len(labels)

    def on_validation_epoch_end(self) -> None:
        bad = self.bad_label is not None
        if self._trainer is not None:
            bad = self.trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            n = len(self.classnames)
            key, label = self.bad_label or ("eval set", None)
            raise UserError(key, f".cls {label} is not one of the {n} class labels of the eval set (0 to {n - 1}, "
                                 "classnames.txt)" if label is not None else f"a sample of another rank has a label "
                                 f"beyond its {n} classes (0 to {n - 1}, classnames.txt); that rank's error names it")
        self.log_dict(self.metrics.compute(), prog_bar=True)
        self.metrics.reset()
