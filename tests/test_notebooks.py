"""Both notebooks run top to bottom (nbclient) on a small stand-in of the demo outputs."""
import os
from pathlib import Path

import pytest
from helpers import fake_run, fitted_shards

# Skipped where Jupyter is absent (the lent GPU machine), so `pytest -m gpu` collects there.
nbformat = pytest.importorskip("nbformat")
NotebookClient = pytest.importorskip("nbclient").NotebookClient

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    demo = tmp_path_factory.mktemp("demo")
    fitted_shards(demo / "fit" / "n16" / "test", [8])
    fitted_shards(demo / "fit" / "n16" / "test-q", [8], record="quantized")  # the notebooks read both records
    (demo / "fit" / "n16" / "test" / "summary.json").write_text('{"splats_mean": 16, "compression_ratio": 9.1875, "image_size": 28}')
    fake_run(demo / "runs" / "rgb", "rgb", "rgb", [0.5, 0.7], [0.9, 0.95])
    fake_run(demo / "runs" / "gs196", "gs196", "transfer", [0.4, 0.6], [0.8, 0.9], fit_dir=demo / "fit" / "n16" / "test")
    fake_run(demo / "runs" / "gs196_scratch", "gs196_scratch", "scratch", [0.2, 0.3], [0.5, 0.6],
             fit_dir=demo / "fit" / "n16" / "test", trainable=1.0)
    return demo


@pytest.mark.parametrize("name", ["splats", "compare"])
def test_notebook_runs_top_to_bottom(name, demo_dir, monkeypatch):
    monkeypatch.setenv("GS_DEMO_DIR", str(demo_dir))
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
                   ).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if name == "splats":
        titles = str(outputs)
        assert "fit/n16/test-q/00000.tar" in titles and "fit/n16/test/00000.tar" in titles
    if name == "compare":
        assert (demo_dir / "results" / "training_curves.png").exists()
        assert any("gs196_scratch" in str(o) for o in outputs)
