#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (clang, ASan + UBSan) and runs each
# for a bounded time or number of executions, starting from the committed
# seed corpus (fuzz/corpus/<target>/). See fuzz/README.md.
#
#   scripts/fuzz.sh                        every target, 60 s each
#   scripts/fuzz.sh --time 600 fuzz_json   one target, 10 minutes
#   scripts/fuzz.sh --runs 10000000        every target, 10 million executions each
#   scripts/fuzz.sh --make-corpus          rewrite fuzz/corpus/ with our own writer
#
# Options:
#   --time S         stop each target after S seconds (default 60)
#   --runs N         stop each target after N executions (overrides --time)
#   --build-dir D    build directory (default build/fuzz)
#   --build-type T   CMake build type of a new build directory (default
#                    RelWithDebInfo; Debug compiles about 4x faster and runs
#                    about 2-3x slower: what a short CI run wants)
#   --no-build       use the binaries already in the build directory
#   --make-corpus    (re)write the seed corpus fuzz/corpus/ (keeping the
#                    regression_* and legacy_* inputs) and exit
#   --fresh          forget the corpus grown by earlier runs (start from the seeds)
#   --parallel       run the targets two at a time
#   --jobs J         run J fuzzing processes per target, sharing its corpus
#                    (--runs is then split between them; the summary adds
#                    up their executions and executions/s)
# Environment: CXX (a clang++; default clang++, then clang++-14..19), NICE
# (niceness of the fuzzing processes, default 19).
#
# Each target grows its own corpus in <build-dir>/corpus/<target>/ (kept
# between runs; the committed seeds are read-only inputs), writes crash
# reproducers to <build-dir>/artifacts/<target>/ and its log to
# <build-dir>/logs/<target>.log. Prints one summary line per target
# (executions, executions/s) and exits non-zero if any target found a crash,
# a leak, a timeout or an out-of-memory input.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TARGETS_ALL=(fuzz_segment_reader fuzz_store_open fuzz_schema_json fuzz_json)
TIME=60
RUNS=""
BUILD_DIR="build/fuzz"
BUILD_TYPE="RelWithDebInfo"
BUILD=1
MAKE_CORPUS=0
FRESH=0
PARALLEL=0
JOBS=1
TARGETS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --time) TIME="$2"; shift 2 ;;
    --runs) RUNS="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --build-type) BUILD_TYPE="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --make-corpus) MAKE_CORPUS=1; shift ;;
    --fresh) FRESH=1; shift ;;
    --parallel) PARALLEL=1; shift ;;
    --jobs) JOBS="$2"; shift 2 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    fuzz_*) TARGETS+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=("${TARGETS_ALL[@]}")
NICE="${NICE:-19}"

find_clang() {
  if [[ -n "${CXX:-}" ]]; then echo "$CXX"; return; fi
  for c in clang++ clang++-19 clang++-18 clang++-17 clang++-16 clang++-15 clang++-14; do
    if command -v "$c" >/dev/null 2>&1; then echo "$c"; return; fi
  done
  echo "fuzz.sh: clang++ not found (apt-get install clang libclang-rt-dev, or set CXX)" >&2
  exit 1
}

if [[ $BUILD -eq 1 ]]; then
  CLANGXX="$(find_clang)"
  GEN=()
  command -v ninja >/dev/null 2>&1 && GEN=(-G Ninja)
  if [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]]; then
    cmake -S . -B "$BUILD_DIR" "${GEN[@]}" -DCMAKE_BUILD_TYPE="$BUILD_TYPE" \
      -DCMAKE_CXX_COMPILER="$CLANGXX" \
      -DTORCHCACHEX_BUILD_FUZZERS=ON -DTORCHCACHEX_BUILD_PYTHON=OFF \
      -DTORCHCACHEX_BUILD_TESTS=OFF -DTORCHCACHEX_BUILD_EXAMPLES=OFF >/dev/null
  fi
  if [[ $MAKE_CORPUS -eq 1 ]]; then
    nice -n "$NICE" cmake --build "$BUILD_DIR" --target fuzz_make_corpus
  else
    nice -n "$NICE" cmake --build "$BUILD_DIR" --target "${TARGETS[@]}"
  fi
fi

if [[ $MAKE_CORPUS -eq 1 ]]; then
  # Regression inputs (regression_*) and files of older format revisions
  # (legacy_*: e.g. the XXH64 whole-file checksum, before XXH3), which our
  # writer no longer produces, are kept; everything else is rewritten.
  for t in "${TARGETS_ALL[@]}"; do
    [[ -d "fuzz/corpus/$t" ]] && find "fuzz/corpus/$t" -type f ! -name 'regression_*' ! -name 'legacy_*' -delete
  done
  "$BUILD_DIR/fuzz_make_corpus" fuzz/corpus
  # Arrow files written by pyarrow (tests/cpp/data): other writers' layouts
  # (several batches, validity bitmaps, large offsets, compression, dictionaries).
  for f in tests/cpp/data/pyarrow_*.arrow; do
    [[ $(stat -c %s "$f") -le 4096 ]] && cp "$f" fuzz/corpus/fuzz_segment_reader/
  done
  du -sh fuzz/corpus/*
  exit 0
fi

# Scratch files of fuzz_store_open go to a tmpfs when there is one (3-5x
# faster than a disk-backed /tmp).
if [[ -z "${TMPDIR:-}" && -d /dev/shm && -w /dev/shm ]]; then export TMPDIR=/dev/shm; fi
# Allocation stacks are only needed to read a report: reproduce a crash with
# the default options to get them back.
export ASAN_OPTIONS="${ASAN_OPTIONS:-malloc_context_size=5:detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

run_target() {
  local t="$1"
  local bin="$ROOT/$BUILD_DIR/$t"
  local work="$ROOT/$BUILD_DIR/corpus/$t"
  local art="$ROOT/$BUILD_DIR/artifacts/$t"
  local logs="$ROOT/$BUILD_DIR/logs"
  [[ $FRESH -eq 1 ]] && rm -rf "$work"
  mkdir -p "$work" "$art" "$logs"
  local args=(-print_final_stats=1 -artifact_prefix="$art/" -timeout=25 -rss_limit_mb=2048)
  if [[ -n "$RUNS" ]]; then args+=(-runs=$(((RUNS + JOBS - 1) / JOBS))); else args+=(-max_total_time="$TIME"); fi
  [[ -f "fuzz/$t.dict" ]] && args+=(-dict="$ROOT/fuzz/$t.dict")
  local rc=0 pids=() logfiles=() j log
  for ((j = 0; j < JOBS; j++)); do
    log="$logs/$t.log"; [[ $JOBS -gt 1 ]] && log="$logs/$t.$j.log"
    logfiles+=("$log")
    nice -n "$NICE" "$bin" "${args[@]}" "$work" "$ROOT/fuzz/corpus/$t" >"$log" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || rc=$?; done
  local execs=0 rate=0 e r
  for log in "${logfiles[@]}"; do
    e=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    r=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    execs=$((execs + ${e:-0})); rate=$((rate + ${r:-0}))
  done
  if [[ $rc -eq 0 ]]; then
    printf '%-22s ok     executions %-10s exec/s %-7s processes %s corpus %s files\n' "$t" "$execs" "$rate" \
      "$JOBS" "$(ls "$work" | wc -l)"
  else
    printf '%-22s FAILED (exit %d) after %s executions; reproducer in %s; logs %s\n' "$t" "$rc" "$execs" \
      "$art" "${logfiles[*]}"
    grep -h -m5 -E 'ERROR|FUZZ_CHECK|runtime error|SUMMARY' "${logfiles[@]}" || true
  fi
  return $rc
}

status=0
if [[ $PARALLEL -eq 1 ]]; then
  pids=()
  for ((i = 0; i < ${#TARGETS[@]}; i += 2)); do
    run_target "${TARGETS[i]}" & pids=($!)
    if [[ $((i + 1)) -lt ${#TARGETS[@]} ]]; then run_target "${TARGETS[i + 1]}" & pids+=($!); fi
    for p in "${pids[@]}"; do wait "$p" || status=1; done
  done
else
  for t in "${TARGETS[@]}"; do run_target "$t" || status=1; done
fi
exit $status
