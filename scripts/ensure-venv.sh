#!/usr/bin/env bash
# Creates .venv and installs the pinned requirements into it, when they changed.
#   scripts/ensure-venv.sh          runtime packages (make run)
#   scripts/ensure-venv.sh dev      runtime, test and lint packages (make test, make lint)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PYTHON=${PYTHON:-python3}
req=requirements.txt
[ "${1:-}" = dev ] && req=requirements-dev.txt

command -v "$PYTHON" >/dev/null || apt_install "Python 3 is missing" python3
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    apt_install "Python's venv module is missing" python3-venv
  fi
  say "Creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=".venv/.installed-$(basename "$req" .txt)"
want=$(cat requirements.txt "$req" | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "Installing $req into .venv"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$req"
  echo "$want" > "$stamp"
fi
