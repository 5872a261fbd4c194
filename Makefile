# Everything installs itself: a fresh machine of this kind needs only `make demo` / `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST := $(PY) -m pytest

.PHONY: install system-deps demo test test-slow docs bench clean team-up team-down docker-config device-check-cpu device-wheels

$(STAMP): pyproject.toml plugins/pyproject.toml runtime/pyproject.toml
	python3 -m venv $(VENV)
	# The local CPU build of torch first: an open `torch` requirement would pull CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e runtime -e '.[test]' -e plugins
	touch $(STAMP)

install: $(STAMP)

# PostgreSQL (sweeps, team mode) and Chromium (Turing-test browser test) from Debian.
system-deps:
	bash scripts/system-deps.sh

demo: install
	$(VENV)/bin/augforge demo

test: install system-deps
	$(PYTEST) -q

test-slow: install system-deps
	$(PYTEST) -q -m slow

# The docs site (mkdocs.yml, docs/): warnings are errors.
docs: install
	$(VENV)/bin/mkdocs build --strict -d site

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .cache runs

# Team mode without docker: local PostgreSQL + `mlflow server --serve-artifacts` (docs/team-mode.md).
team-up: install
	bash scripts/team-up.sh

team-down:
	bash scripts/team-down.sh

# Validate docker/compose.yaml (+ GPU overlay) without a docker engine.
docker-config:
	cd docker && AUGFORGE_ENV_FILE=$${AUGFORGE_ENV_FILE:-env.example} docker-compose -f compose.yaml -f compose.gpu.yaml config -q

# The GPU check (docs/scaling.md, "GPU") at toy size on this CPU: what the slow test runs.
device-check-cpu: install
	PYTHON=$(PY) bash scripts/device-check.sh outputs/device-check-cpu --cpu --tiny

# optuna + mlflow-skinny (the sweep) and onnxscript (the dynamo ONNX exporter; the TorchScript one
# refuses sngan) with the dependencies the GPU machine lacks, as wheels for its Python 3.12
# (carried as .device-wheels, ~23 MiB of the 64 allowed).
DEVICE_PLATFORMS := --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
device-wheels:
	rm -rf .device-wheels
	python3 -m pip download -q --only-binary=:all: --python-version 3.12 $(DEVICE_PLATFORMS) -d .device-wheels optuna mlflow-skinny onnxscript
	# already on the GPU machine (docs/scaling.md, "GPU"): do not carry or shadow them
	rm -f .device-wheels/numpy-* .device-wheels/onnx-* .device-wheels/sympy-* .device-wheels/mpmath-* \
	      .device-wheels/click-* .device-wheels/tqdm-*
	du -sh .device-wheels
