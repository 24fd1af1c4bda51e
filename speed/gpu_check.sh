#!/usr/bin/env bash
# One command for a lent GPU: the CUDA tests, the three speed benchmarks on the 7B-shaped random model, and
# one Markdown table, all under one folder ($OUT if set, else runs/gpu-check-<UTC time>); about 8 minutes
# at most on one H100. `--dry-run` runs the same steps on CPU at tiny sizes. Details: speed/gpu_check.py.
#
#   bash speed/gpu_check.sh [--dry-run] [--out DIR] [--steps a,b] [--workers N]
#
# Nothing is installed: the repository is put on PYTHONPATH, so a machine without network works as long as
# its python (PYTHON, default python3) has torch with CUDA, triton, transformers, accelerate and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "gpu-check: missing dependency: no '$PYTHON' on PATH (set PYTHON=/path/to/python)" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" speed/gpu_check.py "$@"
