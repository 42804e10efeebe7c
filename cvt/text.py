"""Plain text for the commands' tables: numbers as they print, columns aligned."""

from __future__ import annotations

import math


def number(v) -> str:
    """A table cell: ``-`` for no value (None, NaN), a float to 4 significant digits."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def aligned(lines: list[list[str]]) -> str:
    """Rows of cells (the first: the heading) as left-aligned columns, two spaces apart."""
    widths = [max(len(line[k]) for line in lines) for k in range(len(lines[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(x, widths)).rstrip() for x in lines)
