#!/usr/bin/env bash
# Installs torchcachex and runs the basic example twice: the first run fills
# the cache, the second is served from it (and says how much faster it was).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
rm -rf examples/cache
python examples/basic_usage.py
python examples/basic_usage.py
