#!/usr/bin/env bash
# CI step: sanitizers and bounded fuzzing (issue 4). Runs from a fresh clone
# on a fresh Debian machine and takes well under 10 minutes on 2 cores:
#
#   1. installs clang (with its sanitizer and libFuzzer runtimes), GoogleTest,
#      cmake and ninja with apt-get where they are missing;
#   2. scripts/sanitize.sh: every C++ test under ASan + UBSan, the threaded
#      store tests under TSan;
#   3. scripts/fuzz.sh: each libFuzzer target for FUZZ_TIME seconds (default
#      45; two targets at a time), starting from the committed seed corpus
#      fuzz/corpus/ (which replays every committed regression input first).
#      The CI build is unoptimized (build/fuzz-ci, Debug): it compiles 4x
#      faster, which matters more for a 45 s run than executions per second.
#      Long campaigns use scripts/fuzz.sh's optimized build/fuzz.
#
# Exits non-zero if a test fails, a sanitizer reports, or a fuzzer finds a
# crash; the fuzzer's reproducer is then in build/fuzz-ci/artifacts/<target>/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ_TIME="${FUZZ_TIME:-45}"

T0=$(date +%s)
LAST=$T0
step_done() {
  local now
  now=$(date +%s)
  printf '== %-34s %4ds (total %ds)\n' "$1" $((now - LAST)) $((now - T0))
  LAST=$now
}

# ---- 1. tools -------------------------------------------------------------
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
have_clang() {
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    command -v "$c" >/dev/null 2>&1 && return 0
  done
  return 1
}
have_fuzzer_runtime() {
  # libFuzzer ships in clang's runtime package (libclang-rt-<v>-dev on Debian).
  compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-*.a" >/dev/null
}
PKGS=()
have_clang || PKGS+=(clang)
have_fuzzer_runtime || PKGS+=(libclang-rt-dev)
[[ -f /usr/include/gtest/gtest.h ]] || PKGS+=(libgtest-dev)
command -v cmake >/dev/null 2>&1 || PKGS+=(cmake)
command -v ninja >/dev/null 2>&1 || PKGS+=(ninja-build)
if [[ ${#PKGS[@]} -gt 0 ]]; then
  echo "installing: ${PKGS[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null
    $SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}" >/dev/null
  }
fi
step_done "tools"

# ---- 2. sanitizers ----------------------------------------------------------
status=0
bash scripts/sanitize.sh asan || status=1
step_done "ASan + UBSan (build + ctest)"
bash scripts/sanitize.sh tsan || status=1
step_done "TSan (build + threaded tests)"

# ---- 3. fuzzing -------------------------------------------------------------
bash scripts/fuzz.sh --build-dir build/fuzz-ci --build-type Debug --fresh --parallel --time "$FUZZ_TIME" || status=1
step_done "fuzzing (build + ${FUZZ_TIME}s per target)"

if [[ $status -ne 0 ]]; then
  echo "ci_reliability: FAILED"
  exit 1
fi
echo "ci_reliability: all green in $(( $(date +%s) - T0 ))s"
