#!/usr/bin/env bash
# Adds cvt to the desktop's application menu for this user (no root): the desktop entry and the
# icon under ~/.local/share. With an argument, Exec uses that cvt executable (e.g. the frozen
# build's packaging/dist/cvt/cvt, or a venv's bin/cvt) instead of the `cvt` on PATH.
#
#   bash packaging/linux/install-desktop-entry.sh [/path/to/cvt]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
exe=${1:-cvt}
if [ "$exe" != cvt ]; then
  [ -f "$exe" ] && [ -x "$exe" ] || { echo "not an executable: $exe" >&2; exit 1; }
  exe=$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")
fi
install -d "$data/applications" "$data/icons/hicolor/256x256/apps" "$data/icons/hicolor/scalable/apps"
sed "s|^Exec=cvt |Exec=\"$exe\" |" "$here/cvt.desktop" > "$data/applications/cvt.desktop"
install -m 644 "$root/resources/icons/cvt.png" "$data/icons/hicolor/256x256/apps/cvt.png"
install -m 644 "$root/resources/icons/cvt.svg" "$data/icons/hicolor/scalable/apps/cvt.svg"
command -v update-desktop-database >/dev/null && update-desktop-database -q "$data/applications" || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q -t "$data/icons/hicolor" || true
echo "installed $data/applications/cvt.desktop (Exec: $exe view %f)"
