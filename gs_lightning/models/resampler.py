"""Perceiver Resampler (Flamingo): a fixed number of learned queries read a variable-size splat set.

Each layer: latents += CrossAttention(q = latents, kv = [splat features; latents]); latents += FF(latents).
Keys include the latents themselves, so a set of zero real splats still has something to attend to;
padding rows are masked out of the keys, so extra padding changes nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class ResamplerLayer(nn.Module):
    def __init__(self, *, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ff = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim)
        )

    def forward(self, media: Tensor, latents: Tensor, ignore: Tensor) -> Tensor:
        # media [B, N, D], latents [B, Q, D], ignore [B, N + Q] True where a key is padding
        q = self.norm_latents(latents)
        kv = torch.cat([self.norm_media(media), q], dim=1)
        latents = latents + self.attn(q, kv, kv, key_padding_mask=ignore, need_weights=False)[0]
        return latents + self.ff(latents)


class PerceiverResampler(nn.Module):
    def __init__(self, *, dim: int, num_queries: int, depth: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)
        self.layers = nn.ModuleList([ResamplerLayer(dim=dim, heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, media: Tensor, mask: Tensor) -> Tensor:  # media [B, N, D], mask [B, N] bool -> [B, Q, D]
        B = media.shape[0]
        latents = self.latents.expand(B, -1, -1)
        ignore = torch.cat([~mask, mask.new_zeros(B, latents.shape[1])], dim=1)
        for layer in self.layers:
            latents = layer(media, latents, ignore)
        return self.norm(latents)
