"""Load a CUDA-enabled build of gs_lightning._C (made by `make cuda-build`) and check it.

CI has no GPU, so this proves the CUDA sources compile, link against torch's
CUDA libraries and import; its CPU path must still match the dense reference.
Usage: python tests/check_cuda_build.py build/cuda/lib/gs_lightning/_C*.so
"""
import importlib.util
import sys

import torch

from gs_lightning.render import CUTOFF, render_reference
from gs_lightning.splats import Splats


def main(path: str) -> None:
    spec = importlib.util.spec_from_file_location("gs_lightning._C", path)
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    assert ext.has_cuda(), f"{path} was built without the CUDA backend"
    g = torch.Generator().manual_seed(0)
    s = Splats(
        torch.rand(2, 30, 2, generator=g) * 32,
        torch.rand(2, 30, 3, generator=g) + torch.tensor([1.0, -0.5, 1.0]),
        torch.randn(2, 30, 3, generator=g),
        torch.ones(2, 30, dtype=torch.bool),
    )
    fields = (s.xy, s.chol, s.rgb, s.mask)
    got, binning = ext.forward(*fields, 32, 32, CUTOFF)
    torch.testing.assert_close(got, render_reference(s, 32, 32, cutoff=CUTOFF), rtol=1e-5, atol=1e-5)
    weight = torch.randn(2, 3, 32, 32, generator=g)
    for reused, again in zip(ext.backward(*fields, weight, CUTOFF, binning), ext.backward(*fields, weight, CUTOFF)):
        assert torch.equal(reused, again), "the backward on the forward's binning differs from binning again"
    if torch.cuda.is_available():
        image, none = ext.forward(*(t.cuda() for t in fields), 32, 32, CUTOFF)
        assert none is None, "the CUDA forward returned a CPU binning"
        torch.testing.assert_close(image.cpu(), got, rtol=1e-5, atol=1e-5)
    print(f"CUDA build OK: {path} (has_cuda=True, CPU path matches the reference; GPU available: "
          f"{torch.cuda.is_available()})")


if __name__ == "__main__":
    main(sys.argv[1])
