#!/usr/bin/env bash
# Every GPU check in one command, on a machine with no network and no checkpoint:
#
#   tests/benchmarks/device/run.sh [--out DIR] [--cpu] [--smoke] [--model DIR]
#
# The train-step bench on the full LTX-2.3 (random bf16 weights built on the GPU) beside
# the plan, one training with a validation entry, and an `extend` with its LoRA. JSON and
# the log go to --out DIR, else $OUT. What the machine's Python lacks (diffusers, pydantic,
# PyAV, ...) comes from the wheels `make device-wheels` put in .whl/, with the prepared
# dataset in .whl/kit (the GPU machine has no PySceneDetect). `--cpu --smoke` runs the same
# path on the CPU at a size the test suite takes (tests/trainer/test_speed_kit.py).
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
python=${PYTHON:-python3}
cd "$root"
if [[ " $* " == *" --cpu "* ]]; then
    export CUDA_VISIBLE_DEVICES=""
fi
if ! "$python" -c "import diffusers, pydantic, pydantic_settings, av" 2>/dev/null; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "run.sh: this Python lacks diffusers/pydantic/PyAV and there are no wheels in" \
             ".whl/: run 'make device-wheels' where pip can reach a registry" >&2
        exit 2
    fi
    site=${KIT_SITE:-/tmp/ltx-kit-site}
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$root/contract:$root/trainer:$root/tests/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$python" "$root/tests/benchmarks/device/kit.py" "$@"
