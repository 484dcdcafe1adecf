"""The RGB teacher as a Lightning prediction: its L2-normalised embeddings of training images and their captions,
computed once (python -m gs_lightning embed) for distilling it into a splat encoder."""
from __future__ import annotations

import lightning as L
import open_clip
import torch

from gs_lightning.checkpoint import load_matching, read_state_dict


class TeacherEmbedder(L.LightningModule):
    def __init__(self, *, name: str, checkpoint: str):
        super().__init__()
        self.model = open_clip.create_model(name, pretrained=None)
        load_matching(self.model, read_state_dict(checkpoint, "model.rgb_checkpoint"), checkpoint,
                      "model.rgb_checkpoint")
        self.model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(name)
        self.dim = open_clip.get_model_config(name)["embed_dim"]

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp())

    def predict_step(self, batch, batch_idx: int):  # batch: ImageBatch, images as open_clip's eval transform makes them
        """(batch, float16 [b, 2, D]): each image's embedding, then its caption's (an empty one for none)."""
        if len(batch.samples) == 0:
            return batch, torch.zeros(0, 2, self.dim).half().numpy()
        image = self.model.encode_image(batch.images, normalize=True)
        text = self.model.encode_text(self.tokenizer([s.caption or "" for s in batch.samples]).to(self.device),
                                      normalize=True)
        return batch, torch.stack([image, text], 1).half().cpu().numpy()
