"""gs-lightning: 2D Gaussian splat fitting and CLIP alignment on splats."""
from gs_lightning.splats import Splats

__all__ = ["Splats"]
__version__ = "0.1.0"
