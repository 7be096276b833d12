# The two commands a newcomer runs: `make demo` (the main job) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# where torch comes from: empty = pip's configured index; on a Linux machine whose index serves the CUDA
# build, TORCH_INDEX=https://download.pytorch.org/whl/cpu gets the CPU one
TORCH_INDEX ?=
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install demo test test-slow lint format bench bench-env profiles fashion-mnist clean

# torch first, pinned: an unpinned torch (or one pulled in by another package) is a multi-GB CUDA build
$(VENV)/.installed: pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -c constraints.txt -e '.[agents,dev]'
	@touch $@

install: $(VENV)/.installed

# Debian's package of the real Fashion-MNIST IDX files; tests that need it skip when it is absent
fashion-mnist:
	@if [ -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } || \
		echo "warning: could not install dataset-fashion-mnist; tests on the real data will skip"; \
	else echo "note: Fashion-MNIST not found at $(FASHION_MNIST) (apt-get install -y dataset-fashion-mnist)"; fi

# PPO controllers vs baselines on the shipped Fashion-MNIST TNN and its CPU profile -> results/demo/
demo: install fashion-mnist
	$(VENV)/bin/tnn demo

test: install fashion-mnist
	$(PY) -m pytest

test-slow: install fashion-mnist
	$(PY) -m pytest -m slow || [ $$? = 5 ]  # 5: no slow tests collected

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# CPU latency per level as a ratio to u=1 (levels interleaved in one run)
bench: install
	$(VENV)/bin/tnn bench latency --models resnet20 --batch-sizes 1 64

# environment steps/s (single env through gymnasium.make; the native vec env with 1,024 envs)
bench-env: install fashion-mnist
	$(PY) bench/bench_env.py

# the shipped CPU cost profiles and their figures (run on a quiet machine)
profiles: install
	$(VENV)/bin/tnn profile results/models/fashion_mnist-vgg11-tnn/model.pt --device cpu --batch-size 1 --repeats 200 --out results/profiles/fashion_mnist-vgg11-cpu-b1.json
	$(VENV)/bin/tnn profile resnet20 --device cpu --batch-size 1 --repeats 500 --out results/profiles/cifar10-resnet20-cpu-b1.json
	$(VENV)/bin/tnn profile resnet20 --device cpu --batch-size 1 --repeats 500 --threads 1 --out results/profiles/cifar10-resnet20-cpu-b1-t1.json
	$(VENV)/bin/tnn profile resnet20 --device cpu --batch-size 64 --repeats 60 --out results/profiles/cifar10-resnet20-cpu-b64.json
	$(VENV)/bin/tnn profile results/models/cifar10-vgg16-tnn/model.pt --device cpu --batch-size 64 --repeats 60 --out results/profiles/cifar10-vgg16-cpu-b64.json
	$(VENV)/bin/tnn profile results/models/cifar10-resnext29_8x4d-tnn/model.pt --device cpu --batch-size 64 --repeats 60 --out results/profiles/cifar10-resnext29_8x4d-cpu-b64.json
	$(VENV)/bin/tnn profile results/models/cifar10-densenet_bc_52-tnn/model.pt --device cpu --batch-size 64 --repeats 60 --out results/profiles/cifar10-densenet_bc_52-cpu-b64.json
	$(VENV)/bin/tnn profile results/models/cifar10-resnet20-tnn-l4/model.pt --device cpu --batch-size 64 --repeats 60 --out results/profiles/cifar10-resnet20-l4-cpu-b64.json
	$(VENV)/bin/tnn profile-plot results/profiles/*.json --out results/figures

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
