# The two set-up commands of the README. Both create ./.venv on first use (Python >= 3.11, as pyproject.toml requires).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test test-fast install clean

# installs the plugin (editable) with nnU-Net, torch and pytest into ./.venv; redone when pyproject.toml changes
$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

install: $(VENV)/.installed

# the main job on the built-in CT phantom demo data
demo: $(VENV)/.installed
	$(BIN)/nnssl_demo

# every test, the slow end-to-end runs through nnU-Net's real commands included (what CI runs)
test: $(VENV)/.installed
	nnUNet_n_proc_DA=0 nnUNet_def_n_proc=2 $(BIN)/python -m pytest

# the fast tests only
test-fast: $(VENV)/.installed
	nnUNet_n_proc_DA=0 nnUNet_def_n_proc=2 $(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) nnssl_demo_work .pytest_cache
