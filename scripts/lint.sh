#!/usr/bin/env bash
# C++ style and static checks: clang-format (every C++ file) and clang-tidy
# (every source of the core, the exporter and, when the build has them, the
# bindings, against the build's compile_commands.json).
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
# Every C++ source of ours that the build compiles (tests and benchmarks
# aside), as listed in the compile database: a file is checked with its own
# flags or not at all.
mapfile -t sources < <(python3 - "$build/compile_commands.json" <<'PY'
import json, os, sys
root = os.getcwd() + "/"
files = {os.path.relpath(e["file"], root) for e in json.load(open(sys.argv[1]))}
print("\n".join(sorted(f for f in files if f.endswith(".cpp") and
      f.startswith(("native/src/", "native/bindings/", "exporters/prometheus/src/")))))
PY
)
echo "[lint] clang-tidy: ${#sources[@]} files"
# Only our own diagnostics are printed; third-party headers are filtered by
# HeaderFilterRegex in .clang-tidy.
clang-tidy --quiet -p "$build" "${sources[@]}" 2> >(grep -v 'warnings generated' >&2)
echo "[lint] clean"
