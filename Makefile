# `make help` lists the targets documented with `## `.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APT_PACKAGES := pkg-config libopencv-dev libturbojpeg0-dev
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help venv system-deps test test-fast sweep-init-depth sweep-init-depth-deep sweep-init-depth-limit sweep-mnist5k-depth-limit sweep-mnist5k-depth-200 sweep-mnist5k-depth-extreme sweep-mnist5k-init-depth sweep-mnist5k-relu-prelu bench-sweep-limit bench-overhead bench-correlation report bench bench-sweep bench-sweep-deep bench-data bench-scaling gpu-check clean

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-18s %s\n", $$1, $$2}'

system-deps: ## Install the Debian packages FFCV builds against (apt-get when root; otherwise prints the command)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ]; then \
		echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	else \
		echo "error: FFCV needs Debian packages:$$missing. Run: sudo apt-get install -y$$missing" >&2; exit 1; \
	fi

$(STAMP): pyproject.toml
	$(MAKE) system-deps
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[ffcv,dev]'
	$(BIN)/pip install -q --no-deps sweeps==0.3.0 jsonref==1.1.0  # W&B's sweep engine; it declares numpy<2 but runs on 2
	$(BIN)/python scripts/fetch_timm_tests.py $(VENV)/timm-tests  # timm's model tests, for test_timm_suite.py
	touch $(STAMP)

venv: $(STAMP) ## Create .venv and install delving with FFCV and the test tools

test: $(STAMP) ## Run the whole test suite (fast and slow tests)
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: $(STAMP) ## Run the fast tests only
	$(BIN)/python -m pytest -q -m "not slow"

sweep-init-depth: $(STAMP) ## The paper's init x depth study on the digits default (local grid, offline W&B), then its summary
	$(BIN)/delving sweep sweeps/init_depth.yaml

sweep-init-depth-deep: $(STAMP) ## Deeper than 30: depth 30/50/100 x 3 inits x 4 activations x 2 seeds (72 runs), then its summary
	$(BIN)/delving sweep sweeps/init_depth_deep.yaml

sweep-init-depth-limit: $(STAMP) ## Plain nets to the limit: depth 30/100/200 x {ReLU+He, PReLU+He, PReLU+TAT, +delta-orthogonal} x 2 seeds
	$(BIN)/delving sweep sweeps/init_depth_limit.yaml

sweep-mnist5k-depth-limit: $(STAMP) ## MNIST 5k depth frontier: plain PReLU+TAT+delta-orthogonal vs its residual twin, depth 30/100 x 3 seeds
	$(BIN)/delving sweep sweeps/mnist5k_depth_limit.yaml --jobs 2

sweep-mnist5k-depth-200: $(STAMP) ## MNIST 5k depth frontier at 200 layers: the plain TAT net vs its residual twin x 3 seeds
	$(BIN)/delving sweep sweeps/mnist5k_depth_200.yaml --jobs 2

sweep-mnist5k-depth-extreme: $(STAMP) ## MNIST 5k depth frontier at 500 and 1,000 layers: one plain TAT net each, side by side
	$(BIN)/delving sweep sweeps/mnist5k_depth_extreme.yaml --jobs 2

sweep-mnist5k-init-depth: $(STAMP) ## MNIST 5k init x depth: ReLU/PReLU x Xavier/He x depth 22/30 x 3 seeds (24 runs), then its summary
	$(BIN)/delving sweep sweeps/mnist5k_init_depth.yaml --jobs 2

sweep-mnist5k-relu-prelu: $(STAMP) ## MNIST 5k ReLU vs PReLU: 14 layers, He, 10 paired seeds; the PReLU runs' slope profile
	$(BIN)/delving sweep sweeps/mnist5k_relu_prelu.yaml --jobs 2

bench-sweep-limit: $(STAMP) ## Time the depth-limit sweep (24 runs) from a clean output folder against its 30-minute budget
	$(BIN)/python benchmarks/sweep_time.py --sweep sweeps/init_depth_limit.yaml --budget 1800

bench-overhead: $(STAMP) ## delving fit against a plain torch loop on the main job's run, side by side (ratio printed)
	$(BIN)/python benchmarks/fit_overhead.py

bench-correlation: $(STAMP) ## Correlation between inputs by layer at init, 100-layer nets, measured vs C-map theory, by width
	$(BIN)/python benchmarks/correlation_profile.py

report: $(STAMP) ## Reproduction report of runs/init_depth beside the paper's numbers (report.md + PNGs in runs/init_depth/report)
	$(BIN)/delving report runs/init_depth

bench: $(STAMP) ## Training img/s vs the mm peak (ReLU vs PReLU, speed options) + the sweep's cost -> benchmarks/results/
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/sweep_cost.py

bench-sweep: $(STAMP) ## Time the default init x depth sweep from a clean output folder
	$(BIN)/python benchmarks/sweep_time.py

bench-sweep-deep: $(STAMP) ## Time the deep sweep (72 runs) from a clean output folder against its 20-minute budget
	$(BIN)/python benchmarks/sweep_time.py --sweep sweeps/init_depth_deep.yaml --budget 1200

bench-data: $(STAMP) ## Images/s of the FFCV module, the torchvision fallback, the standard recipe and the decode ceiling
	$(BIN)/python benchmarks/data_throughput.py

bench-scaling: $(STAMP) ## Training images/s on 1 and 2 processes (gloo on CPU, NCCL on GPUs) as scaling efficiency vs the paper's
	$(BIN)/python benchmarks/scaling.py

gpu-check: $(STAMP) ## The CUDA path in one run (sized for < 5 min): model A/C steps, bf16, FFCV to GPU, DDP fit+resume, dense eval
	$(BIN)/python benchmarks/gpu_check.py

clean: ## Remove run outputs (keeps .venv)
	rm -rf runs wandb lightning_logs
