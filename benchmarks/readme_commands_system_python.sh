#!/usr/bin/env bash
# Run the README's two commands (set-up + demo, then the tests) in a fresh clone of this repository with
# a given interpreter, by default Debian 12's system Python (/usr/bin/python3, 3.11.2), in a fresh venv.
#
# Usage: benchmarks/readme_commands_system_python.sh [PYTHON]   (default: /usr/bin/python3)
# Prints the interpreter's version, the demo's table and pytest's result; exit status is theirs.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-/usr/bin/python3}
WORK=$(mktemp -d -t kws-syspy.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
git clone -q "$ROOT" "$WORK/kwsdeploy"
cd "$WORK/kwsdeploy"
start=$(date +%s)
env -u PYTHONPATH CI=true bash -c "
  '$PY' -m venv .venv && . .venv/bin/activate && python --version &&
  pip install -q torch==2.13.0 && pip install -q -e '.[dev]' && kwsdeploy demo &&
  python -m pytest -n 2"
echo "README commands with $("$PY" --version 2>&1): rc 0 in $(( $(date +%s) - start )) s"
