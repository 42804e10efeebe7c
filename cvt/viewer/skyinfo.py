"""The hover readout's sky position: the exposure's boresight WCS (``core.sky``), worked out
once per exposure on a worker from a detector's primary header."""

from __future__ import annotations

from core.sky import boresight_wcs, format_sky, parse_header


def sky_of(exposure, images: dict):
    """Worker: ``(BoresightWcs or None, why not)`` of an opened exposure."""
    camera = str(exposure.attrs.get("camera") or "")
    for image in images.values():
        try:
            text = image.headers().get("primary") or ""
        except Exception:  # an unreadable header: try the next detector
            continue
        if text:
            return boresight_wcs(parse_header(text), camera)
    return None, "no primary header stored"


def sky_text(sky, fx: float, fy: float) -> str:
    """The readout's sky part at a focal-plane position; '' while it is being worked out."""
    if sky is None:
        return ""
    wcs, why = sky
    if wcs is None:
        return f"no sky position ({why})"
    ra, dec = wcs.fp_to_sky(fx, fy)
    return format_sky(float(ra), float(dec))
