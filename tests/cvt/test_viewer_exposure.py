"""What the viewer says about the exposure itself: its summary (what it is, which detectors came
in, every CCD the ingest could not take and why, the health counts), and what of a damaged store
cannot be read, drawn and said, locally and over HTTP. Real windows offscreen, real stores made
by the real ingest, damaged copies of them."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from core.exposure import open_exposure
from cvt.viewer.tiles import TileKey
from tests.cvt.conftest import damaged_copy, open_and_settle, wait_settled
from tests.cvt.test_follow import publish_copy
from tests.cvt.test_viewer import grab, mouse_to, rgb_at

pytestmark = pytest.mark.gui


def summary(w) -> dict[str, list[str]]:
    """The summary panel's rows, by label (a label may have several: one per failure)."""
    rows: dict[str, list[str]] = {}
    for line in w.summary_panel.toPlainText().splitlines():
        label, text = line[:14].strip(), line[14:]
        rows.setdefault(label, []).append(text)
    return rows


def test_summary_says_what_came_in_and_what_failed(
    viewer, qtbot, sim_exposure, sim_failed, tmp_path
):
    from core.exposure import open_exposure

    repo = tmp_path / "repo"
    repo.mkdir()
    publish_copy(Path(sim_exposure[0]), repo, "MC_O_20261125_000001")
    publish_copy(Path(sim_failed), repo, "MC_O_20261125_000002")
    attrs = open_exposure(sim_failed).attrs
    w = viewer()
    open_and_settle(qtbot, w, repo / "MC_O_20261125_000002.zarr")
    # the toolbar's "summary" (by the exposure navigation) and View > Exposure summary
    view_menu = w.menuBar().actions()[0].menu()
    assert w.summary_action in view_menu.actions() and w.summary_action.text() == "summary"
    assert not w.summary_dock.isVisible()
    w.summary_action.trigger()
    assert w.summary_dock.isVisible()
    rows = summary(w)
    assert rows["exposure"] == ["MC_O_20261125_000002   complete"]
    assert rows["instrument"] == [f"{attrs['instrument']} (LSSTCam)"]
    assert rows["day obs"] == [f"{attrs['dayobs']}   seq 2"]
    assert rows["image type"] == [attrs["image_type"]]
    assert rows["exposure time"] == [f"{attrs['exposure_time']:g} s"]
    assert rows["filter"] == [attrs["filter"]]
    assert rows["airmass"] == [f"{attrs['airmass']:.3f}"]
    assert rows["date"] == [f"{attrs['date_obs']}   MJD {attrs['mjd']:.5f}"]
    assert rows["detectors"] == ["1 of 205 present"]
    missing = rows["missing"][0]
    assert missing.startswith("204: ") and "R22_S12" in missing and "R22_S11" not in missing
    assert len(missing.split(": ", 1)[1].split(", ")) == 204
    # the CCD that failed: its file and why
    (failed,) = rows["failed"]
    assert failed.startswith("MC_O_20261125_000002_R22_S12.fits: ")
    assert failed.split(": ", 1)[1] == attrs["failures"][0]["reason"] != ""
    assert rows["health"] == ["not checked (Health check)"]
    # the status bar says a CCD failed
    assert "1 CCD failed at ingest" in w.progress_label.text()
    # the health counts, once a check has run
    with qtbot.waitSignal(w.health_done, timeout=20000) as done:
        w.run_health()
    statuses = [r["status"] for r in done.args[0]]
    fail, warn, known = (statuses.count(s) for s in ("fail", "warning", "known"))
    assert summary(w)["health"] == [
        f"{fail} failing, {warn} warning, {known} known, {16 - fail - warn - known} ok of 16 amps"
    ]
    # another exposure opened by the navigation: the summary is its own
    with qtbot.waitSignal(w.opened, timeout=10000):
        w.navigate(-1)
    wait_settled(qtbot, w)
    rows = summary(w)
    assert rows["exposure"] == ["MC_O_20261125_000001   complete"]
    assert rows["detectors"] == ["2 of 205 present"] and rows["failures"] == ["none"]
    assert "failed" not in rows and rows["health"] == ["not checked (Health check)"]
    assert "failed at ingest" not in w.progress_label.text()


def test_a_damaged_exposure_says_what_is_unreadable(viewer, qtbot, sim_exposure, tmp_path):
    path, _ = sim_exposure
    broken = damaged_copy(path, tmp_path, detector="R22_S12", overview=True, metrics=True)
    w = viewer()
    open_and_settle(qtbot, w, broken)
    # the rest opens: R22_S11 is drawn from its own tiles (no overview), with data
    assert w.layout.overview is None and [d.name for d in w.layout.detectors] == ["R22_S11"]
    img = grab(w)
    bg = np.array(w.view.backgroundBrush().color().getRgb()[:3])
    x0, y0, x1, y1 = w.layout.by_name["R22_S11"].bounds
    assert np.abs(rgb_at(w, img, (x0 + x1) / 2, y0 + 0.3 * (y1 - y0)) - bg).sum() > 30
    # R22_S12 is drawn hatched in its own colour, not as absent, and labelled "unreadable"
    assert [n for n, _ in w.layout.unreadable] == ["R22_S12"]
    assert "R22_S12" not in [n for n, _ in w.layout.absent]
    ux0, uy0, ux1, uy1 = dict(w.layout.unreadable)["R22_S12"]
    ax0, ay0, ax1, ay1 = dict(w.layout.absent)["R22_S10"]
    unreadable = hatch_colour(w, img, ux0 + 0.3 * (ux1 - ux0), uy0 + 0.3 * (uy1 - uy0), bg)
    absent = hatch_colour(w, img, ax0 + 0.3 * (ax1 - ax0), ay0 + 0.3 * (ay1 - ay0), bg)
    assert unreadable[0] > 90 and unreadable[1] > 70 and unreadable[2] < 50, unreadable  # amber
    assert absent[0] > 60 and absent[1] < 60 and absent[2] < 60, absent  # red
    labelled = [
        t for t, b in zip(w.labels._texts, w.labels._boxes) if tuple(b) == (ux0, uy0, ux1, uy1)
    ]
    assert labelled == ["S12 unreadable"]
    assert w.goto("R22_S12")  # it can still be found
    wait_settled(qtbot, w)
    shown = [w.labels._texts[i] for i in w.labels.visible(*_scale_and_area(w))]
    assert "S12 unreadable" in shown
    # every reason in the summary
    rows = summary(w)
    assert rows["unreadable"] == [
        "R22_S12: metadata unreadable (KeyError: 'cvt')",
        "overview: unreadable (KeyError: 'cvt'); the detectors are drawn alone",
        "metrics table: metrics/read_noise_e cannot be read (RuntimeError: error during blosc "
        "decompression: -1)",
    ]
    # announced in the status bar
    assert "unreadable: R22_S12, overview, metrics table" in w.progress_label.text()
    # the hover names it and says why
    cx, cy = (ux0 + ux1) / 2, (uy0 + uy1) / 2
    w.view.hovered.emit(cx, cy)
    assert re.search(r"R22_S12: unreadable, metadata unreadable \(KeyError: 'cvt'\)", w.status_text)
    # no metric to choose: the heat map has nothing to draw
    assert [w.metric_box.itemText(i) for i in range(w.metric_box.count())] == ["(none)"]


def hatch_colour(w, image, fx, fy, bg, r=8) -> np.ndarray:
    """The colour of a hatched box's lines near a focal-plane point: the pixel of the patch
    that differs most from the background."""
    p = w.view.fp_to_widget(fx, fy)
    x, y = round(p.x()), round(p.y())
    px = np.array(
        [
            image.pixelColor(x + i, y + j).getRgb()[:3]
            for i in range(-r, r + 1)
            for j in range(-r, r + 1)
        ]
    )
    return px[np.argmax(np.abs(px - bg).sum(axis=1))]


def _scale_and_area(w):
    """What the label layer is painted with now: screen pixels per unit and the visible area."""
    from PySide6.QtCore import QRectF

    x0, y0, x1, y1 = w.view.view_rect()
    return 1.0 / w.view.pixel_size(), QRectF(x0, y0, x1 - x0, y1 - y0)


def test_summary_and_damage_over_http(
    viewer, qtbot, sim_exposure, sim_failed, tmp_path, monkeypatch
):
    """The same through ``cvt serve``: a damaged exposure says what it cannot read, a missing
    chunk reads out as missing (the server's 404, not zarr's fill value; the exact pixel is not
    asked for again under the cursor), and the summary of the next exposure names its failed
    CCD."""
    import cvt.viewer.window
    from core import remote
    from tests.cvt.test_remote_view import free_port, start_server, stop_server

    repo = tmp_path / "repo"
    repo.mkdir()
    broken = damaged_copy(sim_exposure[0], repo, detector="R22_S12", metrics=True)
    (broken / "detectors" / "R22_S11" / "0" / "c" / "0" / "0").unlink()
    publish_copy(Path(sim_failed), repo, "MC_O_20261125_000002")
    old = remote.configure(cache_dir=tmp_path / "chunk-cache")
    served = start_server(qtbot, repo, tmp_path / "serve.log", free_port())
    try:
        w = viewer()
        url = f"{served.url}{broken.name}"
        open_and_settle(qtbot, w, url, timeout=60000)
        assert w.url.startswith("http://")
        assert [n for n, _ in w.layout.unreadable] == ["R22_S12"]
        assert set(w.problems) == {"R22_S12", "metrics table"}
        rows = summary(w)
        assert rows["unreadable"][0] == "R22_S12: metadata unreadable (KeyError: 'cvt')"
        assert rows["unreadable"][1].startswith("metrics table: metrics/read_noise_e cannot be")
        assert "unreadable: R22_S12, metrics table" in w.progress_label.text()
        # the missing chunk: hatched, labelled, and read out as missing
        ox, oy = w.images["R22_S11"].origin
        w.view.set_rect((ox + 100, oy + 100, ox + 900, oy + 700))
        wait_settled(qtbot, w, timeout=60000)
        assert w.chunk_labels._texts == ["missing chunk"]
        pixel_reads, read = [], cvt.viewer.window._pixel
        monkeypatch.setattr(cvt.viewer.window, "_pixel", lambda *a: pixel_reads.append(a) or read(*a))
        mouse_to(qtbot, w, ox + 300.5, oy + 300.5)
        qtbot.waitUntil(lambda: "no data (missing chunk)" in w.status_text, timeout=10000)
        qtbot.waitUntil(lambda: not w._pixel_busy, timeout=10000)
        assert "no data (missing chunk)" in w.status_text and "corrected" not in w.status_text
        assert pixel_reads == []
        # the next exposure of the server's repository: its summary, its failed CCD
        w.summary_action.trigger()
        with qtbot.waitSignal(w.opened, timeout=30000):
            w.navigate(+1)
        wait_settled(qtbot, w, timeout=60000)
        rows = summary(w)
        assert rows["exposure"] == ["MC_O_20261125_000002   complete"]
        assert rows["detectors"] == ["1 of 205 present"] and "unreadable" not in rows
        assert rows["failed"][0].startswith("MC_O_20261125_000002_R22_S12.fits: ")
        assert w.summary_dock.isVisible()
    finally:
        stop_server(qtbot, served)
        remote.restore(old)


def corrupt_chunks(path) -> tuple[TileKey, str, TileKey, str]:
    """(key, path in the store) of the level-1 overview chunk under R22_S11's centre and of
    R22_S11's level-2 chunk (0, 0)."""
    from core.exposure import open_exposure
    from cvt.viewer.tiles import build_layout

    layout, _ = build_layout(open_exposure(path))
    x0, y0, x1, y1 = layout.by_name["R22_S11"].bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    (ov,) = layout.overview.tiles_in(1, (cx, cy, cx + 1, cy + 1))
    det = TileKey("R22_S11", 2, 0, 0)
    return ov, f"overview/1/c/{ov.ty}/{ov.tx}", det, "detectors/R22_S11/2/c/0/0"


def test_corrupt_chunks_are_final_read_errors(viewer, qtbot, sim_exposure, tmp_path):
    """A chunk read whole that does not decode reads the same every time: drawn hatched and
    labelled, said in the status bar and the summary, never retried, and the view settles
    (a corrupt overview chunk kept its level incomplete for ever)."""
    from cvt.viewer.loader import RETRY_FIRST_S

    path, _ = sim_exposure
    ov_key, ov_chunk, det_key, det_chunk = corrupt_chunks(path)
    broken = damaged_copy(path, tmp_path, truncated=[ov_chunk], undecodable=[det_chunk])
    w = viewer()
    open_and_settle(qtbot, w, broken)
    ov = w.layout.overview
    assert w.levels_done == set(range(ov.n_levels))  # the corrupt tile's level is complete
    assert list(w.corrupt) == [ov_key] and w.loader.corrupt == 1
    assert not w.loader.failures and w.loader.retried == 0
    (row,) = summary(w)["unreadable"]
    assert row.startswith(f"overview chunks: 1 corrupt, drawn hatched: chunk {ov_chunk}: ")
    assert row.endswith("(truncated)")
    assert "unreadable: overview chunks (View → Exposure summary)" in w.progress_label.text()
    # where level 1 of the overview is drawn: hatched and labelled, the coarsest level under it
    x0, y0, x1, y1 = w.layout.by_name["R22_S11"].bounds
    w.view.set_center_scale((x0 + x1) / 2, (y0 + y1) / 2, 2.5 * ov.base)
    wait_settled(qtbot, w)
    assert ov.level_for(w.view.pixel_size()) == 1 and ov_key in w._ov_keep
    assert w._absent_tiles[ov_key].corrupt and ov_key not in w.view.shown()
    assert TileKey("overview", ov.n_levels - 1, 0, 0) in w.view.shown()
    assert "corrupt chunk" in w.chunk_labels._texts
    # zoomed in to R22_S11: its level-2 chunk (0, 0) is corrupt too
    w.view.set_rect((x0, y0, x1, y1))
    wait_settled(qtbot, w)
    assert det_key in w._wanted and w._absent_tiles[det_key].corrupt
    assert det_key not in w.view.shown()
    assert any(k != det_key for k in w.view.shown() if k.source == "R22_S11")
    assert w.chunk_labels._texts == ["corrupt chunk"]  # the overview is not drawn here
    tx0, ty0, tx1, ty1 = w.layout.sources["R22_S11"].tile_rect(2, 0, 0)
    img = grab(w)
    pink = rgb_at(w, img, tx0 + 0.3 * (tx1 - tx0), ty0 + 0.3 * (ty1 - ty0), r=4)
    assert pink[0] > pink[2]  # hatched red over the background
    rows = summary(w)["unreadable"]
    assert rows[1] == (
        f"R22_S11 chunks: 1 corrupt, drawn hatched: chunk {det_chunk}: cannot be decoded "
        "(error during blosc decompression: -1)"
    )
    assert "unreadable: overview chunks, R22_S11 chunks" in w.progress_label.text()
    assert w.damage_lines() == rows
    # never read again: not after the first retry's wait, nor when the view comes back to it
    reads = w.loader.reads
    qtbot.wait(int(2500 * RETRY_FIRST_S))
    w.view.set_rect((x0 - 9000, y0, x1 - 9000, y1))
    wait_settled(qtbot, w)
    w.view.set_rect((x0, y0, x1, y1))
    wait_settled(qtbot, w)
    assert det_key in w._absent_tiles and w.loader.retried == 0 and w.loader.corrupt == 2
    assert w.loader.reads - reads < len(w._wanted)  # the rest came from the cache


def test_screenshot_of_an_exposure_with_corrupt_chunks_says_what_it_could_not_read(
    sim_exposure, tmp_path, qapp
):
    """The picture is taken (it waited out its timeout for the overview level), and what could
    not be read is said: the corrupt overview chunk and the level-2 chunk in view."""
    from PySide6.QtGui import QImage

    from tests.cvt.test_viewer import _cvt

    path, _ = sim_exposure
    _, ov_chunk, _, det_chunk = corrupt_chunks(path)
    ov_bytes = (Path(path) / ov_chunk).read_bytes()
    broken = damaged_copy(path, tmp_path, truncated=[ov_chunk], undecodable=[det_chunk])
    out = tmp_path / "shot.png"
    res = _cvt("view", str(broken), "--screenshot", str(out), "--size", "640x480",
               "--goto", "R22_S11_C10", "--timeout", "60")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (QImage(str(out)).width(), QImage(str(out)).height()) == (640, 480)
    said = [line for line in res.stderr.splitlines() if line.startswith("cvt view: ")]
    assert sorted(said) == [
        f"cvt view: could not read R22_S11 chunks: 1 corrupt, drawn hatched: chunk {det_chunk}: "
        "cannot be decoded (error during blosc decompression: -1)",
        f"cvt view: could not read overview chunks: 1 corrupt, drawn hatched: chunk {ov_chunk}: "
        f"{len(ov_bytes) // 2} bytes where the blosc header says {len(ov_bytes)} (truncated)",
    ]


def test_an_open_that_fails_leaves_the_shown_exposure_whole(viewer, qtbot, sim_exposure, tmp_path):
    """Another exposure is asked for while this one's tables (metrics, sources) are still being
    read, and cannot be opened: this one stays on screen, still gets its tables, and settles
    (its tables had been dropped as stale, and the view waited for them for good); the window's
    URL is still this one's (it had become the one that failed)."""
    path, _ = sim_exposure
    w = viewer()

    def open_another(exposure) -> None:
        w.opened.disconnect(open_another)
        w.open(tmp_path / "nothing.zarr")  # asked for before the tables' result comes in

    w.opened.connect(open_another)
    with qtbot.waitSignal(w.open_failed, timeout=20000) as failed:
        w.open(path)
    assert "nothing.zarr" in failed.args[0]
    wait_settled(qtbot, w)
    assert w.exposure.obsid == open_exposure(path).obsid
    assert w.url == str(path)  # navigating, following, trends go on from the one shown
    assert w.metrics and w.sources
