#!/usr/bin/env bash
# Standalone desktop build of cvt (PyInstaller, one folder): needs no Python on the target machine.
#
#   bash packaging/build-desktop.sh          -> packaging/dist/cvt/cvt  (run it: cvt view STORE)
#
# Makes its own build environment (packaging/build/venv, reused by later builds) with the project
# installed from pyproject.toml plus PyInstaller, then runs packaging/pyinstaller/cvt.spec.
# Environment: PYTHON (interpreter for the venv, default python3), CVT_BUILD_VENV (venv folder).
# The bundle is for the OS and CPU it is built on (glibc: build on the oldest Linux to support).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
VENV=${CVT_BUILD_VENV:-$ROOT/packaging/build/venv}
DIST=$ROOT/packaging/dist
WORK=$ROOT/packaging/build/work
export PIP_DISABLE_PIP_VERSION_CHECK=1
export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}  # the spec imports the viewer to list it

t0=$(date +%s)
echo "== build environment ($VENV)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q . "pyinstaller>=6.10"
# the project itself from this checkout, even when its version number has not changed
"$VENV/bin/pip" install -q --no-deps --force-reinstall .

echo "== pyinstaller"
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath "$DIST" --workpath "$WORK" packaging/pyinstaller/cvt.spec

APP=$DIST/cvt/cvt
"$APP" --version
t1=$(date +%s)
echo "== built $APP"
echo "   bundle $DIST/cvt: $(du -sh "$DIST/cvt" | cut -f1), $(find "$DIST/cvt" -type f | wc -l) files"
echo "   build time $((t1 - t0)) s"
