# gs-lightning: the commands users type. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
I2D    := .venv-img2dataset
EXT_SRC := setup.py $(shell find extensions -name '*.h' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' 2>/dev/null)
# CI has no GPU to ask, so name the targets: A100 (8.0), L40 / RTX 4090 (8.9), H100 (9.0), and PTX of
# 9.0 that newer GPUs compile at load time.
TORCH_CUDA_ARCH_LIST ?= 8.0;8.9;9.0+PTX
# torch infers CUDA_HOME from `which nvcc`; a symlinked /usr/local/bin/nvcc
# would make that /usr/local (no lib64, so -lcudart fails). Prefer the toolkit.
export CUDA_HOME ?= $(firstword $(patsubst %/bin/nvcc,%,$(wildcard /usr/local/cuda/bin/nvcc)))

.PHONY: help setup build test test-all test-gpu img2dataset e2e mutants mutmut bench bench-render bench-data bench-models bench-fit bench-codec photos fit \
	embed train eval demo compare sweep \
	cuda-build gpu-wheels gpu-check clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

$(FASHION_MNIST):  # the embedded demo data set, from Debian's archive
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2; exit 1; fi

$(VENV)/.installed: requirements.txt requirements-nodeps.txt | $(FASHION_MNIST)
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -r requirements-nodeps.txt
	touch $@

setup: $(VENV)/.installed ## Create .venv with the pinned requirements (torch comes from the local wheel cache)

$(VENV)/.built: $(VENV)/.installed $(EXT_SRC)
	$(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(VENV)/.built ## Compile gs_lightning._C (CPU; CUDA too where a GPU is visible or FORCE_CUDA=1)

test: build ## Run the fast test suite (what CI runs)
	$(PY) -m pytest

test-all: build $(I2D)/.installed ## Run every test, the slow ones included
	$(PY) -m pytest -m "slow or not slow"

$(I2D)/.installed: requirements-img2dataset.txt
	python3 -m venv $(I2D)
	$(I2D)/bin/pip install -q -r requirements-img2dataset.txt
	touch $@

img2dataset: $(I2D)/.installed ## img2dataset in its own venv, .venv-img2dataset (it pins webdataset<0.3)

e2e: build $(I2D)/.installed ## A local img2dataset download, fitted and trained on 2 ranks, then evaluated; prints each stage's counts
	$(PY) -m pytest -m slow tests/test_img2dataset.py -s -q

test-gpu: build ## Run the GPU tests (needs a CUDA device and a CUDA build)
	$(PY) -m pytest -m gpu

mutants: build ## Apply each listed bug (tests/mutants/*.py) to a scratch copy and report it caught or survived [ONLY=a,b]
	$(PY) tests/mutants/run.py $(if $(ONLY),--only $(ONLY))

SEED ?= 0
mutmut: build ## Search for bugs nobody listed: mutmut over the core modules (setup.cfg) [SAMPLE=N: a seeded sample, its kill rate] [ONLY=glob]
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children $$(nproc) \
		$(if $(SAMPLE),$$($(PY) tests/mutants/sample.py draw $(SAMPLE) --seed $(SEED)),$(ONLY))
	$(if $(SAMPLE),$(PY) tests/mutants/sample.py report $(SAMPLE) --seed $(SEED),$(VENV)/bin/mutmut results)

bench: bench-render bench-data bench-models bench-fit bench-codec ## Print each benchmark's default sections (~1 h 20 min on 2 cores; the fit one is half of it)

bench-render: build ## Rasterizer: ms/image, pairs/s, vs dense reference, 1 vs N threads; on a GPU: batch 1-4096, Fig. 2
	$(PY) -m gs_lightning.benchmarks.render

bench-data: build ## DataModules: samples/s (decode + tokenize + collate, 2 workers); load speed-up of splats over JPEG
	$(PY) -m gs_lightning.benchmarks.data

bench-models: build ## Splat encoder vs RGB ViT: fwd+bwd ms/sample and peak memory (ViT-B-16-w512)
	$(PY) -m gs_lightning.benchmarks.models

bench-fit: build ## Fitting: PSNR vs iterations, random / paper / default (+ plot), time to quality (+ plot), fit-to-quality, pruning, images/s
	$(PY) -m gs_lightning.benchmarks.fit

PHOTOS_DEBS := mate-backgrounds ukui-wallpapers lomiri-wallpapers lomiri-wallpapers-16.04

photos: setup ## bench-fit's held-out photo sets, from Debian's wallpaper packages: outputs/photos/{test,third}
	@if ! dpkg -s $(PHOTOS_DEBS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $(PHOTOS_DEBS); \
	  else echo "The wallpapers are missing: run 'sudo apt-get install $(PHOTOS_DEBS)'" >&2; exit 1; fi; fi
	$(PY) -m gs_lightning.benchmarks.photos outputs/photos

bench-codec: build ## Rate-distortion: splat records (fp16, quantized) vs JPEG/WebP/AVIF on the photos (CSV, table, plot)
	$(PY) -m gs_lightning.benchmarks.codec $(ARGS)

EXP  ?= gs196
DATA ?=
# fit, embed and train pass ARGS as written (set -f +B): a pattern in it, fit.input=dir/{00000..00099}.tar or
# photos/*.jpg, is the command's to expand, not the shell's
ARGS ?=
SWEEP ?= gs196_lr

fit: build ## Fit images to splat shards (default: the embedded photos). ARGS="fit.input=... fit.num_splats=..."
	set -f +B; $(PY) -m gs_lightning fit $(ARGS)

embed: build ## The teacher's embeddings of the training pairs, once (distillation): make embed EXP=gs196_distill
	set -f +B; $(PY) -m gs_lightning embed $(EXP) $(DATA) $(ARGS)

train: build ## Train CLIP: make train EXP=gs196 [DATA=demo] [ARGS="key=value ..."]
	set -f +B; $(PY) -m gs_lightning train $(EXP) $(DATA) $(ARGS)

eval: build ## Zero-shot suite: make eval RUNS="outputs/runs/rgb outputs/runs/gs196" ARGS="suite=datacomp suite.root=DIR"
	$(PY) -m gs_lightning eval $(RUNS) $(ARGS)

demo: build ## The whole pipeline on the embedded data, CPU: fits, teacher, embeddings, one and two stages, scratch, compare, suite [ARGS="--with gs98"]
	$(PY) -m gs_lightning demo $(ARGS)

compare: build ## Results table and plots from runs' CSV logs: make compare RUNS="outputs/runs/rgb outputs/runs/gs196"
	$(PY) -m gs_lightning compare $(RUNS) --out outputs/compare

sweep: build ## Create a W&B sweep from experiments/sweeps/$(SWEEP).yaml and start an agent
	$(PY) -m gs_lightning sweep $(SWEEP)

cuda-build: setup ## Compile and link the CUDA backend into build/cuda (no GPU needed), then import it
	FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$(TORCH_CUDA_ARCH_LIST)" $(PY) setup.py -q build_ext \
		--build-lib build/cuda/lib --build-temp build/cuda/tmp
	$(PY) tests/check_cuda_build.py $$(ls build/cuda/lib/gs_lightning/_C*.so)

# The lent GPU: a bare machine without a package registry, 64 MiB of tree and wheels, 15 minutes (README "On a GPU").
GPU_WHEELS := .gpu-wheels
OUT ?= outputs/gpu-check
GPU_PY ?= $(if $(DRY),$(PY),python3)

gpu-wheels: setup ## Download what the lent GPU machine lacks (requirements-gpu.txt) into .gpu-wheels; size what travels
	rm -rf $(GPU_WHEELS)
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		-d $(GPU_WHEELS) -r requirements-gpu.txt
	@tree=$$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1); \
	wheels=$$(du -cb $(GPU_WHEELS)/*.whl | tail -1 | cut -f1); \
	echo "travels: $$(( (tree + wheels) >> 20 )) MiB of 64 (tree $$((tree >> 10)) KiB, $(GPU_WHEELS) $$((wheels >> 10)) KiB)"; \
	test $$((tree + wheels)) -lt $$((64 << 20))

# On the device: python3 is the image's (torch, lightning); DRY=1 runs the CPU side with $(VENV)'s python.
gpu-check: $(if $(DRY),build) ## On a lent GPU: wheels, sm_90 build, GPU tests, bench-render, fit, bf16 steps -> OUT/report.md [DRY=1 ONLY= DEADLINE=]
	PYTHONUNBUFFERED=1 $(GPU_PY) -m gs_lightning.benchmarks.gpu_check --out $(OUT) $(if $(DRY),--dry) \
		$(if $(DEADLINE),--deadline $(DEADLINE)) $(if $(ONLY),--only $(ONLY))

clean: ## Remove build outputs (keeps .venv)
	rm -rf build gs_lightning/_C*.so $(VENV)/.built
