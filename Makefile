# Two entry points for a fresh clone: `make demo` and `make test`. Each builds .venv itself, with every package pinned
# by constraints.txt to the version the suite passed with (`make constraints` rewrites it from a fresh resolve;
# `make test-latest` runs the fast tests on the newest releases instead).
# TORCH is installed first, pinned. From PyPI on x86-64 Linux that is the CUDA build (several GB of CUDA and nvidia-*
# wheels); the CPU build: `make test TORCH=torch==2.13.0+cpu PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
LATEST_VENV ?= .venv-latest
RESOLVE_VENV ?= .venv-resolve
EXTRAS := test,onnx,app,finetune
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: venv demo test test-latest constraints bench mutants clean app

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) "$(TORCH)"
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[test,onnx,finetune]"
	touch $@

demo: venv
	$(OFFLINE) $(BIN)/python train.py --dataset demo --output_dir demo_output

# The suite includes the web demo's tests (tests/test_app.py), hence the `app` extra.
test: venv $(VENV)/.app-installed
	$(OFFLINE) $(BIN)/python -m pytest

# The fast tests (not `slow`) on the newest releases pyproject.toml admits, in a venv of their own rebuilt every time,
# so that an upstream release that breaks us shows here before users meet it. Torch stays at $(TORCH).
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade -e ".[$(EXTRAS)]"
	$(LATEST_VENV)/bin/python -m pip list --format=freeze | grep -iE '^(transformers|datasets|accelerate|evaluate|huggingface.hub|gradio)=='
	$(OFFLINE) $(LATEST_VENV)/bin/python -m pytest -m "not slow"

# Rewrites constraints.txt (and the tested versions the README names) from a fresh resolve with no constraints.
constraints:
	rm -rf $(RESOLVE_VENV)
	$(PYTHON) -m venv $(RESOLVE_VENV)
	$(RESOLVE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RESOLVE_VENV)/bin/python -m pip install --quiet "$(TORCH)"
	$(RESOLVE_VENV)/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	$(RESOLVE_VENV)/bin/python .ci/update_constraints.py $(RESOLVE_VENV)/bin/python
	rm -rf $(RESOLVE_VENV)

bench: venv
	$(OFFLINE) $(BIN)/python benchmarks/bench.py

# Mutation testing with the fast tests (benchmarks/README.md); mutmut is in the `mutants` extra, not the core install.
mutants: $(VENV)/.mutants-installed
	$(OFFLINE) $(BIN)/python benchmarks/mutants.py

$(VENV)/.mutants-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[mutants]"
	touch $@

# The web demo (app.py) on http://127.0.0.1:7860, serving demo_output/; Gradio is the `app` extra, not the core install.
app: $(VENV)/.app-installed
	$(OFFLINE) $(BIN)/python app.py

$(VENV)/.app-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --constraint $(CONSTRAINTS) -e ".[app]"
	touch $@

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(RESOLVE_VENV) demo_output .pytest_cache .mutants
