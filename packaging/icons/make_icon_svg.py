"""Writes resources/icons/cvt.svg: the LSST Camera focal plane as the icon of cvt.

21 rafts (a 5 x 5 grid without its corners), each with its 3 x 3 CCDs, on a dark tile; the
centre raft (R22) lit, as in the viewer. Run ``python packaging/icons/make_icon_svg.py``, then
``python packaging/icons/render_icon.py`` for the PNG.
"""

from __future__ import annotations

from pathlib import Path

SIZE = 256
RAFT = 40  # raft side, px
GAP = 3
MARGIN = (SIZE - 5 * RAFT - 4 * GAP) / 2

BACKGROUND = "#14171d"
RAFT_FILL = "#24446e"
RAFT_EDGE = "#79aaf0"
CCD_LINE = "#79aaf0"
LIT_FILL = "#cfe2ff"
LIT_EDGE = "#ffffff"


def svg() -> str:
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" '
        f'viewBox="0 0 {SIZE} {SIZE}">',
        "  <title>CVT: the LSST Camera focal plane</title>",
        f'  <rect x="4" y="4" width="{SIZE - 8}" height="{SIZE - 8}" rx="44" fill="{BACKGROUND}"/>',
    ]
    for row in range(5):
        for col in range(5):
            if row in (0, 4) and col in (0, 4):
                continue  # the corners hold the guider and wavefront sensors: no raft
            x = MARGIN + col * (RAFT + GAP)
            y = MARGIN + row * (RAFT + GAP)
            lit = (row, col) == (2, 2)
            fill, edge = (LIT_FILL, LIT_EDGE) if lit else (RAFT_FILL, RAFT_EDGE)
            parts.append(
                f'  <rect x="{x:g}" y="{y:g}" width="{RAFT}" height="{RAFT}" rx="2" '
                f'fill="{fill}" stroke="{edge}" stroke-width="2"/>'
            )
            step = RAFT / 3
            lines = " ".join(
                f"M{x + k * step:.2f} {y:g}v{RAFT} M{x:g} {y + k * step:.2f}h{RAFT}" for k in (1, 2)
            )
            colour = BACKGROUND if lit else CCD_LINE
            parts.append(
                f'  <path d="{lines}" stroke="{colour}" stroke-width="1" stroke-opacity="0.55" '
                f'fill="none"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main() -> None:
    out = Path(__file__).resolve().parents[2] / "resources" / "icons" / "cvt.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(svg())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
