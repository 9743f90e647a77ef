#!/usr/bin/env bash
# Runs every test, doing all of its own set-up on a fresh Debian 12 machine:
#   1. Debian packages, .venv (CPython 3.11) and leakprobe built into it
#      (scripts/setup.sh);
#   2. lint: clang-format, and clang-tidy with -Wthread-safety over the core,
#      the exporter and the extension (scripts/lint.sh);
#   3. the GoogleTest suite (ctest), then again under ASan+UBSan, and the
#      heap tracker, native heap, stack table, fd table, object registry and
#      the exporter's single-flight and CPU budget tests under TSan;
#   4. pytest on CPython 3.11, 3.12 and 3.13 (.venv, .venv-3.12, .venv-3.13);
#      some tests on 3.11 only, as what they test does not depend on the
#      interpreter, and CI's time is budgeted (ONLY_ON_3_11 below):
#      - the scenario suite (tests/test_scenarios.py: 29 programs under
#        `leakprobe run`, 8 at a time, about 2 minutes) tests the verdicts,
#        which are the same native code on every version; the adapters and
#        `leakprobe run` that it goes through are tested on all three;
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
#      child per task, 335 s) are left out of this command for CI's time
#      budget; run them with `.venv/bin/python -m pytest -m slow tests`.
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

step "lint"
scripts/lint.sh  # configures build/lint with the extension (-DLEAKPROBE_BUILD_PYTHON=ON)

step "GoogleTest under ASan+UBSan (no recovery)"
cmake -S . -B build/asan -G Ninja -DLEAKPROBE_BUILD_TESTS=ON -DLEAKPROBE_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/asan
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
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
cmake -S . -B build/tsan -G Ninja -DLEAKPROBE_BUILD_TESTS=ON -DLEAKPROBE_TSAN=ON \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/tsan
TSAN_OPTIONS=halt_on_error=1 HEAP_STRESS_SECONDS=30 \
  ctest --test-dir build/tsan --output-on-failure -j2 --timeout 300 -R 'HeapTracker|NativeHeap|StackTable|FdTable|ObjectRegistry|CpuBudget|SingleFlight'

ONLY_ON_3_11=(--ignore=tests/test_scenarios.py --ignore=tests/test_prometheus.py
  --ignore=tests/test_report_html.py --ignore=tests/test_scrape_load.py
  --ignore=tests/test_e2e.py
  --deselect=tests/test_metrics.py::test_concurrent_scrapes_under_load)
# Every version runs even when an earlier one failed (a failure on 3.11
# would otherwise hide what 3.12 and 3.13 say); the step fails at the end.
FAILED_ON=()
for version in 3.11 3.12 3.13; do
  step "pytest on CPython $version"
  if [ "$version" != 3.11 ]; then
    leakprobe_venv "$version"
  else
    VENV_PY="$REPO_ROOT/.venv/bin/python"
  fi
  if [ "$version" = 3.11 ]; then
    "$VENV_PY" -m pytest -p no:cacheprovider --tb=short -m "not slow" tests || FAILED_ON+=("$version")
  else
    "$VENV_PY" -m pytest -p no:cacheprovider --tb=short -m "not slow" tests "${ONLY_ON_3_11[@]}" ||
      FAILED_ON+=("$version")
  fi
done
if [ ${#FAILED_ON[@]} -gt 0 ]; then
  step "pytest failed on CPython ${FAILED_ON[*]}"
  exit 1
fi

step "all tests passed"
