#!/usr/bin/env bash
# The project's one test command (the README's, and what CI runs): installs the project into
# .venv, runs ruff, the import contract and every test; then runs core's tests again in a second
# environment that has no Qt at all, which is what really keeps core free of Qt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
export PIP_DISABLE_PIP_VERSION_CHECK=1

echo "== install (.venv)"
"$PY" -m venv .venv
.venv/bin/pip install -q -e ".[test]"

echo "== ruff"
.venv/bin/ruff check core cvt tests
echo "== import contract (core never imports cvt or Qt)"
.venv/bin/lint-imports

echo "== tests"
.venv/bin/python -m pytest "$@"

echo "== core tests without Qt (.venv-noqt)"
"$PY" -m venv .venv-noqt
core_deps=$(.venv/bin/python - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = project["dependencies"] + project["optional-dependencies"]["test"]
qt = ("pyside", "pyqtgraph", "pytest-qt", "shiboken")
print(" ".join(f"'{d}'" for d in deps if not d.lower().startswith(qt)))
PY
)
# shellcheck disable=SC2086
eval .venv-noqt/bin/pip install -q "$core_deps"
.venv-noqt/bin/pip install -q --no-deps -e .
.venv-noqt/bin/python -c "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('PySide6', 'pyqtgraph')))" \
  || { echo "the no-Qt environment has Qt in it"; exit 1; }
.venv-noqt/bin/python -m pytest tests/core -p no:pytest-qt
