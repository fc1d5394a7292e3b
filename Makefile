# Two entry points for a fresh clone: `make demo` and `make test`. Each builds .venv itself.
# TORCH is installed first, pinned. From PyPI on x86-64 Linux that is the CUDA build (several GB of CUDA and nvidia-*
# wheels); the CPU build: `make test TORCH=torch==2.13.0+cpu PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu`.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1

.PHONY: venv demo test bench mutants clean app

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

demo: venv
	$(OFFLINE) $(BIN)/python train.py --dataset demo --output_dir demo_output

# The suite includes the web demo's tests (tests/test_app.py), hence the `app` extra.
test: venv $(VENV)/.app-installed
	$(OFFLINE) $(BIN)/python -m pytest

bench: venv
	$(OFFLINE) $(BIN)/python benchmarks/bench.py

# Mutation testing with the fast tests (benchmarks/README.md); mutmut is in the `mutants` extra, not the core install.
mutants: $(VENV)/.mutants-installed
	$(OFFLINE) $(BIN)/python benchmarks/mutants.py

$(VENV)/.mutants-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[mutants]"
	touch $@

# The web demo (app.py) on http://127.0.0.1:7860, serving demo_output/; Gradio is the `app` extra, not the core install.
app: $(VENV)/.app-installed
	$(OFFLINE) $(BIN)/python app.py

$(VENV)/.app-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[app]"
	touch $@

clean:
	rm -rf $(VENV) demo_output .pytest_cache .mutants
