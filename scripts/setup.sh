#!/usr/bin/env bash
# Installs what torchcachex needs on a fresh Debian machine (idempotent):
# GoogleTest from Debian, the CPU build of torch and the build/test tools
# from PyPI, then torchcachex itself (compiling the C++ engine).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s libgtest-dev >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q libgtest-dev >/dev/null
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
# torch is pinned to the CPU build available here; an unpinned torch pulls CUDA wheels.
python -m pip install -q "torch==2.13.0" numpy
python -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.0" cmake ninja \
  pytest pyarrow polars duckdb
python -m pip install -q --no-build-isolation --no-deps .
