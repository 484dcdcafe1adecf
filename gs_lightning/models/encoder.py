"""The splat encoder: a visual tower of open_clip's CLIP that reads splats instead of pixels.

    splats -> SplatStem -> PerceiverResampler (+ the mean of the splat features)
           -> [cls; tokens] + pos -> ln_pre -> ViT blocks -> ln_post -> cls token @ proj

SplatEncoder takes the ViT's transformer, ln_pre, ln_post and proj modules from an open_clip
VisionTransformer (RGB weights for `transfer`, random for `scratch`) and replaces only the patch embedding,
so `CLIP.encode_image(splats)` works unchanged: the visual tower is open_clip's seam for another input.
"""
from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch
from torch import Tensor, nn

from gs_lightning.models.resampler import PerceiverResampler
from gs_lightning.models.stem import SplatStem
from gs_lightning.schema import setting
from gs_lightning.splats import Splats


@dataclass
class SplatEncoderConfig:
    num_queries: int = setting(196, "resampler queries: the tokens the ViT sees (196 = ViT-B/16's; 98 halves "
                                    "them)", ge=1)
    # One cross-attention layer with a 1x MLP keeps the transfer's trainable share near the paper's ~7%
    # (two unfrozen ViT-B blocks are already 5.8% of the model).
    resampler_depth: int = setting(1, "resampler layers", ge=1)
    resampler_heads: int = setting(8, "resampler attention heads (must divide the ViT width)", ge=1)
    resampler_mlp_ratio: float = setting(1.0, "resampler MLP width over the ViT width", gt=0)
    stem_hidden: int = setting(256, "the stem's gated layer width", ge=1)
    num_freqs: int = setting(8, "Fourier frequencies of the centre (2^k pi, k < num_freqs)", ge=0)


class SplatEncoder(nn.Module):
    def __init__(self, *, vit: open_clip.transformer.VisionTransformer, cfg: SplatEncoderConfig):
        super().__init__()
        if vit.attn_pool is not None or vit.pool_type != "tok" or vit.final_ln_after_pool:
            raise ValueError("SplatEncoder supports ViTs with class-token pooling (open_clip's default)")
        width, queries = vit.class_embedding.shape[0], cfg.num_queries
        self.stem = SplatStem(width=width, hidden=cfg.stem_hidden, num_freqs=cfg.num_freqs)
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
