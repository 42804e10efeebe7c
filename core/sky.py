"""Sky coordinates of focal-plane positions, from an exposure's boresight and rotator angle.

The Rubin pipelines' *initial* WCS of a raw (``createInitialSkyWcsFromBoresight`` in
obs_base, with afw's ``makeCdMatrix``): a gnomonic (TAN) projection about the boresight, whose
intermediate world coordinates are ``CD @ (fx, fy)`` for a focal-plane position ``(fx, fy)``
(``core.camera``'s frame: pixels of 10 um from the focal-plane centre, the Rubin
``FOCAL_PLANE`` frame scaled), with

    CD = scale * [[cos(rot) * m, sin(rot)], [-sin(rot) * m, cos(rot)]],  m = +1 if flip_x else -1

``rot`` is the boresight rotation angle (``ROTPA``, the position angle of focal-plane +y,
measured from north through east; obs_lsst takes it as is, ``ROTCOORD = sky``), ``scale`` the
plate scale (0.2 arcsec per 10 um pixel for the Simonyi telescope: LSSTCam and ComCam) and
``flip_x`` false for LSSTCam and ComCam (obs_lsst's ``wcsFlipX``): at ``rot = 0`` +y points north
and +x west. The optical distortion of the camera is left out (the pipelines' initial WCS puts it
in through the camera's FIELD_ANGLE transform), so positions far from the centre are off by the
distortion; the projection itself matches astropy's (``tests/core/test_sky.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

PIXEL_ARCSEC = 0.2  # Simonyi telescope: 10 um focal-plane pixels, 0.2 arcsec
PLATE = {"lsstcam": (PIXEL_ARCSEC, False), "comcam": (PIXEL_ARCSEC, False)}  # scale, flip_x
BORESIGHT_KEYS = (("RASTART", "DECSTART"), ("RA", "DEC"))  # obs_lsst's order
NOT_SKY_TYPES = {"BIAS", "DARK", "FLAT"}


@dataclass(frozen=True)
class BoresightWcs:
    """A TAN projection about the boresight ``(ra, dec)`` (degrees), rotated by ``rotpa``."""

    ra: float
    dec: float
    rotpa: float
    scale_arcsec: float = PIXEL_ARCSEC
    flip_x: bool = False

    @property
    def cd(self) -> np.ndarray:
        """Degrees of intermediate world coordinates per focal-plane pixel (afw's
        ``makeCdMatrix``)."""
        s = self.scale_arcsec / 3600.0
        r = math.radians(self.rotpa)
        m = 1.0 if self.flip_x else -1.0
        return np.array(
            [[math.cos(r) * s * m, math.sin(r) * s], [-math.sin(r) * s * m, math.cos(r) * s]]
        )

    def fp_to_sky(self, fx, fy) -> tuple[np.ndarray, np.ndarray]:
        """RA, Dec (degrees; RA in [0, 360)) of focal-plane pixel positions."""
        fx, fy = np.asarray(fx, dtype=np.float64), np.asarray(fy, dtype=np.float64)
        cd = self.cd
        xi = np.radians(cd[0, 0] * fx + cd[0, 1] * fy)  # standard coordinates: east, north
        eta = np.radians(cd[1, 0] * fx + cd[1, 1] * fy)
        a0, d0 = math.radians(self.ra), math.radians(self.dec)
        den = math.cos(d0) - eta * math.sin(d0)
        ra = a0 + np.arctan2(xi, den)
        dec = np.arctan2(math.sin(d0) + eta * math.cos(d0), np.hypot(xi, den))
        return np.degrees(ra) % 360.0, np.degrees(dec)

    def sky_to_fp(self, ra, dec) -> tuple[np.ndarray, np.ndarray]:
        """Focal-plane pixel positions of RA, Dec (degrees); the inverse of ``fp_to_sky`` on the
        hemisphere around the boresight."""
        a = np.radians(np.asarray(ra, dtype=np.float64)) - math.radians(self.ra)
        d = np.radians(np.asarray(dec, dtype=np.float64))
        d0 = math.radians(self.dec)
        den = np.sin(d) * math.sin(d0) + np.cos(d) * math.cos(d0) * np.cos(a)
        xi = np.degrees(np.cos(d) * np.sin(a) / den)
        eta = np.degrees((np.sin(d) * math.cos(d0) - np.cos(d) * math.sin(d0) * np.cos(a)) / den)
        fx, fy = np.linalg.solve(self.cd, np.vstack([np.ravel(xi), np.ravel(eta)]))
        return fx.reshape(np.shape(xi)), fy.reshape(np.shape(eta))


def _number(header: Mapping, key: str) -> float | None:
    v = header.get(key)
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def boresight_wcs(header: Mapping, camera: str) -> tuple[BoresightWcs | None, str]:
    """The WCS a primary header allows, or None and why not (``"headers lack ROTPA"`` ...)."""
    plate = PLATE.get(str(camera or "").lower())
    if plate is None:
        return None, f"no plate scale known for camera {camera or '(unnamed)'}"
    imgtype = str(header.get("IMGTYPE") or "").strip().upper()
    if imgtype in NOT_SKY_TYPES:
        return None, f"a {imgtype} image is not of the sky"
    radec = None
    for rk, dk in BORESIGHT_KEYS:
        ra, dec = _number(header, rk), _number(header, dk)
        if ra is not None and dec is not None:
            radec = (ra, dec)
            break
    rot = _number(header, "ROTPA")
    missing = []
    if radec is None:
        missing.append("RASTART/DECSTART (or RA/DEC)")
    if rot is None:
        missing.append("ROTPA")
    if missing:
        return None, "headers lack " + " and ".join(missing)
    coord = str(header.get("ROTCOORD") or "sky").strip().lower()
    if coord != "sky":
        return None, f"rotator angle not on the sky (ROTCOORD = {coord})"
    if not -90.0 <= radec[1] <= 90.0:
        return None, f"boresight Dec {radec[1]} out of range"
    return BoresightWcs(radec[0] % 360.0, radec[1], rot, plate[0], plate[1]), ""


def parse_header(text: str) -> dict:
    """A FITS header's text (cards, as the exposure stores them) as a dict."""
    from astropy.io import fits

    h = fits.Header.fromstring(text, sep="\n")
    return {k: h[k] for k in h if k not in ("COMMENT", "HISTORY", "")}


def sexagesimal(ra: float, dec: float) -> tuple[str, str]:
    """``HH:MM:SS.SS`` and ``+DD:MM:SS.S``."""
    t = round((ra % 360.0) / 15.0 * 3600.0 * 100)  # hundredths of a second of time
    t %= 24 * 3600 * 100
    h, rest = divmod(t, 3600 * 100)
    m, cs = divmod(rest, 60 * 100)
    sign = "-" if dec < 0 else "+"
    a = round(abs(dec) * 3600.0 * 10)  # tenths of an arcsecond
    d, rest = divmod(a, 3600 * 10)
    dm, ds = divmod(rest, 60 * 10)
    return f"{h:02d}:{m:02d}:{cs / 100:05.2f}", f"{sign}{d:02d}:{dm:02d}:{ds / 10:04.1f}"


def format_sky(ra: float, dec: float) -> str:
    hms, dms = sexagesimal(ra, dec)
    return f"RA {hms} Dec {dms} ({ra:.5f}, {dec:+.5f} deg)"
