"""Mutants of the data room: pairing, splitting across ranks and workers, keys."""

MUTANTS = [
    {"name": "captions-paired-wrong", "path": "gs_lightning/data/datamodules.py",
     "old": 'batch["text"] = tokenizer([s["caption"] for s in samples])',
     "new": 'batch["text"] = tokenizer([s["caption"] for s in samples][::-1])',
     "tests": ["tests/test_data.py"], "why": "captions paired with the wrong images: CLIP learns nothing"},
    {"name": "slot-reads-one-shard", "path": "gs_lightning/data/datamodules.py",
     "old": "mine, keep, reports = self.sources[slot::slots], lambda i: True, True",
     "new": "mine, keep, reports = self.sources[slot:slot + 1], lambda i: True, True",
     "tests": ["tests/test_data.py"], "why": "each (rank, worker) slot reads only its first shard"},
    {"name": "unsafe-keys-written", "path": "gs_lightning/data/shards.py",
     "old": '    if not key or not key.isprintable():\n        return "the key is empty or holds control characters"',
     "new": '    return None\n    if not key or not key.isprintable():\n        return "the key is empty or holds control characters"',
     "tests": ["tests/test_fit.py::test_hostile_and_duplicate_keys_are_skipped_named_and_counted"],
     "why": "a key like ../../escape is written into the output shard"},
    {"name": "duplicate-keys-kept", "path": "gs_lightning/data/shards.py",
     "old": "        if k in seen:\n", "new": "        if False:\n",
     "tests": ["tests/test_fit.py::test_hostile_and_duplicate_keys_are_skipped_named_and_counted"],
     "why": "a key seen earlier in the shard is fitted again"},
]
