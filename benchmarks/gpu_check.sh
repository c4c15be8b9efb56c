#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py) on a machine without network: a venv over the
# system's torch and numpy, the harness's other dependencies from a folder of wheels
# downloaded beforehand (gpu_check.py's docstring says how), all with --no-deps.
# Usage: bash benchmarks/gpu_check.sh WHEELS_DIR [gpu_check.py options]
set -euo pipefail
wheels=${1:?usage: bash benchmarks/gpu_check.sh WHEELS_DIR [gpu_check.py options]}
shift
cd "$(dirname "$0")/.."
venv=${GPU_CHECK_VENV:-.venv-gpu}
test -x "$venv/bin/python" || python3 -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --no-index --no-deps "$wheels"/*.whl
"$venv/bin/pip" install -q --no-index --no-deps --no-build-isolation -e .
exec "$venv/bin/python" benchmarks/gpu_check.py "$@"
