#!/usr/bin/env bash
# Everything GPU-side in one command (bench/gpu_check.py): under 8 minutes on one H100.
#
#   bench/gpu_check.sh [--cpu-smoke] [--out FOLDER]     # FOLDER defaults to $OUT, else bench/out/gpu_check
#
# On a GPU machine with no package index, the packages its image lacks travel as wheels in .whl/ (made here
# by bench/gpu_wheels.sh) and are installed into /tmp/site first. The machine's own torch is used as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}  # a GPU machine's python3 holds its torch; set PYTHON=.venv/bin/python here
if compgen -G ".whl/*.whl" > /dev/null && ! "$PYTHON" -c "import pydantic, sqlalchemy, alembic" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PYTHON" -m bench.gpu_check "$@"
