#!/usr/bin/env bash
# The GPU check in one call (bench/gpu_check.py says what it measures; docs/gpu.md how to read it): the GPU tests,
# the training step eager and compiled, its peak memory, one epoch of --preset gpu and its EVALUATE, as one table.
# Stopped at 8 minutes (not yet timed on a GPU); `bash bench/gpu_check.sh --small` runs the same parts on a CPU.
# Options go to bench/gpu_check.py (--json FILE keeps the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONUNBUFFERED=1
exec timeout 480 "$python" -m bench.gpu_check "$@"
