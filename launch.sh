#!/usr/bin/env bash
# One-click start: creates .venv if missing, installs the pinned requirements, runs app.py "$@".
# Without a CUDA GPU (or without the GLM-4.6V-Flash weights) it starts the bundled demo model.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt
  echo "$want" > "$stamp"
fi
exec .venv/bin/python app.py "$@"
