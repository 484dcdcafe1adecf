"""Mutants of the render entry point (the kernels' own mutants live beside their tests)."""

MUTANTS = [
    {"name": "cutoff-argument-ignored", "path": "gs_lightning/render.py",
     "old": "        float(cutoff),\n    )", "new": "        float(CUTOFF),\n    )",
     "tests": ["tests/test_render.py"], "why": "rasterize(cutoff=...) renders with the default cut-off"},
]
