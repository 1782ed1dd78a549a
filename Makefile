# `make test` and `make demo` each create .venv if missing, install the project into it, then act.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned for the first install only: these releases install from local files on
# the project's CI machines; set TORCH_PIN= to let pip pick any release pyproject.toml allows.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SEEDS ?= 1
REF_SEEDS ?= 0 1 2 3 4
REVERSE_SEEDS ?= 0 1 2 3
STUDY_SEEDS ?= 0 1 2
# CIFAR-10 as JPEG files in the ImageFolder layout (train/, test/), unpacked once into data/ (git-ignored).
CIFAR10_TAR ?= ../shared/data/cifar10-jpg.tar.gz
CIFAR10 := data/cifar10-jpg
# The study's result sets (SCALE/DATA[@RESULTS]): add an arm here once its records are in results/. The last is the
# gap sweep's level cell (make sweep-roadmap).
STUDY_SETS ?= cpu/fashion-mnist cpu/imagefolder-cifar10-jpg cpu64/fashion-mnist cpu/fashion-mnist@results/sweeps/gap/epochs=40,regularization=0.25
DEMO_DIR ?= demo

.PHONY: test demo reference reverse study sweep sweep-roadmap data clean gpu-check gpu-check-dry

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	test -z "$(TORCH_PIN)" || $(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The offline default dataset: Debian's Fashion-MNIST package.
data:
	@test -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get install -y -q dataset-fashion-mnist >/dev/null || \
	      { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	    else sudo apt-get install -y -q dataset-fashion-mnist >/dev/null; fi; }

test: $(VENV)/.installed data
	$(PY) -m pytest -q

# The whole resnet50 roadmap at the demo scale, trained from scratch into $(DEMO_DIR)/ (not the
# committed results/, whose complete runs would be skipped), two runs at a time.
demo: $(VENV)/.installed data
	$(PY) runner.py run --all --scale demo --seeds $(SEEDS) --jobs 2 --results $(DEMO_DIR)/results --checkpoints $(DEMO_DIR)/checkpoints
	$(PY) runner.py plot --scale demo --results $(DEMO_DIR)/results --out $(DEMO_DIR)/report
	$(PY) runner.py table --scale demo --results $(DEMO_DIR)/results --out $(DEMO_DIR)/report

# The committed reference: the resnet50 roadmap at the cpu scale -> results/, report/, docs/results.md's results.
# Two runs at a time (--jobs 2), one thread each: on two cores that is ~1.5x the images/s of one
# two-thread run. Runs resume, so this can be stopped and started again; REF_SEEDS="5 6" adds seeds.
reference: $(VENV)/.installed data
	$(PY) runner.py run --all --scale cpu --seed $(REF_SEEDS) --jobs 2 --no-progress
	$(PY) runner.py plot --scale cpu --data fashion-mnist
	$(PY) runner.py table --scale cpu --data fashion-mnist --readme docs/results.md

# Beyond the paper: each change taken away from ConvNeXt-T, at the cpu scale -> results/, report/, docs/reverse.md.
reverse: $(VENV)/.installed data
	$(PY) runner.py run --roadmap reverse --all --scale cpu --seed $(REVERSE_SEEDS) --jobs 2 --no-progress
	$(PY) runner.py plot --roadmap reverse --scale cpu --data fashion-mnist
	$(PY) runner.py table --roadmap reverse --scale cpu --data fashion-mnist --readme docs/reverse.md

# Which steps depend on resolution and dataset: the resnet50 roadmap on CIFAR-10 at the cpu scale (32 px)
# and on Fashion-MNIST at 64 px (cpu64), seeds 0-2, two runs at a time; then the study of the sets side by
# side -> report/, the study's answer in README.md and the whole study in docs/results.md. Runs resume, so this can be stopped and started again.
$(CIFAR10)/train:
	mkdir -p $(CIFAR10) && tar -xzf $(CIFAR10_TAR) -C $(CIFAR10)

study: $(VENV)/.installed data $(CIFAR10)/train
	$(PY) runner.py run --all --scale cpu --data imagefolder:$(CIFAR10) --seed $(STUDY_SEEDS) --jobs 2 --no-progress
	$(PY) runner.py table --scale cpu --data imagefolder:$(CIFAR10) --out report
	$(PY) runner.py plot --scale cpu --data imagefolder:$(CIFAR10) --out report
	$(PY) runner.py run --all --scale cpu64 --seed $(STUDY_SEEDS) --jobs 2 --no-progress
	$(PY) runner.py table --scale cpu64 --data fashion-mnist --out report
	$(PY) runner.py plot --scale cpu64 --data fashion-mnist --out report
	$(PY) runner.py study $(STUDY_SETS) --readme README.md --readme docs/results.md

# What closes ConvNeXt-T's gap at small scale: the cells of steps/sweeps/gap.yaml (budget, depth, width,
# regularisation, CIFAR-10), two runs at a time, then its report -> report/sweep-gap.*, docs/sweeps.md, README.
# Runs resume, so this can be stopped and started again; `runner.py sweep gap --dry-run --jobs 2` says what is left.
sweep: $(VENV)/.installed data $(CIFAR10)/train
	$(PY) runner.py sweep gap --jobs 2 --no-progress
	$(PY) runner.py sweep-report gap --readme README.md --readme docs/sweeps.md

# The whole resnet50 roadmap, seeds 0-1, in the gap sweep's cell where ConvNeXt-T and the modern ResNet-50 end
# level within noise (40 epochs, regularisation 0.25): which steps reproduce there? Trained into the cell's own
# folder, so its endpoint records are reused; the same command resumes. The classic-recipe ResNet-50 trains 12
# epochs, the paper's 90:300 against the modern recipe's 40 (the cpu scale's 2 go with its 5); no modern-recipe
# run reads them, so they are no part of its identity and the endpoints' records count. Then its table and figure
# -> report/sweep-gap-roadmap/, and the study with it as an arm (STUDY_SETS).
LEVEL_CELL := results/sweeps/gap/epochs=40,regularization=0.25
LEVEL_CELL_REPORT := --scale cpu --data fashion-mnist --results '$(LEVEL_CELL)' --out report/sweep-gap-roadmap
sweep-roadmap: $(VENV)/.installed data
	$(PY) runner.py run --all --set scale.epochs=40 --set scale.regularization=0.25 --set scale.classic_epochs=12 \
		--scale cpu --data fashion-mnist --seed 0 1 --jobs 2 --no-progress --results '$(LEVEL_CELL)'
	$(PY) runner.py plot $(LEVEL_CELL_REPORT)
	$(PY) runner.py table $(LEVEL_CELL_REPORT)
	$(PY) runner.py study $(STUDY_SETS) --readme README.md --readme docs/results.md

# Everything that needs a GPU, in one command of a few minutes (roadmap/gpucheck.py): bench eager and
# compiled against timm, a short run of every step on CIFAR-10, 2 processes on one GPU (one failing).
# On a lent GPU machine its own python3 (torch, timm installed, nothing to download) runs it; here, the venv.
GPU_PY ?= $(shell test -x $(PY) && echo $(PY) || echo python3)
gpu-check:
	$(GPU_PY) -m roadmap.gpucheck
gpu-check-dry:
	$(GPU_PY) -m roadmap.gpucheck --dry-run

clean:
	rm -rf $(VENV) .pytest_cache checkpoints results/checkpoints $(DEMO_DIR)
