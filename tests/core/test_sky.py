"""Sky coordinates at focal-plane positions: the TAN projection against astropy's own WCS
(wcslib, the independent reference), the Rubin orientation conventions, and what real and
simulated headers allow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.sky import BoresightWcs, boresight_wcs, format_sky, parse_header, sexagesimal

HEADERS = Path(__file__).resolve().parents[3] / "shared" / "data" / "obs_lsst" / "headers"


def astropy_wcs(b: BoresightWcs):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [b.ra, b.dec]
    w.wcs.crpix = [1.0, 1.0]  # FITS pixel 1 is pixel 0 with origin=0: the focal-plane centre
    w.wcs.cd = b.cd
    return w


@pytest.mark.parametrize(
    ("ra", "dec", "rot", "flip"),
    [
        (127.50084, -44.20006, 46.3753, False),  # a real LSSTCam pointing
        (0.01, -10.0, 0.0, False),  # RA wrapping through 0
        (359.99, 30.0, 250.0, True),
        (216.1, -89.7, 318.6, False),  # near the south pole
        (45.0, 89.95, 90.0, False),  # near the north pole
    ],
)
def test_projection_matches_astropy(ra, dec, rot, flip):
    b = BoresightWcs(ra, dec, rot, flip_x=flip)
    rng = np.random.default_rng(1)
    fx = np.r_[0.0, rng.uniform(-32000, 32000, 500)]  # the whole LSSTCam focal plane
    fy = np.r_[0.0, rng.uniform(-32000, 32000, 500)]
    got_ra, got_dec = b.fp_to_sky(fx, fy)
    want_ra, want_dec = astropy_wcs(b).wcs_pix2world(fx, fy, 0)
    dra = (got_ra - want_ra + 180.0) % 360.0 - 180.0
    assert np.max(np.abs(dra * np.cos(np.radians(want_dec)))) < 1e-9
    assert np.max(np.abs(got_dec - want_dec)) < 1e-9
    assert (got_ra[0], got_dec[0]) == pytest.approx((ra % 360.0, dec), abs=1e-12)
    back_x, back_y = b.sky_to_fp(got_ra, got_dec)
    assert np.max(np.abs(back_x - fx)) < 1e-5 and np.max(np.abs(back_y - fy)) < 1e-5


def test_orientation_and_scale_follow_the_rubin_conventions():
    from astropy.coordinates import SkyCoord

    # rotation 0: focal-plane +y is north, +x is west (obs_lsst: wcsFlipX false for LSSTCam)
    b = BoresightWcs(150.0, -30.0, 0.0)
    ra, dec = b.fp_to_sky([0.0, 0.0, 1000.0], [0.0, 1000.0, 0.0])
    assert dec[1] > dec[0] and ra[1] == pytest.approx(ra[0], abs=1e-12)
    assert ra[2] < ra[0] and dec[2] == pytest.approx(dec[0], abs=1e-4)  # (a great circle)
    # the plate scale: 1000 pixels of 10 um are 200 arcsec
    c = SkyCoord(ra, dec, unit="deg")
    assert c[0].separation(c[1]).arcsec == pytest.approx(200.0, rel=1e-6)
    assert c[0].separation(c[2]).arcsec == pytest.approx(200.0, rel=1e-6)
    # the rotation angle is the position angle of +y, from north through east
    for rot in (30.0, 90.0, 200.0):
        r = BoresightWcs(150.0, -30.0, rot)
        ra, dec = r.fp_to_sky([0.0, 0.0], [0.0, 1000.0])
        pa = SkyCoord(ra[0], dec[0], unit="deg").position_angle(SkyCoord(ra[1], dec[1], unit="deg"))
        assert pa.deg == pytest.approx(rot, abs=1e-4)
    # flipping x turns west into east
    ra, _ = BoresightWcs(150.0, -30.0, 0.0, flip_x=True).fp_to_sky([0.0, 1000.0], [0.0, 0.0])
    assert ra[1] > ra[0]


def test_headers_decide_whether_there_is_a_sky_position():
    sim = {"IMGTYPE": "SCIENCE", "RA": 10.0, "DEC": -5.0, "RASTART": 10.0008,
           "DECSTART": -5.00005, "ROTPA": 12.5, "ROTCOORD": "sky"}  # fmt: skip
    wcs, why = boresight_wcs(sim, "LSSTCam")
    assert why == "" and (wcs.ra, wcs.dec, wcs.rotpa) == (10.0008, -5.00005, 12.5)
    assert not wcs.flip_x and wcs.scale_arcsec == 0.2
    wcs, _ = boresight_wcs({**sim, "RASTART": None, "DECSTART": None}, "ComCam")
    assert (wcs.ra, wcs.dec) == (10.0, -5.0)  # falls back on the target's RA/Dec
    for header, camera, reason in (
        ({**sim, "ROTPA": None}, "LSSTCam", "headers lack ROTPA"),
        ({"IMGTYPE": "ACQ"}, "LSSTCam", "headers lack RASTART/DECSTART (or RA/DEC) and ROTPA"),
        ({**sim, "IMGTYPE": "BIAS"}, "LSSTCam", "a BIAS image is not of the sky"),
        ({**sim, "ROTCOORD": "mount"}, "LSSTCam", "rotator angle not on the sky"),
        (sim, "LATISS", "no plate scale known for camera LATISS"),
        ({**sim, "ROTPA": "n/a"}, "LSSTCam", "headers lack ROTPA"),
    ):
        wcs, why = boresight_wcs(header, camera)
        assert wcs is None and why.startswith(reason), (header, why)


def test_header_text_as_stored_by_the_ingest():
    from astropy.io import fits

    h = fits.Header()
    h["RASTART"] = 127.5008
    h["DECSTART"] = -44.2
    h["ROTPA"] = 46.375
    h["IMGTYPE"] = "ACQ"
    h["COMMENT"] = "a comment"
    got = parse_header(h.tostring(sep="\n"))
    assert got["RASTART"] == 127.5008 and got["IMGTYPE"] == "ACQ" and "COMMENT" not in got
    wcs, why = boresight_wcs(got, "LSSTCam")
    assert wcs is not None and why == ""


@pytest.mark.skipif(not HEADERS.is_dir(), reason="the real Rubin headers are not here")
def test_real_lsstcam_headers():
    yaml = pytest.importorskip("yaml")

    def load(name):
        return yaml.safe_load((HEADERS / name).read_text())

    on_sky = load("lsstCam-MC_O_20250415_000060_R01_S01.yaml")
    wcs, why = boresight_wcs(on_sky, "LSSTCam")
    assert why == "" and wcs.ra == on_sky["RASTART"] and wcs.rotpa == on_sky["ROTPA"]
    hms, dms = sexagesimal(wcs.ra, wcs.dec)
    assert hms.startswith("08:30:00.2") and dms == "-44:12:00.2"
    # a lab image of 2025: the keys are there, but empty
    wcs, why = boresight_wcs(load("lsstCam-MC_C_20250425_000031_R01_S01.yaml"), "LSSTCam")
    assert wcs is None and "RASTART" in why and "ROTPA" in why


def test_sexagesimal_against_astropy():
    from astropy.coordinates import Angle

    for ra, dec in ((127.50084, -44.20006), (0.0, 0.0), (359.9999999, -0.00001), (271.3, 89.99)):
        hms, dms = sexagesimal(ra, dec)
        want_h = (
            Angle(ra, unit="deg")
            .wrap_at("360d")
            .to_string(unit="hour", sep=":", precision=2, pad=True)
        )
        want_d = Angle(dec, unit="deg").to_string(
            unit="deg", sep=":", precision=1, pad=True, alwayssign=True
        )
        assert hms == ("00:00:00.00" if want_h == "24:00:00.00" else want_h)
        assert dms.lstrip("+-") == want_d.lstrip("+-")
    assert format_sky(127.5, -44.2) == "RA 08:30:00.00 Dec -44:12:00.0 (127.50000, -44.20000 deg)"
