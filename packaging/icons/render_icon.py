"""Renders resources/icons/cvt.svg to resources/icons/cvt.png (256 x 256) with Qt, offscreen.

    QT_QPA_PLATFORM=offscreen python packaging/icons/render_icon.py [SIZE ...]

The PNG is committed (desktops that cannot read SVG icons use it); run this again after any
change to the SVG. Extra sizes write cvt-SIZE.png beside it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ICONS = Path(__file__).resolve().parents[2] / "resources" / "icons"


def render(svg: Path, out: Path, size: int) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg}: not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out), "PNG"):
        raise SystemExit(f"cannot write {out}")
    print(f"wrote {out} ({size}x{size})")


def main(argv: list[str]) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(["render_icon"])  # noqa: F841
    svg = ICONS / "cvt.svg"
    render(svg, ICONS / "cvt.png", 256)
    for size in map(int, argv):
        render(svg, ICONS / f"cvt-{size}.png", size)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
