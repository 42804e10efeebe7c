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


def test_overscan_dock_shows_the_untrimmed_ccd(viewer, qtbot, sim_exposure):
    from tests.cvt.test_compare import as_array

    path, truth = sim_exposure
    w = viewer(size=(1300, 800))
    open_and_settle(qtbot, w, path)
    assert w.goto("R22_S11")
    wait_settled(qtbot, w)
    ov = w.overscan
    assert not ov.dock.isVisible() and ov.action in w.menuBar().actions()[0].menu().actions()
    with qtbot.waitSignal(ov.loaded, timeout=20000) as done:
        ov.action.trigger()  # View > Show overscan (key O)
    assert done.args[0] == "R22_S11" and ov.dock.isVisible()
    u = ov.current
    (x0, x1, y0, y1), (sny, snx) = u.datasec, u.seg_shape
    assert (sny, snx) == (2048, 576) and (x0, x1, y1) == (10, 522, 2002)  # E2V
    assert u.pixels.shape == (2 * sny, 8 * snx)
    amps = {a["amp"]: a for f in truth["files"] if f["detector"] == "R22_S11" for a in f["amps"]}
    qtbot.waitUntil(lambda: ov.argb is not None and ov.view.isVisible(), timeout=5000)
    qtbot.wait(50)
    img = as_array(ov.view.grab().toImage())
    for name in ("C00", "C07", "C10", "C17"):
        i = next(k for k, a in enumerate(u.amps) if a["name"] == name)
        r0, r1, c0, c1 = u.blocks[i]
        a = u.amps[i]
        # where the serial overscan columns are in the picture: right of the data in readout
        # order, so on the left of the block when the amp is flipped in x
        cols = np.arange(c0, c1)
        seg_x = (c1 - 1 - cols) if a["flip_x"] else (cols - c0)
        over = cols[seg_x >= x1 + 3]  # past the serial CTI trail
        data = cols[(seg_x >= x0 + 20) & (seg_x < x1 - 20)]
        rows = np.arange(r0 + 100, r1 - 100)
        bias = amps[name]["bias"]
        assert abs(np.median(u.pixels[np.ix_(rows, over)]) - bias) < 3, (name, bias)
        assert np.median(u.pixels[np.ix_(rows, data)]) > bias + 50  # sky on top of the bias

        # drawn: the overscan is darker than the data next to it (per-amp equalisation)
        def colour(c, r):
            p = ov.vb.mapViewToScene(pg_point(c + 0.5, r + 0.5))
            q = ov.view.mapFromScene(p)
            return img[q.y() - 1 : q.y() + 2, q.x() - 1 : q.x() + 2].mean()

        mid = (r0 + r1) // 2
        assert colour(over[len(over) // 2], mid) + 40 < colour(data[len(data) // 2], mid), name
        # the readout names the region, the segment pixel and the raw value
        c = int(over[5])
        text = ov.hover(c + 0.5, mid + 0.5)
        sx = (c1 - 1 - c) if a["flip_x"] else (c - c0)
        sy = (r1 - 1 - mid) if a["flip_y"] else (mid - r0)
        assert f"{name} (Segment{name[1:]})" in text and "serial overscan" in text
        assert f"segment pixel ({sx}, {sy})" in text
        assert f"raw {int(u.pixels[mid, c])} ADU" in text
    # a data pixel reads out raw and corrected, agreeing with the store's own pixel()
    det = w.images["R22_S11"]
    want = det.pixel(1234, 777)
    a = next(a for a in u.amps if a["name"] == want["amp"])
    i = u.amps.index(a)
    r0, r1, c0, c1 = u.blocks[i]
    sx, sy = x0 + want["amp_u"], y0 + want["amp_v"]
    col = c1 - 1 - sx if a["flip_x"] else c0 + sx
    row = r1 - 1 - sy if a["flip_y"] else r0 + sy
    assert int(u.pixels[row, col]) == want["raw"]
    text = ov.hover(col + 0.5, row + 0.5)
    assert f"data: raw {want['raw']} ADU  corrected {want['corrected']}" in text
    # hidden again when toggled off
    ov.action.trigger()
    assert not ov.dock.isVisible() and not ov.action.isChecked()


def pg_point(x, y):
    from PySide6.QtCore import QPointF

    return QPointF(x, y)


def test_an_empty_window_opens_an_exposure_or_a_repository(viewer, qtbot, sim_exposure, tmp_path):
    import shutil

    path, _ = sim_exposure
    w = viewer()
    texts = [a.text() for a in w.file_menu.actions() if a.text()]
    assert texts[:3] == ["Open exposure…", "Open URL…", "Open repository…"]
    assert "File → Open exposure…" in w.progress_label.text()
    w.view.hovered.emit(10.0, 10.0)  # nothing open: no readout, no error
    assert w.status_text == "" and w.layout is None
    w.compare.open(tmp_path / "nothing.zarr")  # comparing before A is open is harmless too
    # a repository: its latest exposure
    repo = tmp_path / "repo"
    repo.mkdir()
    for seq in (1, 2):
        shutil.copytree(path, repo / f"MC_O_20261125_00000{seq}.zarr")
    with qtbot.waitSignal(w.opened, timeout=20000):
        w.open_repository(repo)
    assert w.url.endswith("MC_O_20261125_000002.zarr")
    wait_settled(qtbot, w)
    # an empty folder, or none at all, says so
    (tmp_path / "empty").mkdir()
    for bad, said in ((tmp_path / "empty", "no exposures in"), (tmp_path / "none", "cannot list")):
        with qtbot.waitSignal(w.open_failed, timeout=10000) as failed:
            w.open_repository(bad)
        assert said in failed.args[0] and str(bad) in failed.args[0]
        assert str(bad) in w.statusBar().currentMessage()
    assert w.url.endswith("MC_O_20261125_000002.zarr")  # what was open stays open


def test_cvt_view_without_a_path_runs_an_empty_window(qapp):
    """What the desktop entry runs: ``cvt view`` with no argument, in this process, closed
    from the event loop once it is up."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from cvt.cli import main
    from cvt.viewer.window import ViewerWindow

    seen = {}

    def look_and_close():
        wins = [x for x in QApplication.topLevelWidgets() if isinstance(x, ViewerWindow)]
        seen["windows"] = len(wins)
        if wins:
            seen["shown"] = wins[0].isVisible()
            seen["title"] = wins[0].windowTitle()
            seen["hint"] = wins[0].progress_label.text()
            wins[0].close()
        qapp.quit()

    QTimer.singleShot(300, look_and_close)
    assert main(["view"]) == 0
    assert seen == {
        "windows": 1,
        "shown": True,
        "title": "CVT",
        "hint": "no exposure: File → Open exposure…, Open URL… or Open repository…",
    }
    QApplication.processEvents()


def test_cvt_view_options_that_need_an_exposure(tmp_path):
    from tests.cvt.test_viewer import _cvt

    res = _cvt("view", "--screenshot", str(tmp_path / "x.png"))
    assert res.returncode == 2 and "need an exposure" in res.stderr
    res = _cvt("view", "--help")
    assert res.returncode == 0 and "[PATH_OR_URL]" in res.stdout and "--compare" in res.stdout
    assert "O overscan" in res.stdout and "open a repository" in res.stdout
