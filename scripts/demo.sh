#!/usr/bin/env bash
# Install storey with its command-line extra into .venv and run the backfill demo on the bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e ".[cli,fast]"
.venv/bin/storey demo "$@"
