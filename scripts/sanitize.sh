#!/usr/bin/env bash
# The C++ tests under sanitizers (clang):
#   asan  every CTest test under AddressSanitizer + UndefinedBehaviorSanitizer
#         (+ LeakSanitizer), build/asan
#   tsan  the threaded store tests (tests/cpp/store*_test.cc: background
#         writer, concurrent readers and writers, Close racing with lookups)
#         under ThreadSanitizer, build/tsan (target torchcachex_threaded_tests)
#
#   scripts/sanitize.sh            both
#   scripts/sanitize.sh asan       one of them
#   scripts/sanitize.sh tsan
#
# Any sanitizer report aborts the test process (no recovery), so a report is
# a failed test. Builds are unoptimized (-O0 -g): on 2 cores compiling the
# GoogleTest files dominates, and -O0 compiles them about 4x faster than -O2
# while the tests still run in seconds.
# Environment: CXX (a clang++; default clang++, then clang++-14..19), JOBS
# (parallel build and test jobs, default nproc), TSAN_TESTS (a GoogleTest
# filter for the TSan run, default '*').
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

MODES=("$@")
[[ ${#MODES[@]} -gt 0 ]] || MODES=(asan tsan)
JOBS="${JOBS:-$(nproc)}"
TSAN_TESTS="${TSAN_TESTS:-*}"

find_clang() {
  if [[ -n "${CXX:-}" ]]; then echo "$CXX"; return; fi
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
  echo "sanitize.sh: clang++ not found (apt-get install clang libclang-rt-dev, or set CXX)" >&2
  exit 1
}
CLANGXX="$(find_clang)"
GEN=()
command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)

configure_and_build() {
  local dir="$1" sanitize="$2"
  shift 2
  cmake -S . -B "$dir" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_COMPILER="$CLANGXX" \
    -DTORCHCACHEX_SANITIZE="$sanitize" -DTORCHCACHEX_BUILD_PYTHON=OFF \
    -DTORCHCACHEX_BUILD_TESTS=ON -DTORCHCACHEX_BUILD_EXAMPLES=OFF >/dev/null
  cmake --build "$dir" --parallel "$JOBS" "$@"
}

status=0
for mode in "${MODES[@]}"; do
  case "$mode" in
    asan)
      echo "== ASan + UBSan: every C++ test (build/asan)"
      configure_and_build build/asan "address,undefined"
      ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1" \
      UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
        ctest --test-dir build/asan --output-on-failure -j "$JOBS" || status=1
      ;;
    tsan)
      echo "== TSan: threaded store tests, filter '$TSAN_TESTS' (build/tsan)"
      configure_and_build build/tsan "thread" --target torchcachex_threaded_tests
      TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1" \
        build/tsan/torchcachex_threaded_tests --gtest_filter="$TSAN_TESTS" --gtest_brief=1 || status=1
      ;;
    *) echo "sanitize.sh: unknown mode '$mode' (asan or tsan)" >&2; exit 2 ;;
  esac
done
exit $status
