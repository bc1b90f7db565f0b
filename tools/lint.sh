#!/usr/bin/env bash
# Lint the Python sources with the OpenMMLab linters (settings in setup.cfg), the versions pinned in
# requirements/tests.txt:
#
#   bash tools/lint.sh         # check only: isort, yapf, flake8; exits non-zero if any complains
#   bash tools/lint.sh --fix   # sort imports (isort) and format (yapf) in place, then check
#
# .ci/run calls it before the tests. PYTHON picks the interpreter (default: .venv/bin/python).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PATHS=(mmkd_ext tools tests configs setup.py)

for tool in isort yapf flake8; do
  if ! "$PY" -m "$tool" --version >/dev/null 2>&1; then
    echo "tools/lint.sh: $tool is not installed for $PY; install the pinned linters with" \
      "'$PY -m pip install -r requirements/tests.txt'." >&2
    exit 2
  fi
done

if [ "${1:-}" = "--fix" ]; then
  "$PY" -m isort "${PATHS[@]}"
  "$PY" -m yapf --in-place --recursive --parallel --exclude 'mmkd_ext/.mim/*' "${PATHS[@]}"
elif [ -n "${1:-}" ]; then
  echo "usage: bash tools/lint.sh [--fix]" >&2
  exit 2
fi

status=0
echo "== isort (import order)"
"$PY" -m isort --check-only --diff "${PATHS[@]}" || status=1
echo "== yapf (format)"
"$PY" -m yapf --diff --recursive --exclude 'mmkd_ext/.mim/*' "${PATHS[@]}" || status=1
echo "== flake8"
"$PY" -m flake8 "${PATHS[@]}" || status=1
if [ "$status" = 0 ]; then
  echo "lint: clean"
else
  echo "lint: problems above (bash tools/lint.sh --fix applies isort and yapf; flake8's need hand" \
    "edits)" >&2
fi
exit "$status"
