"""Mutants of the CUDA device code that tests/test_cuda_emulated.py must catch.

Each deletes or bends one thing the kernels, the binning or the slicing rely on; the emulator runs the
edited .cuh on the next test run (its harness is rebuilt from the working tree).
"""
RENDER = "extensions/splat2d/cuda/render.cuh"
BINNING = "extensions/splat2d/cuda/binning.cuh"
TESTS = ["tests/test_cuda_emulated.py"]

MUTANTS = [
    # Barriers.
    {"name": "sync-all", "path": RENDER, "old": '#include "binning.cuh"\n',
     "new": '#include "binning.cuh"\n\n#define __syncthreads()\n', "tests": TESTS,
     "why": "no barrier at all: threads read staged Gaussians other threads have not written yet"},
    {"name": "sync-after-staging", "path": RENDER, "old": "    s_ids[tid] = g;\n  }\n  __syncthreads();\n  return count;",
     "new": "    s_ids[tid] = g;\n  }\n  return count;", "tests": TESTS,
     "why": "pixels evaluate a chunk before the block has staged it"},
    {"name": "sync-forward-chunk-end", "path": RENDER,
     "old": "    __syncthreads();  // the next chunk overwrites shared memory\n", "new": "", "tests": TESTS,
     "why": "a crowded tile's next chunk overwrites the chunk slower threads still read (forward)"},
    {"name": "sync-backward-chunk-end", "path": RENDER, "old": "      }\n    }\n    __syncthreads();\n  }\n}\n",
     "new": "      }\n    }\n  }\n}\n", "tests": TESTS,
     "why": "a crowded tile's next chunk overwrites the chunk slower threads still read (backward)"},
    # Indices.
    {"name": "batch-index-zero", "path": RENDER, "old": "  t.image = blockIdx.z;", "new": "  t.image = 0;",
     "tests": TESTS, "why": "every block renders the launch's first image"},
    {"name": "tile-index-zero", "path": RENDER,
     "old": "  t.cell = t.image * f.tiles() + int64_t(blockIdx.y) * f.tiles_x + blockIdx.x;",
     "new": "  t.cell = t.image * f.tiles();", "tests": TESTS, "why": "every tile walks tile 0's list"},
    {"name": "tile-pixels-zero", "path": RENDER, "old": "  t.tile.x0 = blockIdx.x * kTile;",
     "new": "  t.tile.x0 = 0 * kTile;", "tests": TESTS, "why": "every column of tiles computes the first column's pixels"},
    {"name": "stage-slot-off-by-one", "path": RENDER, "old": "    s_gauss[tid] = make_gaussian(",
     "new": "    s_gauss[tid + 1] = make_gaussian(", "tests": TESTS,
     "why": "the staged Gaussians shift one slot: slot 0 is never written, the last one spills"},
    {"name": "early-return-forward", "path": RENDER,
     "old": "  const TileGeometry t = tile_geometry(f);\n  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;\n"
            "  float acc_r",
     "new": "  const TileGeometry t = tile_geometry(f);\n  if (!t.inside) return;\n"
            "  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;\n  float acc_r",
     "tests": TESTS, "why": "threads past the image edge leave before the barriers and stage nothing"},
    {"name": "early-return-backward", "path": RENDER,
     "old": "  const TileGeometry t = tile_geometry(f);\n  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;\n"
            "  float gr",
     "new": "  const TileGeometry t = tile_geometry(f);\n  if (!t.inside) return;\n"
            "  const float px = float(t.j) + 0.5f, py = float(t.i) + 0.5f;\n  float gr",
     "tests": TESTS, "why": "threads past the image edge leave before the barriers and the warp collectives"},
    # Warp collectives.
    {"name": "any-sync-divergent", "path": RENDER, "old": "      if (!__any_sync(kFullMask, touches)) continue;",
     "new": "      if (!touches) continue;", "tests": TESTS,
     "why": "lanes that skip a Gaussian leave the full-mask shuffles that name them"},
    {"name": "warp-sum-half", "path": RENDER, "old": "for (int offset = 16; offset > 0;",
     "new": "for (int offset = 8; offset > 0;", "tests": TESTS, "why": "the warp sum misses lanes 16-31"},
    {"name": "atomics-wrong-lane", "path": RENDER, "old": "      if (lane == 0) {", "new": "      if (lane == 1) {",
     "tests": TESTS, "why": "lane 1 holds a partial sum, not the warp's"},
    # Binning.
    {"name": "bin-ignores-mask", "path": BINNING, "old": "  if (!s.mask[i]) return PixelBox{0, -1, 0, -1};\n", "new": "",
     "tests": TESTS, "why": "padding rows are binned and rendered"},
    {"name": "bin-count-short", "path": BINNING, "old": "int64_t(t.x1 - t.x0 + 1) * (t.y1 - t.y0 + 1)",
     "new": "int64_t(t.x1 - t.x0) * (t.y1 - t.y0 + 1)", "tests": TESTS,
     "why": "counts miss a column of tiles, so emission overruns its slots"},
    {"name": "bin-emit-slot-off-by-one", "path": BINNING, "old": "  int64_t slot = i == 0 ? 0 : cum[i - 1];",
     "new": "  int64_t slot = (i == 0 ? 0 : cum[i - 1]) + 1;", "tests": TESTS,
     "why": "each Gaussian's pairs land one slot late (the compaction slot of the binning)"},
    {"name": "bin-key-drops-image", "path": BINNING,
     "old": "keys[slot] = image * f.tiles() + int64_t(ty) * f.tiles_x + tx;",
     "new": "keys[slot] = int64_t(ty) * f.tiles_x + tx;", "tests": TESTS,
     "why": "all images' pairs land in the first image's tiles"},
    {"name": "bin-sort-bits-short", "path": BINNING, "old": "total, key_bits(cells));",
     "new": "total, key_bits(cells) - 1);", "tests": TESTS, "why": "the sort ignores the key's top bit"},
    {"name": "bin-range-first", "path": BINNING, "old": "  const int64_t first = k == 0 ? 0 : keys[k - 1] + 1;",
     "new": "  const int64_t first = k == 0 ? 0 : keys[k - 1];", "tests": TESTS,
     "why": "a cell's start is overwritten by the next cell's, so it loses its entries"},
    {"name": "bin-range-last", "path": BINNING, "old": "  const int64_t last = k == total ? cells : keys[k];",
     "new": "  const int64_t last = k == total ? cells - 1 : keys[k];", "tests": TESTS,
     "why": "the final offset is never written (garbage end for the last cell)"},
    {"name": "tile-span-column", "path": "extensions/splat2d/splat2d.h",
     "old": "box.x0 / kTile, box.x1 / kTile, box.y0 / kTile", "new": "box.x0 / kTile, box.x0 / kTile, box.y0 / kTile",
     "tests": TESTS, "why": "a Gaussian is binned into its first column of tiles only"},
    # Slicing.
    {"name": "slice-rows", "path": RENDER, "old": "    const int64_t row = b0 * s.n;\n    const SplatBatch slice{",
     "new": "    const int64_t row = 0;\n    const SplatBatch slice{", "tests": TESTS,
     "why": "every slice reads the first slice's splats"},
    {"name": "slice-image", "path": RENDER, "old": "slice, f, bins, image + b0 * 3 * plane);",
     "new": "slice, f, bins, image);", "tests": TESTS, "why": "every slice writes over the first slice's images"},
    {"name": "slice-grads", "path": RENDER, "old": "    const int64_t row = b0 * s.n;\n    const Grads g{",
     "new": "    const int64_t row = 0;\n    const Grads g{", "tests": TESTS,
     "why": "every slice adds its gradients into the first slice's rows"},
]
