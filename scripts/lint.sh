#!/usr/bin/env bash
# C++ style and static checks: clang-format (every C++ file) and clang-tidy,
# with clang's -Wthread-safety (the ABSL_GUARDED_BY annotations), over every
# source of ours in a compile database that includes the Python extension's
# (native/bindings, the PEP 445 hooks, the frame walker).
# Usage: scripts/lint.sh [build dir]
#   Without an argument it configures build/lint (configure only, nothing is
#   compiled) with -DLEAKPROBE_BUILD_PYTHON=ON against .venv's Python and
#   pybind11 (scripts/setup.sh installs both). A build dir given must have
#   been configured that way.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -eq 0 ]; then
  build=build/lint
  py=.venv/bin/python
  [ -x "$py" ] || { echo "[lint] $py is missing: run scripts/setup.sh first" >&2; exit 1; }
  cmake -S . -B "$build" -G Ninja -DLEAKPROBE_BUILD_PYTHON=ON -DLEAKPROBE_BUILD_TESTS=ON \
    -DPython_EXECUTABLE="$py" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" >/dev/null
else
  build="$1"
fi

mapfile -t files < <(git ls-files -co --exclude-standard '*.cpp' '*.h' | grep -v '^build/')
echo "[lint] clang-format: ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"

[ -f "$build/compile_commands.json" ] || {
  echo "[lint] $build/compile_commands.json is missing: configure the native build first" >&2
  exit 1
}
# Every source of ours that the build compiles (tests and benchmarks aside),
# as listed in the compile database: a file is checked with its own flags or
# not at all. The extension's must be there. Paths are compared resolved:
# CMake writes the logical path it was run from (a checkout reached through
# a symlink keeps it), Python's getcwd() the physical one; clang-tidy gets
# each file exactly as the database names it.
mapfile -t sources < <(python3 - "$build/compile_commands.json" <<'PY'
import json, os, sys
root = os.path.realpath(os.getcwd())
ours = {}
for entry in json.load(open(sys.argv[1])):
    path = os.path.join(entry["directory"], entry["file"])
    rel = os.path.relpath(os.path.realpath(path), root)
    if rel.endswith((".cpp", ".c")) and rel.startswith(
            ("native/src/", "native/bindings/", "exporters/prometheus/src/")):
        ours[rel] = entry["file"]
for required in ("native/bindings/module.cpp", "native/src/heap/pymem_hooks.cpp",
                 "native/src/stacks/python_frames.c"):
    if required not in ours:
        sys.exit(f"[lint] {required} is not in {sys.argv[1]}: "
                 "configure it with -DLEAKPROBE_BUILD_PYTHON=ON")
print("\n".join(ours[rel] for rel in sorted(ours)))
PY
)
[ "${#sources[@]}" -gt 0 ] || exit 1
echo "[lint] clang-tidy (with -Wthread-safety): ${#sources[@]} files"
# Only our own diagnostics are printed; third-party headers are filtered by
# HeaderFilterRegex in .clang-tidy. The thread-safety warnings are checks
# there (clang-diagnostic-thread-safety*), so they are errors.
# One clang-tidy per few files, on every core (xargs fails if any does).
printf '%s\0' "${sources[@]}" |
  xargs -0 -n 4 -P "$(nproc)" clang-tidy --quiet -p "$build" --extra-arg=-Wthread-safety \
  2> >(grep -v 'warnings generated' >&2)
echo "[lint] clean"
