"""Fitting images to 2D Gaussian splat sets (paper section 4)."""
