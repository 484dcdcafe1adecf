"""CLIP on splats: open_clip models from the JSON configs beside this file, the splat encoder, zero-shot eval."""
from pathlib import Path

import open_clip

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)  # ViT-B-16-w512 (the paper's), ViT-Demo-28, ViT-Tiny-16
