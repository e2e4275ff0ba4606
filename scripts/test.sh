#!/usr/bin/env bash
# Install everything the test suite needs (venv, the package with its test extra, redis-server) and run it.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v redis-server >/dev/null 2>&1; then
  echo "== installing redis-server (Debian package)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "== installing storey[test]"
.venv/bin/python -m pip install -q -e ".[test]"
export STOREY_REQUIRE_SERVICES=${STOREY_REQUIRE_SERVICES:-1}
echo "== ruff"
.venv/bin/ruff check storey tests benchmarks
echo "== docs (mkdocs build --strict)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict -q -d "${TMPDIR:-/tmp}/storey-site"
echo "== pytest"
.venv/bin/python -m pytest -p no:cacheprovider -q "$@"
echo "== notebooks (executed with nbmake)"
.venv/bin/python -m pytest -p no:cacheprovider -q --nbmake notebooks/*.ipynb
