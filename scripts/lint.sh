#!/usr/bin/env bash
# C++ style and static checks: clang-format (every C++ file) and clang-tidy
# (the core and the exporter, against build/native/compile_commands.json).
# Usage: scripts/lint.sh [build dir with compile_commands.json]
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/native}"

mapfile -t files < <(git ls-files -co --exclude-standard '*.cpp' '*.h' | grep -v '^build/')
echo "[lint] clang-format: ${#files[@]} files"
clang-format --dry-run --Werror "${files[@]}"

[ -f "$build/compile_commands.json" ] || {
  echo "[lint] $build/compile_commands.json is missing: configure the native build first" >&2
  exit 1
}
mapfile -t sources < <(ls native/src/*.cpp exporters/prometheus/src/*.cpp)
echo "[lint] clang-tidy: ${#sources[@]} files"
# Only our own diagnostics are printed; third-party headers are filtered by
# HeaderFilterRegex in .clang-tidy.
clang-tidy --quiet -p "$build" "${sources[@]}" 2> >(grep -v 'warnings generated' >&2)
echo "[lint] clean"
