# Two entry points for a fresh machine: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
export PYTHONHASHSEED := 0
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test bench image clean

$(STAMP): pyproject.toml client/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# jobctl depends on jobctl-client (./client, the TensorFlow-free client): installed from here, first.
	$(PY) -m pip install --quiet -e ./client
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) -m demo

test: install
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: install
	$(PY) -m bench.run_all

# Needs Docker (not on the development machines): builds and pushes the training and serving images.
IMAGE ?= ghcr.io/your-org/jobctl
TAG   ?= $(shell $(PY) -c "import importlib.metadata as m; print(m.version('jobctl'))" 2>/dev/null || echo dev)
image:
	docker build -t $(IMAGE)-train:$(TAG) -f Dockerfile .
	docker build -t $(IMAGE)-serve:$(TAG) -f Dockerfile.serve .
	docker push $(IMAGE)-train:$(TAG)
	docker push $(IMAGE)-serve:$(TAG)

clean:
	rm -rf artifacts bench/out .pytest_cache
