"""The viewer's sky readout, overscan dock and empty start, in a real offscreen window."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.cvt.conftest import open_and_settle, wait_settled

pytestmark = pytest.mark.gui


@pytest.fixture(scope="session")
def sim_bias(tmp_path_factory):
    """One simulated bias CCD, ingested: its headers carry no pointing worth a sky position."""
    simulate = pytest.importorskip("core.simulate")
    from core.ingest import ingest

    root = tmp_path_factory.mktemp("viewer-bias")
    simulate.simulate_exposure(
        root / "raw", detectors=["R22_S11"], seed=3, image_type="bias", faults=False, workers=1
    )
    reports, bad = ingest([root / "raw"], root / "repo", workers=1)
    assert not bad and reports[0].ok
    return reports[0].path


def test_hover_reads_out_ra_dec_from_the_headers(viewer, qtbot, sim_exposure, sim_bias):
    from astropy.io import fits
    from astropy.wcs import WCS

    from core.exposure import open_exposure
    from core.sky import PIXEL_ARCSEC

    path, _ = sim_exposure
    w = viewer()
    open_and_settle(qtbot, w, path)
    qtbot.waitUntil(lambda: w.sky is not None, timeout=10000)
    # the reference: astropy's WCS built from the stored primary header
    h = fits.Header.fromstring(
        open_exposure(path).detector("R22_S12").headers()["primary"], sep="\n"
    )
    s, r = PIXEL_ARCSEC / 3600.0, np.radians(h["ROTPA"])
    ref = WCS(naxis=2)
    ref.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    ref.wcs.crval = [h["RASTART"], h["DECSTART"]]
    ref.wcs.crpix = [1.0, 1.0]
    ref.wcs.cd = [[-np.cos(r) * s, np.sin(r) * s], [np.sin(r) * s, np.cos(r) * s]]
    x0, y0, x1, y1 = w.layout.by_name["R22_S12"].bounds
    fx, fy = x0 + 0.3 * (x1 - x0), y0 + 0.6 * (y1 - y0)
    w.view.hovered.emit(fx, fy)
    text = w.status_text
    m = re.search(
        r"RA (\d\d):(\d\d):([\d.]+) Dec ([+-]\d\d):(\d\d):([\d.]+) \(([\d.]+), ([+-][\d.]+) deg\)",
        text,
    )
    assert m, text
    want_ra, want_dec = ref.wcs_pix2world(fx, fy, 0)
    assert float(m.group(7)) == pytest.approx(float(want_ra), abs=2e-5)
    assert float(m.group(8)) == pytest.approx(float(want_dec), abs=2e-5)
    hours = int(m.group(1)) + int(m.group(2)) / 60 + float(m.group(3)) / 3600
    assert hours * 15 == pytest.approx(float(want_ra), abs=1e-4)
    # a bias has no sky position, and says why
    w2 = viewer()
    open_and_settle(qtbot, w2, sim_bias)
    qtbot.waitUntil(lambda: w2.sky is not None, timeout=10000)
    x0, y0, x1, y1 = w2.layout.by_name["R22_S11"].bounds
    w2.view.hovered.emit((x0 + x1) / 2, (y0 + y1) / 2)
    assert "no sky position (a BIAS image is not of the sky)" in w2.status_text
    wait_settled(qtbot, w2)
