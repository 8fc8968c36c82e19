#!/usr/bin/env bash
# Developer install: builds the C++ extension and installs torchcachex in
# editable mode (Python sources are used from python/torchcachex directly).
# Serialized with a lock so that concurrent callers do not clash.
set -euo pipefail
cd "$(dirname "$0")/.."
exec 9>/tmp/torchcachex_dev_install.lock
flock 9
pip install --no-build-isolation --no-deps -q -e . 2>&1 | grep -v "Running pip as the 'root'" || true
python -c "import torchcachex._core" 
