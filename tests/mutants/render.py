"""Mutants of the render entry point (the kernels' own mutants live beside their tests)."""

MUTANTS = [
    {"name": "cutoff-argument-ignored", "path": "gs_lightning/render.py",
     "old": "_Rasterize.apply(*_fields(splats), height, width, float(cutoff))",
     "new": "_Rasterize.apply(*_fields(splats), height, width, float(CUTOFF))",
     "tests": ["tests/test_render.py"], "why": "rasterize(cutoff=...) renders with the default cut-off"},
    {"name": "l2-loss-cutoff-ignored", "path": "gs_lightning/render.py",
     "old": "_L2Loss.apply(*_fields(splats), target.contiguous(), float(cutoff))",
     "new": "_L2Loss.apply(*_fields(splats), target.contiguous(), float(CUTOFF))",
     "tests": ["tests/test_render.py"], "why": "the fused L2 loss renders with the default cut-off"},
    {"name": "autocast-reaches-the-render", "path": "gs_lightning/render.py",
     "old": "    with torch.autocast(splats.xy.device.type, enabled=False):\n        if backend",
     "new": "    if True:\n        if backend",
     "tests": ["tests/test_models.py::test_autocast_never_reaches_the_render_or_the_stem_features"],
     "why": "a bf16-mixed caller renders the dense reference in bf16"},
]
