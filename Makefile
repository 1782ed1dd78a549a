# `make test` and `make demo` each create .venv if missing, install the project into it, then act.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned for the first install only: these releases install from local files on
# the project's CI machines; set TORCH_PIN= to let pip pick any release pyproject.toml allows.
TORCH_PIN ?= torch==2.14.1 torchvision==0.29.1
FASHION_MNIST := /usr/share/datasets/fashion-mnist
SEEDS ?= 1

.PHONY: test demo report data clean

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

demo: $(VENV)/.installed data
	$(PY) runner.py run --all --scale demo --seeds $(SEEDS)
	$(PY) runner.py table --scale demo
	$(PY) runner.py plot --scale demo

clean:
	rm -rf $(VENV) .pytest_cache checkpoints
