"""The splat encoder and the three CLIP variants built from open_clip models.

    splats -> GSStem -> PerceiverResampler (+ the mean of the splat features)
           -> [cls; tokens] + pos -> ln_pre -> ViT blocks -> ln_post -> cls token @ proj

GSEncoder takes the ViT's transformer, ln_pre, ln_post and proj modules from an
open_clip VisionTransformer (RGB weights for `transfer`, random for `scratch`)
and replaces only the patch embedding, so `CLIP.encode_image(splats)` works
unchanged: the visual tower is open_clip's seam for an alternative input.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import open_clip
import torch
from torch import Tensor, nn

from gs_lightning.config import GSConfig, UserError
from gs_lightning.models.gs_stem import GSStem
from gs_lightning.models.resampler import PerceiverResampler
from gs_lightning.splats import Splats

MODES = ("rgb", "transfer", "scratch")


class GSEncoder(nn.Module):
    def __init__(self, *, vit: open_clip.transformer.VisionTransformer, cfg: GSConfig):
        super().__init__()
        if vit.attn_pool is not None or vit.pool_type != "tok" or vit.final_ln_after_pool:
            raise ValueError("GSEncoder supports ViTs with class-token pooling (open_clip's default)")
        width, queries = vit.class_embedding.shape[0], cfg.num_queries
        self.stem = GSStem(width=width, hidden=cfg.stem_hidden, num_freqs=cfg.num_freqs)
        self.resampler = PerceiverResampler(
            dim=width, num_queries=queries, depth=cfg.resampler_depth, heads=cfg.resampler_heads,
            mlp_ratio=cfg.resampler_mlp_ratio,
        )
        self.class_embedding = nn.Parameter(vit.class_embedding.detach().clone())
        pos = vit.positional_embedding.detach()
        if pos.shape[0] == queries + 1:  # as many queries as RGB tokens: the RGB table fits
            self.positional_embedding = nn.Parameter(pos.clone())
        else:
            self.positional_embedding = nn.Parameter(torch.randn(queries + 1, width) * width**-0.5)
        self.ln_pre, self.transformer, self.ln_post, self.proj = vit.ln_pre, vit.transformer, vit.ln_post, vit.proj
        self.output_dim = vit.output_dim

    def tokens(self, splats: Splats) -> Tensor:  # -> [B, Q, width]
        features = self.stem(splats)  # [B, N, width], zero on padding
        count = splats.mask.sum(1, keepdim=True).clamp(min=1)
        global_mean = features.sum(1) / count  # [B, width]; zero for an empty set
        return self.resampler(features, splats.mask) + global_mean[:, None]

    def forward(self, splats: Splats) -> Tensor:  # -> [B, output_dim]
        x = self.tokens(splats)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


# ---- building the three variants --------------------------------------------------


def read_state_dict(path: str | Path, key: str = "model.rgb_checkpoint") -> dict[str, Tensor]:
    """CLIP weights from a ClipModule (Lightning) checkpoint or an open_clip one, prefixes removed.

    Loaded with weights_only=True: unpickling a file runs whatever code it names, and RGB teachers are
    files people pass around. Anything but a checkpoint of plain tensors is a UserError naming `key`.
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):
            head = Path(path).read_bytes()[:16]
            raise UserError(key, f"{path} is not a torch checkpoint: it starts with {head!r}") from None
        found = next((line.strip() for line in str(e).splitlines() if "GLOBAL" in line), "objects beyond tensors")
        raise UserError(key, f"{path} holds pickled code or objects, which are never loaded ({found}); give a "
                             "checkpoint of plain weights, such as the RGB run's best.ckpt") from None
    except Exception as e:  # noqa: BLE001  torch raises many types for a file that is not a checkpoint
        raise UserError(key, f"{path} is not a torch checkpoint ({type(e).__name__}: {e})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(key, f"{path} holds a {type(state).__name__}, not a dict of weights (a state_dict)")
    for prefix in ("model.", "module."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_matching(model: nn.Module, state: dict[str, Tensor], source: str, key: str = "model.rgb_checkpoint") -> None:
    """load_state_dict, but a mismatch says which weights did not match and how."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def head(items):
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = [f"{len(shapes)} with another shape: {head(shapes)}" if shapes else "",
                 f"{len(missing)} missing from the checkpoint: {head(missing)}" if missing else "",
                 f"{len(unexpected)} not in the model: {head(unexpected)}" if unexpected else ""]
        raise UserError(key, f"{source} does not match the model; weights " + "; ".join(p for p in parts if p))
    model.load_state_dict(state)


def build_clip(model_name: str, *, mode: str, gs: GSConfig | None = None,
               rgb_checkpoint: str | None = None) -> open_clip.CLIP:
    """rgb: open_clip's CLIP. transfer: the RGB checkpoint's CLIP with a splat visual tower.
    scratch: the same splat model from random init."""
    if mode not in MODES:
        raise ValueError(f"model.mode must be one of {MODES}, got {mode!r}")
    model = open_clip.create_model(model_name, pretrained=None)
    if mode == "transfer":
        if not rgb_checkpoint:
            raise ValueError("model.mode=transfer needs model.rgb_checkpoint (the best RGB CLIP checkpoint)")
        load_matching(model, read_state_dict(rgb_checkpoint), rgb_checkpoint)
    if mode != "rgb":
        model.visual = GSEncoder(vit=model.visual, cfg=gs or GSConfig())
    return model
