#!/usr/bin/env bash
# Runs every test: the C++ suite (GoogleTest via CTest) and the Python suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

cmake -S . -B build/cpp -G Ninja -DCMAKE_BUILD_TYPE=Release -DTORCHCACHEX_BUILD_PYTHON=OFF >/dev/null
cmake --build build/cpp
ctest --test-dir build/cpp --output-on-failure -j 2

python -m pytest -q tests/python
