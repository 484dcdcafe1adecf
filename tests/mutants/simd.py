"""Mutants of the CPU backend's SIMD kernels and its exp, for tests/test_render.py."""
SPLAT = "extensions/splat2d/splat2d.h"
TILES = "extensions/splat2d/cpu/tiles.cpp"
TILES_H = "extensions/splat2d/cpu/tiles.h"
SIMD = "extensions/splat2d/cpu/simd.h"
CPU = "extensions/splat2d/cpu/splat2d_cpu.cpp"
TESTS = ["tests/test_render.py"]
KEPT_TESTS = ["tests/test_render.py::test_l2_loss_matches_autograd_through_the_reference",
              "tests/test_render.py::test_the_fused_loss_gives_the_bits_of_a_render_and_a_backward"]

MUTANTS = [
    # The exp.
    {"name": "exp-no-cody-waite-low-part", "path": SPLAT, "old": "const F r = (x - n * kLn2Hi) - n * kLn2Lo;",
     "new": "const F r = x - n * kLn2Hi;", "tests": ["tests/test_render.py::test_gaussian_weight_is_within_1_08_ulp_of_exp"],
     "why": "r keeps ln2's rounding error times n: the weight is off by up to 3% at s2 = 174"},
    {"name": "exp-degree-3", "path": SPLAT, "old": "+ r2 * ((kExpQ2 + kExpQ3 * r) + r2 * kExpQ4);",
     "new": "+ r2 * (kExpQ2 + kExpQ3 * r);", "tests": ["tests/test_render.py::test_gaussian_weight_is_within_1_08_ulp_of_exp"],
     "why": "a polynomial a degree short: tens of ulp, still inside the render's tolerance"},
    # The kernels.
    {"name": "render-cutoff-unmasked", "path": TILES,
     "old": "const F w = where_le(s2, cutoff, gaussian_weight_in_range(s2));\n    float* a",
     "new": "const F w = gaussian_weight_in_range(s2);\n    float* a", "tests": TESTS,
     "why": "the forward adds the lanes beyond the cut-off of every row chunk it visits"},
    {"name": "grad-cutoff-unmasked", "path": TILES,
     "old": "      w = where_le(s2, cutoff, gaussian_weight_in_range(s2));\n    }",
     "new": "      w = gaussian_weight_in_range(s2);\n    }", "tests": TESTS,
     "why": "the backward adds the gradient of pairs beyond the cut-off"},
    {"name": "kept-weights-not-advanced", "path": TILES_H,
     "old": "  memcpy(&v, kept + sizeof w / sizeof(float), sizeof v);\n  kept += 2 * sizeof w / sizeof(float);",
     "new": "  memcpy(&v, kept + sizeof w / sizeof(float), sizeof v);", "tests": KEPT_TESTS,
     "why": "the fused loss's backward reads the tile's first record for every row of every entry"},
    {"name": "kept-weights-overwritten", "path": TILES_H,
     "old": "  memcpy(kept + sizeof w / sizeof(float), &v, sizeof v);\n  kept += 2 * sizeof w / sizeof(float);",
     "new": "  memcpy(kept + sizeof w / sizeof(float), &v, sizeof v);", "tests": KEPT_TESTS,
     "why": "the fused loss's render writes every row's weights over one record: its backward reads the "
            "tile's last row, then what earlier tiles left in the buffer"},
    {"name": "kept-weights-restart-each-entry", "path": TILES, "old": "    kept = span.kept;\n    float M[kGradDim];",
     "new": "    float M[kGradDim];", "tests": KEPT_TESTS,
     "why": "the fused loss's backward reads the tile's first entry's weights for every entry"},
    {"name": "half-chunk-upper-offset", "path": TILES, "old": "span.template run<H, H>(c);",
     "new": "span.template run<H, 0>(c);", "tests": TESTS,
     "why": "a box in the right half of a 16-lane chunk is evaluated at the left half's pixels (avx512)"},
    {"name": "lane-tree-pairs-neighbours", "path": SIMD, "old": "half[c] = chunks[c] + chunks[c + C / 2];",
     "new": "half[c] = chunks[2 * c] + chunks[2 * c + 1];", "tests": TESTS,
     "why": "the scalar and portable paths sum their lanes in another order than the wide paths: other bits"},
    {"name": "moments-shear-dropped", "path": SPLAT, "old": "d[0] = (M[0] - shear * M[1]) * G.inv11;",
     "new": "d[0] = M[0] * G.inv11;", "tests": TESTS,
     "why": "x's gradient forgets that moving u also moves v: wrong wherever a Gaussian is sheared"},
    {"name": "column-moment-u-squared-dropped", "path": SPLAT, "old": "M[2] = eu * u;", "new": "M[2] = eu;",
     "tests": TESTS, "why": "l11's gradient sums e u where it needs e u^2"},
    {"name": "packed-trees-other-order", "path": SIMD,
     "old": "SPLAT_SHUFFLE(z[0], z[1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29) +\n"
            "                    SPLAT_SHUFFLE(z[0], z[1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);",
     "new": "SPLAT_SHUFFLE(z[0], z[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +\n"
            "                    SPLAT_SHUFFLE(z[0], z[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);",
     "tests": TESTS, "why": "avx512's eight packed trees add each sum's last four lanes in another order: other bits"},
    {"name": "simd-env-ignored", "path": CPU, "old": "const char* want = std::getenv(kSimdEnv);",
     "new": "const char* want = nullptr;", "tests": TESTS,
     "why": "GS_LIGHTNING_SIMD is not read: the tests of every path test the fastest one only"},
    {"name": "binning-skips-value-check", "path": TILES,
     "old": "if (!valid_splat(xy + 2 * g, chol + 3 * g, rgb + 3 * g)) return g;", "new": "", "tests": TESTS,
     "why": "the CPU backend renders NaN or non-positive l11 / l22 silently: rasterize leaves that check to it"},
    {"name": "value-check-reads-padding", "path": TILES,
     "old": ["    if (mask[g]) {\n      if (!valid_splat(xy + 2 * g, chol + 3 * g, rgb + 3 * g)) return g;\n",
             "    PixelBox box{0, -1, 0, -1};\n"],
     "new": ["    if (mask[g]) {\n", "    PixelBox box{0, -1, 0, -1};\n    if (!valid_splat(xy + 2 * g, chol + 3 * g, rgb + 3 * g)) return g;\n"],
     "tests": TESTS, "why": "padding rows, which may hold anything, are rejected"},
    {"name": "value-check-allows-l22-zero", "path": TILES, "old": "return finite && chol[0] > 0.0f && chol[2] > 0.0f;",
     "new": "return finite && chol[0] > 0.0f;", "tests": TESTS, "why": "l22 <= 0 reaches the kernels: 1 / l22 is inf"},
    {"name": "backward-bins-again", "path": "gs_lightning/render.py", "old": "ctx.cutoff, binning\n",
     "new": "ctx.cutoff, None\n", "tests": TESTS,
     "why": "rasterize's backward bins the splats again, which costs a batch-1 call a tenth of its time"},
    {"name": "binning-check-skips-size", "path": CPU, "old": "f.job.grid.height == height &&\n                    f.job.grid.width == width && ",
     "new": "", "tests": TESTS, "why": "a binning of another image size reaches the kernels: reads past a tile list"},
    {"name": "l2-residual-gradient-halved", "path": CPU, "old": "dimg[from + j] = 2.0f * r / count;",
     "new": "dimg[from + j] = r / count;", "tests": TESTS,
     "why": "the fused L2 loss back-propagates half of d mean(r^2) / d render"},
]
