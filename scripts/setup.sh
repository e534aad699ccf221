#!/usr/bin/env bash
# Sets up a Python >= 3.12 and the project's virtual environment (.venv), cached across runs.
#
# 1. find a Python >= 3.12 (PATH, pyenv, or our own cached build);
# 2. where none exists, build CPython 3.13 from Debian's source package into the cache;
# 3. create .venv and install the package editable with its test extras, skipped when nothing changed.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SMUG_CACHE:-$HOME/.cache/smug-plugin}
VENV=${SMUG_VENV:-$ROOT/.venv}
BUILT_PY=$CACHE/python3.13/bin/python3.13

is_recent() { "$1" -c 'import sys, ssl, sqlite3, venv; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; }

find_python() {
  local c
  if [ -n "${SMUG_PYTHON:-}" ]; then echo "$SMUG_PYTHON"; return; fi
  [ "${SMUG_FORCE_BUILD:-0}" = 1 ] && { is_recent "$BUILT_PY" && echo "$BUILT_PY"; return; }
  for c in python3.13 python3.12 python3.14 python3; do
    if command -v "$c" >/dev/null 2>&1 && is_recent "$(command -v "$c")"; then command -v "$c"; return; fi
  done
  # Newest first: our own build, then pyenv's interpreters (a pyenv shim on PATH may not be activated).
  for c in "$BUILT_PY" $(ls -d "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 2>/dev/null | sort -rV); do
    if [ -x "$c" ] && is_recent "$c"; then echo "$c"; return; fi
  done
}

build_python() {
  echo "[setup] no Python >= 3.12 found: building CPython 3.13 from Debian's source package into $CACHE"
  local src=$CACHE/src
  mkdir -p "$src"
  # A deb-src line only: trixie's binary python3.13 would replace libc and libssl on this host.
  local list=/etc/apt/sources.list.d/smug-plugin-trixie-src.sources
  if [ ! -f "$list" ]; then
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' > "$list"
  fi
  apt-get update -qq
  (cd "$src" && apt-get source --download-only -qq python3.13)
  local dsc
  dsc=$(ls "$src"/python3.13_*.dsc | head -n 1)
  # Upstream sources (--skip-patches): Debian's patches adapt the install layout to /usr and dist-packages.
  rm -rf "$src/tree" && dpkg-source --no-check --skip-patches -x "$dsc" "$src/tree" >/dev/null
  local log=$CACHE/build.log
  if ! (cd "$src/tree" && ./configure --prefix="$CACHE/python3.13" && make -j"$(nproc)" && make altinstall) \
       > "$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "[setup] error: building CPython failed (full log: $log)" >&2
    exit 1
  fi
  rm -rf "$src/tree"
  is_recent "$BUILT_PY" || { echo "[setup] error: the CPython build did not produce a working $BUILT_PY" >&2; exit 1; }
}

PY=$(find_python || true)
if [ -z "$PY" ]; then build_python; PY=$BUILT_PY; fi

# Reinstall only when the interpreter or the declared dependencies change.
stamp_value=$("$PY" -c 'import sys; print(sys.version)' ; cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.smug-setup-stamp" 2>/dev/null)" = "$stamp_value" ]; then
  exit 0
fi
echo "[setup] creating $VENV with $PY ($("$PY" --version))"
start=$(date +%s)
rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e "$ROOT[test]"
echo "$stamp_value" > "$VENV/.smug-setup-stamp"
echo "[setup] done in $(( $(date +%s) - start )) s"
