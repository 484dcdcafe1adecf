"""Mutants of the typed configs' checks."""

MUTANTS = [
    {"name": "lower-bounds-unchecked", "path": "gs_lightning/config.py",
     "old": '        if m["ge"] is not None and not value >= m["ge"]:', "new": '        if False:',
     "tests": ["tests/test_cli.py"], "why": "fit.num_splats=0 and friends start work instead of an error"},
    {"name": "output-file-accepted", "path": "gs_lightning/config.py",
     "old": "    if p.exists() and not p.is_dir():", "new": "    if False:",
     "tests": ["tests/test_cli.py"], "why": "fit.output naming a file fails later with a traceback"},
]
