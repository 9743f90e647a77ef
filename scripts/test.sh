#!/usr/bin/env bash
# Runs every test, doing all of its own set-up on a fresh Debian 12 machine:
#   1. Debian packages, .venv (CPython 3.11) and leakprobe built into it
#      (scripts/setup.sh);
#   2. the GoogleTest suite (ctest);
#   3. pytest on CPython 3.11, while a chain at nice 19 builds, in the CPU
#      pytest leaves idle, what the later steps need: the ASan+UBSan and TSan
#      builds, .venv-3.12 and .venv-3.13 with leakprobe built into each, and
#      then lint (clang-format, and clang-tidy with -Wthread-safety over the
#      core, the exporter and the extension: scripts/lint.sh);
#   4. the GoogleTest suite under ASan+UBSan, and the heap tracker, native
#      heap, stack table, fd table, object registry and the exporter's
#      single-flight and CPU budget tests under TSan;
#   5. pytest on CPython 3.12 and 3.13; lint's result last.
#   Some tests run on 3.11 only, as what they test does not depend on the
#   interpreter, and CI's time is budgeted (ONLY_ON_3_11 below):
#      - the scenario suite (tests/test_scenarios.py: 29 programs under
#        `leakprobe run`, 8 at a time, about 2 minutes) tests the verdicts,
#        which are the same native code on every version; the adapters and
#        `leakprobe run` that it goes through are tested on all three;
#      - tests/test_trends.py and tests/test_pool_trends.py (15 s each, the
#        length of a verdict's shortest window): the trend engine's verdicts
#        through the Python API, native code on every version; the series
#        they read (fds, objects, heap, SQLAlchemy's pool) are tested on all
#        three by their own modules, and verdicts by test_work, test_cli,
#        test_asgi and test_celery;
#      - tests/test_prometheus.py: a real Prometheus server scraping
#        leakprobe (the exposition and the targets file, whose writers are
#        tested on all three);
#      - tests/test_report_html.py: the HTML report drawn from a report dict;
#      - the scrape-load tests (tests/test_scrape_load.py and
#        test_metrics.py's concurrent scrapers, 30 s together): the exporter's
#        C++ server threads under load, which never take the GIL (the test
#        that a scrape needs no GIL runs on all three);
#      - tests/test_e2e.py: the example service whole (uvicorn, Celery,
#        PostgreSQL, Redis) under a real Prometheus server, about 75 s, and
#        with its embedded defaults (SQLite, filesystem broker), 18 s: the
#        adapters, the group and the exporter it goes through are tested on
#        all three.
#      Tests marked `slow` (minutes each: the 1,000-task Celery run with one
#      child per task, each found in a scrape, 201 s; the same with 40 tasks
#      runs here) are left out of this command for CI's time budget; run
#      them with `.venv/bin/python -m pytest -m slow tests`.
# Exits non-zero on any failure. Safe to run again on the same machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONDONTWRITEBYTECODE=1

# Each step's heading also says how long the previous one took, so the
# suite's time against CI's budget can be read from any log.
STEP_STARTED=$SECONDS
step() {
  printf '\n==== %s ==== (previous step: %d s, total: %d s)\n' "$*" \
    $((SECONDS - STEP_STARTED)) "$SECONDS"
  STEP_STARTED=$SECONDS
}

step "set-up"
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

step "native build and GoogleTest"
cmake -S . -B build/native -G Ninja -DLEAKPROBE_BUILD_TESTS=ON >/dev/null
cmake --build build/native
ctest --test-dir build/native --output-on-failure -j2 --timeout 120

# What only compiles or reads code goes to the background, at nice 19: the
# sanitizer builds, the 3.12 and 3.13 virtual environments (each builds the
# extension) and lint. pytest runs processes that mostly wait (on servers,
# children, trend windows: about 0.8 of a CPU out of 2), so the chain runs
# in the CPU that pytest leaves idle; at nice 19 it never takes CPU from a
# test (weight 15 against 1024), so what tests wait for is unchanged. Each
# part writes its own log, printed when the foreground awaits it, and a
# failure fails the step that awaits it.
BG_DIR="$(mktemp -d)"
bg_asan_build() {
  cmake -S . -B build/asan -G Ninja -DLEAKPROBE_BUILD_TESTS=ON -DLEAKPROBE_SANITIZE=ON \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build/asan
}
bg_tsan_build() {
  cmake -S . -B build/tsan -G Ninja -DLEAKPROBE_BUILD_TESTS=ON -DLEAKPROBE_TSAN=ON \
    -DCMAKE_BUILD_TYPE=Debug >/dev/null
  cmake --build build/tsan
}
bg_venv_3_12() { leakprobe_venv 3.12; }
bg_venv_3_13() { leakprobe_venv 3.13; }
bg_lint() { scripts/lint.sh; }  # configures build/lint with the extension (-DLEAKPROBE_BUILD_PYTHON=ON)
# Runs the parts one after the other, each in a subshell with errexit (not
# under `||`, where bash would ignore it), its output to <part>.log and its
# status to <part>.rc.
background_chain() {
  local name
  for name in "$@"; do
    (set -euo pipefail; "bg_$name") >"$BG_DIR/$name.log" 2>&1
    echo "$?" >"$BG_DIR/$name.rc"
  done
}
# Awaits one part: prints its log; fails the step when the part failed.
await() {
  local name="$1" waited=$SECONDS
  while [ ! -f "$BG_DIR/$name.rc" ]; do sleep 1; done
  echo "[test] $name (background): waited $((SECONDS - waited)) s for it; its output:"
  cat "$BG_DIR/$name.log"
  local rc
  rc="$(cat "$BG_DIR/$name.rc")"
  [ "$rc" = 0 ] || { echo "[test] $name failed (exit $rc)"; exit 1; }
}
# Its own session (setsid: its pid is its process group), so that an early
# exit of this script stops the whole chain, compilers included. A new
# session is also a new scheduling autogroup where the kernel has them
# (sched_autogroup_enabled): CPU is shared fairly between autogroups
# whatever the nice values inside them, so the chain's autogroup gets nice
# 19 too (a first run without it slowed pytest 3.11 by 13 % and the ASan
# tests by 70 %).
setsid nice -n 19 bash -c "$(declare -f background_chain bg_asan_build bg_tsan_build \
  bg_venv_3_12 bg_venv_3_13 bg_lint leakprobe_venv leakprobe_find_python leakprobe_log)
  if [ -w /proc/self/autogroup ]; then echo 19 >/proc/self/autogroup || true; fi
  BG_DIR='$BG_DIR' REPO_ROOT='$REPO_ROOT'; export REPO_ROOT PYTHONDONTWRITEBYTECODE=1
  set +e
  background_chain asan_build tsan_build venv_3_12 venv_3_13 lint" </dev/null &
BG_PID=$!
trap 'kill -TERM -- "-$BG_PID" 2>/dev/null || true; rm -rf "$BG_DIR"' EXIT

ONLY_ON_3_11=(--ignore=tests/test_scenarios.py --ignore=tests/test_prometheus.py
  --ignore=tests/test_report_html.py --ignore=tests/test_scrape_load.py
  --ignore=tests/test_e2e.py --ignore=tests/test_trends.py --ignore=tests/test_pool_trends.py
  --deselect=tests/test_metrics.py::test_concurrent_scrapes_under_load)
# Every version runs even when an earlier one failed (a failure on 3.11
# would otherwise hide what 3.12 and 3.13 say); the step fails at the end.
FAILED_ON=()
run_pytest() {
  local version="$1" py="$2"
  shift 2
  "$py" -m pytest -p no:cacheprovider --tb=short -m "not slow" tests "$@" || FAILED_ON+=("$version")
}

step "pytest on CPython 3.11 (the chain builds in the background)"
run_pytest 3.11 "$REPO_ROOT/.venv/bin/python"

step "GoogleTest under ASan+UBSan (no recovery)"
await asan_build
# intercept_tls_get_addr=0: GCC 12's LeakSanitizer (Debian 12, glibc 2.36)
# records dynamic-TLS blocks from __tls_get_addr calls (libunwind's, on a
# native stack capture) with bounds it misreads; its leak check at exit
# then read one ("DTLS 11 at 0x811-0x1000001913"), and its tracer died
# with SIGSEGV. It did so on every run of NativeHeapTest.BlocksFromBefore
# StartAreIgnoredWhenFreed alone in one build (CI, 2026-11-30), on none in
# another. Leaks are still found (a leaked malloc is reported with it);
# only dynamic TLS is no longer scanned for pointers.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:intercept_tls_get_addr=0
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
# The 32-thread stress test runs alone: beside it, on two cores, the
# fork and server tests were starved for tens of seconds.
ctest --test-dir build/asan --output-on-failure -j2 --timeout 300 -E ThirtyTwoThreads
# 10 s under ASan (a memory error shows at its first occurrence); TSan below
# keeps 30 s, as a race needs the interleavings.
HEAP_STRESS_SECONDS=10 ctest --test-dir build/asan --output-on-failure --timeout 300 \
  -R ThirtyTwoThreads
unset ASAN_OPTIONS UBSAN_OPTIONS

step "GoogleTest under TSan: the heap tracker, native heap, stack table, fd table, object registry, the exporter's single-flight and CPU budget"
# Only our own concurrent code: civetweb and prometheus-cpp are not built
# with TSan here, so the exporter tests would report their internals.
await tsan_build
TSAN_OPTIONS=halt_on_error=1 HEAP_STRESS_SECONDS=30 \
  ctest --test-dir build/tsan --output-on-failure -j2 --timeout 300 -R 'HeapTracker|NativeHeap|StackTable|FdTable|ObjectRegistry|Mutex|CpuBudget|SingleFlight'

for version in 3.12 3.13; do
  step "pytest on CPython $version"
  await "venv_${version/./_}"
  run_pytest "$version" "$REPO_ROOT/.venv-$version/bin/python" "${ONLY_ON_3_11[@]}"
done

step "lint (ran in the background)"
await lint
wait "$BG_PID"
if [ ${#FAILED_ON[@]} -gt 0 ]; then
  step "pytest failed on CPython ${FAILED_ON[*]}"
  exit 1
fi

step "all tests passed"
