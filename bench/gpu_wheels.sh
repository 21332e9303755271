#!/usr/bin/env bash
# The wheels a GPU machine (no package index; Python 3.12, its own torch, transformers and peft) needs to run
# bench/gpu_check.sh, downloaded here into .whl/ (ignored by git; carried with the tree, ~10 MB):
#
#   bench/gpu_wheels.sh            # then: device run with carry [".whl"], command "bench/gpu_check.sh"
#
# Versions are this project's .venv's, so the GPU machine runs what the tests here ran.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PACKAGES=(pydantic pydantic_core pydantic-settings annotated-types typing-inspection python-dotenv
          SQLAlchemy greenlet alembic Mako)
PINS=()
for name in "${PACKAGES[@]}"; do
    PINS+=("$name==$(.venv/bin/python -m pip show "$name" | sed -n 's/^Version: //p')")
done
mkdir -p .whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "${PINS[@]}"
ls -la .whl
