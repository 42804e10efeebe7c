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
    # closing the last window inside exec() would post a Quit that, handled after it, leaves
    # the application quitting: every later event loop (each qtbot wait) would end at once
    qapp.setQuitOnLastWindowClosed(False)
    try:
        assert main(["view"]) == 0
    finally:
        qapp.setQuitOnLastWindowClosed(True)
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


# ---------------------------------------------------------------------------------------------
# the overlay switches, sources, PNG export


def test_outline_and_label_switches_change_the_picture(viewer, qtbot, sim_exposure):
    from tests.cvt.test_viewer import amp_box, grab, patch

    path, _ = sim_exposure
    w = viewer()
    open_and_settle(qtbot, w, path)
    assert w.goto("R22_S11")
    wait_settled(qtbot, w)
    # where amps meet (an outline), and inside amps away from their labels (none)
    edges, inside, centres = [], [], []
    for amp in ("C01", "C05", "C12", "C16"):
        x0, y0, x1, y1 = amp_box(w, "R22_S11", amp)
        edges += [(x1, y0 + f * (y1 - y0)) for f in (0.2, 0.4)]
        inside.append(((x0 + x1) / 2, y0 + 0.2 * (y1 - y0)))
        centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
    both = grab(w)
    w.outlines_check.setChecked(False)
    qtbot.wait(10)
    no_outlines = grab(w)
    w.outlines_check.setChecked(True)
    w.labels_check.setChecked(False)
    qtbot.wait(10)
    no_labels = grab(w)
    w.labels_check.setChecked(True)
    qtbot.wait(10)

    def changed(a, b, points, r):
        """Pixels that differ, around each point."""
        return [int((patch(w, a, *p, r) != patch(w, b, *p, r)).any(axis=2).sum()) for p in points]

    assert min(changed(both, no_outlines, edges, 1)) >= 3  # every outline went
    assert max(changed(both, no_outlines, inside + centres, 4)) == 0  # and nothing else
    assert min(changed(both, no_labels, centres, 6)) >= 10  # every amp label went
    assert max(changed(both, no_labels, inside + edges, 4)) == 0
    assert grab(w) == both  # and all came back


def green_near(w, image, fx, fy, radius=12) -> int:
    """Pixels of the sources' green rings within ``radius`` screen pixels of a point."""
    from tests.cvt.test_compare import as_array

    a = as_array(image).astype(int)
    p = w.view.fp_to_widget(fx, fy)
    x, y = round(p.x()), round(p.y())
    a = a[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
    return int(((a[..., 1] > a[..., 0] + 80) & (a[..., 1] > a[..., 2] + 40)).sum())


def test_sources_are_drawn_when_zoomed_in_enough(viewer, qtbot, sim_exposure):
    from cvt.viewer.window import SOURCES_MAX_PX
    from tests.cvt.test_compare import as_array
    from tests.cvt.test_viewer import grab

    path, truth = sim_exposure
    stars = truth["stars"]
    i = int(np.argmax(stars["flux"]))
    sx, sy = stars["fp_x"][i], stars["fp_y"][i]
    w = viewer()
    open_and_settle(qtbot, w, path)

    def look(px):
        w.view.set_center_scale(sx, sy, px)
        wait_settled(qtbot, w)
        return grab(w)

    near = look(0.8 * SOURCES_MAX_PX)
    assert green_near(w, near, sx, sy) > 10  # the star's ring
    far = look(2.0 * SOURCES_MAX_PX)
    a = as_array(far).astype(int)
    assert not ((a[..., 1] > a[..., 0] + 80) & (a[..., 1] > a[..., 2] + 40)).any()
    # and the switch hides them at any zoom
    near = look(0.8 * SOURCES_MAX_PX)
    assert green_near(w, near, sx, sy) > 10
    w.sources_check.setChecked(False)
    qtbot.wait(10)
    assert green_near(w, grab(w), sx, sy) == 0


def test_export_png_writes_the_view(viewer, qtbot, sim_exposure, tmp_path):
    from PySide6.QtGui import QImage

    path, _ = sim_exposure
    w = viewer()
    open_and_settle(qtbot, w, path)
    assert w.goto("R22_S12_C05")
    wait_settled(qtbot, w)
    out = tmp_path / "view.png"
    assert w.export_png(str(out))
    img = QImage(str(out))
    assert (img.width(), img.height()) == (w.view.width(), w.view.height())
    fmt = QImage.Format.Format_RGB32
    assert img.convertToFormat(fmt) == w.view.grab().toImage().convertToFormat(fmt)
    assert not w.export_png(str(tmp_path / "no-such-folder" / "view.png"))


# ---------------------------------------------------------------------------------------------
# the histogram's limit lines


def drag(widget, start, end, steps=8) -> None:
    """A left-button drag on a widget, as the mouse makes it: press, moves with the button
    held, release."""
    from PySide6.QtCore import QEvent, QPointF, Qt
    from PySide6.QtGui import QMouseEvent
    from PySide6.QtWidgets import QApplication

    left, none = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    mods = Qt.KeyboardModifier.NoModifier

    def send(kind, pos, button, buttons):
        p = QPointF(pos)
        g = QPointF(widget.mapToGlobal(p.toPoint()))
        QApplication.sendEvent(widget, QMouseEvent(kind, p, g, button, buttons, mods))

    send(QEvent.Type.MouseButtonPress, start, left, left)
    for k in range(1, steps + 1):
        t = k / steps
        p = QPointF(start.x() + t * (end.x() - start.x()), start.y() + t * (end.y() - start.y()))
        send(QEvent.Type.MouseMove, p, none, left)
    send(QEvent.Type.MouseButtonRelease, end, left, none)


def test_dragging_a_histogram_limit_line_sets_manual_limits(viewer, qtbot, sim_exposure):
    from PySide6.QtCore import QPointF

    from tests.cvt.test_viewer import grab

    path, _ = sim_exposure
    w = viewer(size=(1200, 800))
    w.hist_dock.show()
    open_and_settle(qtbot, w, path)
    assert w.goto("R22_S11")
    wait_settled(qtbot, w)
    reads, requested, before = w.loader.reads, w.loader.requested, grab(w)
    hist = w.histogram
    plot = hist.plot
    lo, hi = hist.lo_line.value(), hist.hi_line.value()
    assert hi > lo
    vb = plot.getPlotItem().getViewBox()
    y = vb.viewRect().center().y()

    def at(value):
        return plot.mapFromScene(vb.mapViewToScene(QPointF(value, y)))

    target = lo + 0.3 * (hi - lo)
    drag(plot.viewport(), at(lo), at(target))
    assert w.settings.limits == "manual"
    new_lo, new_hi = w.settings.manual
    assert new_hi == pytest.approx(hi) and new_lo == hist.lo_line.value()
    assert abs(new_lo - target) < 0.03 * (hi - lo), (lo, target, new_lo)  # a pixel or two
    assert w.limits_box.currentText() == "manual"
    wait_settled(qtbot, w)
    assert grab(w) != before and w.loader.reads == reads  # re-stretched, nothing read
    assert w.loader.requested == requested  # nor asked for


# ---------------------------------------------------------------------------------------------
# cvt demo


def test_cvt_demo_makes_a_small_exposure_once_and_shows_it(tmp_path):
    """``cvt demo`` on one CCD, with a screenshot instead of a window; started again, it uses
    the exposure it made (no simulation, no ingest)."""
    import time

    from PySide6.QtGui import QImage

    from tests.cvt.test_viewer import _cvt

    folder = tmp_path / "demo"
    args = ("demo", "--dir", str(folder), "--detectors", "R22_S11", "--seed", "3")
    times, outs = [], []
    for run in (1, 2):
        shot = tmp_path / f"demo{run}.png"
        t = time.perf_counter()
        res = _cvt(*args, "--screenshot", str(shot), timeout=600)
        times.append(time.perf_counter() - t)
        assert res.returncode == 0, res.stderr
        outs.append(res.stdout)
        assert QImage(str(shot)).width() > 0
    first, second = outs
    assert "simulating an LSSTCam science exposure: 1 CCDs" in first and "ingesting" in first
    assert "using the cached demo exposure" not in first
    assert "using the cached demo exposure" in second
    assert "simulating" not in second and "ingesting" not in second
    assert not (folder / "raw").exists()  # the raws went after the ingest
    stores = list((folder / "repo").glob("*.zarr"))
    assert len(stores) == 1 and "1 detectors" in second
    print(f"\ncvt demo, one CCD: first start {times[0]:.1f} s, second {times[1]:.1f} s")


def test_every_toolbar_control_is_in_sight_at_900_px(viewer, qtbot, sim_exposure):
    """At 900 x 700 (the tests' window) one toolbar row put the metric box and the health
    check into its overflow menu; two rows hold every control, none in an overflow menu."""
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtWidgets import QToolBar, QToolButton

    w = viewer(size=(900, 700))
    open_and_settle(qtbot, w, sim_exposure[0])  # the metric box filled with the metrics
    assert w.metric_box.count() > 1 and w.width() == 900
    window = QRect(0, 0, w.width(), w.height())

    def in_sight(widget) -> bool:
        top_left = widget.mapTo(w, QPoint(0, 0))
        return widget.isVisible() and window.contains(QRect(top_left, widget.size()))

    health = next(tb.widgetForAction(w.health_action) for tb in w.findChildren(QToolBar)
                  if tb.widgetForAction(w.health_action) is not None)  # fmt: skip
    assert in_sight(health) and in_sight(w.metric_box)
    toolbars = w.findChildren(QToolBar)
    assert len(toolbars) == 2
    for tb in toolbars:
        for action in tb.actions():
            widget = tb.widgetForAction(action)
            assert widget is not None and in_sight(widget), action.text() or widget
        overflow = tb.findChild(QToolButton, "qt_toolbar_ext_button")
        assert overflow is None or not overflow.isVisible()
    for box in (w.stretch_box, w.limits_box, w.scope_box, w.cmap_box, w.goto_edit):
        assert in_sight(box)
    for check in (w.outlines_check, w.labels_check, w.sources_check, w.health_marks_check):
        assert in_sight(check)
    health.click()  # and it works from there
    qtbot.waitUntil(lambda: w.health_dock.isVisible(), timeout=20000)
