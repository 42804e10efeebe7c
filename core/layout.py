"""Where each amplifier of a raw CCD file goes in the assembled CCD: the one copy of the rule.

The rule (checked bit-exact against the Rubin pipelines' golden E2V image, and against every
amplifier of the persisted LSSTCam, ComCam and LATISS cameras in the tests):

- A science or guider CCD has 16 segments, in HDU order ``Segment10 .. Segment17`` then
  ``Segment07 .. Segment00``. Amp ``C1j`` goes to the top row (row 1) at x-index ``j``; amp
  ``C0j`` to the bottom row (row 0) at x-index ``j``. ``C1j`` is flipped in x and y for both
  vendors; ``C0j`` is flipped in x for ITL and not at all for E2V.
- A wavefront sensor (ITL, 4072 x 2000) has 8 segments ``Segment10 .. Segment17``, all in one
  row (row 0), ``C1j`` at x-index ``7 - j``, flipped in x and y.
- Amp ``(x_index, row)`` covers columns ``[x_index * W, (x_index + 1) * W)`` and rows
  ``[row * H, (row + 1) * H)`` of the assembled CCD, with array row 0 at the bottom; ``W x H`` is
  the size of the segment's DATASEC (509 x 2000 ITL, 512 x 2002 E2V in modern files).

DETSEC is deliberately not used: it puts the two rows the other way round (a known header issue).
"""

from __future__ import annotations

from dataclasses import dataclass

VENDORS = ("ITL", "E2V")

SEGMENTS_16 = tuple(f"C1{j}" for j in range(8)) + tuple(f"C0{j}" for j in range(7, -1, -1))
SEGMENTS_8 = tuple(f"C1{j}" for j in range(8))


@dataclass(frozen=True)
class AmpPlacement:
    """One amplifier's place in the assembled CCD, in units of amp width and height."""

    name: str  # C10 .. C17, C07 .. C00
    hdu_index: int  # 1-based HDU number in the raw file (HDU 0 is the primary)
    x_index: int
    row: int  # 0 bottom, 1 top
    flip_x: bool
    flip_y: bool

    @property
    def extname(self) -> str:
        return "Segment" + self.name[1:]


def amp_placements(vendor: str, n_segments: int = 16) -> tuple[AmpPlacement, ...]:
    """The placements of all amps of a CCD, in the raw file's HDU order."""
    if vendor not in VENDORS:
        raise ValueError(f"unknown CCD vendor {vendor!r}; expected one of {VENDORS}")
    if n_segments == 16:
        out = []
        for i, name in enumerate(SEGMENTS_16):
            row = int(name[1])
            j = int(name[2])
            flip_x = row == 1 or vendor == "ITL"
            flip_y = row == 1
            out.append(AmpPlacement(name, i + 1, j, row, flip_x, flip_y))
        return tuple(out)
    if n_segments == 8:
        if vendor != "ITL":
            raise ValueError("only ITL wavefront sensors have 8 segments")
        return tuple(
            AmpPlacement(name, i + 1, 7 - int(name[2]), 0, True, True)
            for i, name in enumerate(SEGMENTS_8)
        )
    raise ValueError(f"a CCD has 16 segments (8 for a wavefront sensor), not {n_segments}")


def vendor_from_header(ccd_manu: str | None, lsst_num: str | None) -> str:
    """The vendor from CCD_MANU, or from the prefix of LSST_NUM in older files that lack it."""
    for value in (ccd_manu, lsst_num):
        if value:
            text = str(value).strip().upper()
            for vendor in VENDORS:
                if text.startswith(vendor):
                    return vendor
    raise ValueError(f"cannot tell the CCD vendor: CCD_MANU={ccd_manu!r}, LSST_NUM={lsst_num!r}")


def ccd_to_array(x, y, ccd_shape: tuple[int, int], quarter_turns: int):
    """CCD pixel (x, y) to the (row, col) of the CCD turned ``quarter_turns`` times
    counter-clockwise into the focal-plane frame (row 0 at the bottom); ``ccd_shape`` is
    (ny, nx) before turning. Works on scalars and arrays."""
    ny, nx = ccd_shape
    t = quarter_turns % 4
    if t == 0:
        return y, x
    if t == 1:
        return x, ny - 1 - y
    if t == 2:
        return ny - 1 - y, nx - 1 - x
    return nx - 1 - x, y


def amp_array_box(amp: dict, ccd_shape: tuple[int, int], quarter_turns: int):
    """An amp's ``(r0, r1, c0, c1)`` (half-open) in the CCD turned into the focal-plane frame,
    from its CCD box ``{"x0", "y0", "nx", "ny"}`` (as the exposure store lists amps)."""
    ra, ca = ccd_to_array(amp["x0"], amp["y0"], ccd_shape, quarter_turns)
    rb, cb = ccd_to_array(
        amp["x0"] + amp["nx"] - 1, amp["y0"] + amp["ny"] - 1, ccd_shape, quarter_turns
    )
    return int(min(ra, rb)), int(max(ra, rb)) + 1, int(min(ca, cb)), int(max(ca, cb)) + 1


def array_to_ccd(row, col, ccd_shape: tuple[int, int], quarter_turns: int):
    """The inverse of ``ccd_to_array``: turned (row, col) back to CCD pixel (x, y)."""
    ny, nx = ccd_shape
    t = quarter_turns % 4
    if t == 0:
        return col, row
    if t == 1:
        return row, ny - 1 - col
    if t == 2:
        return nx - 1 - col, ny - 1 - row
    return nx - 1 - row, col
