#!/usr/bin/env bash
# Shared set-up for scripts/demo.sh, scripts/test.sh and scripts/bench.py users:
# installs the Debian packages the build needs (only the missing ones), creates
# the virtual environment at .venv (CPython 3.11) and installs leakprobe with
# its test extras into it. Safe to run again: it only does what is missing,
# and the native build is incremental (build/<wheel tag>).
#
# Usage: source scripts/setup.sh            (sets REPO_ROOT, VENV_PY; never exports LEAKPROBE_* names: those are options)
#        scripts/setup.sh                   (just set up)
#        SETUP_PYTHON=3.12 scripts/setup.sh  (.venv-3.12 with that CPython)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export REPO_ROOT

APT_PACKAGES=(
  build-essential cmake ninja-build pkg-config
  libunwind-dev libdw-dev libabsl-dev libspdlog-dev libgtest-dev prometheus-cpp-dev
  clang-format clang-tidy
  prometheus            # promtool, and a real Prometheus server for tests
  postgresql            # a real PostgreSQL server for the SQLAlchemy adapter's tests
  redis-server          # a real Redis broker for the Celery integration's tests
  chromium              # headless rendering of the HTML report in its test
)

leakprobe_log() { printf '[setup] %s\n' "$*" >&2; }

leakprobe_apt() {
  local missing=()
  local pkg
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  # Never libunwind-14-dev beside libunwind-dev: they conflict on the headers.
  if [ ${#missing[@]} -gt 0 ]; then
    leakprobe_log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
}

# Prints the path of a CPython interpreter of version $1 (e.g. 3.11), or fails.
leakprobe_find_python() {
  local want="$1" cand
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for cand in $(ls -d "$root"/versions/"$want".* 2>/dev/null | sort -V -r); do
      [ -x "$cand/bin/python$want" ] && { echo "$cand/bin/python$want"; return 0; }
    done
  fi
  for cand in "python$want" python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       [ "$("$cand" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$want" ]; then
      command -v "$cand"; return 0
    fi
  done
  return 1
}

leakprobe_venv() {
  local version="${1:-3.11}" venv
  if [ "$version" = "3.11" ]; then venv="$REPO_ROOT/.venv"; else venv="$REPO_ROOT/.venv-$version"; fi
  if [ ! -x "$venv/bin/python" ]; then
    local py
    py="$(leakprobe_find_python "$version")" || {
      leakprobe_log "CPython $version not found (looked in pyenv and PATH); install it, e.g. 'pyenv install $version'"
      return 1
    }
    leakprobe_log "creating $venv with $py"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
  fi
  leakprobe_log "building and installing leakprobe into $venv"
  "$venv/bin/python" -m pip install -q "$REPO_ROOT[test]"
  # pybind11 at the version the build requires (pyproject.toml): scripts/lint.sh
  # configures the extension's sources against it.
  "$venv/bin/python" -m pip install -q "$(grep -o 'pybind11==[0-9.]*' "$REPO_ROOT/pyproject.toml")"
  VENV_PY="$venv/bin/python"
  export VENV_PY
}

leakprobe_apt
leakprobe_venv "${SETUP_PYTHON:-3.11}"
