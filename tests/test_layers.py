"""The layer contract (.importlinter): the tree keeps it, and a wrong arrow breaks it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(LINT), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 kept, 0 broken" in out.stdout


def test_a_model_importing_the_fit_breaks_the_contract(tmp_path):
    """models and fit are siblings: neither may import the other (here: the encoder reaching for the fitter)."""
    shutil.copytree(ROOT / "gs_lightning", tmp_path / "gs_lightning", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    encoder = tmp_path / "gs_lightning" / "models" / "encoder.py"
    encoder.write_text(encoder.read_text().replace("from gs_lightning.schema import setting\n",
                                                   "from gs_lightning.schema import setting\nimport gs_lightning.fit.fitter\n"))
    out = lint(tmp_path)
    assert out.returncode != 0 and "0 kept, 1 broken" in out.stdout, out.stdout[-3000:]
    assert "gs_lightning.models.encoder -> gs_lightning.fit.fitter" in out.stdout
