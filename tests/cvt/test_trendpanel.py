"""The viewer's "Trend" dock on a simulated night (four LATISS biases; amp C07's read noise
grows each exposure, as in tests/core/test_catalog.py): the plotted points are the catalog's
series, the exposure on screen is ringed, clicking a point opens its exposure; from a folder
and through ``cvt serve``."""

from __future__ import annotations

import numpy as np
import pytest

from core import remote, trend
from tests.core.test_catalog import AMP, FACTORS, simulate_noisy_night

pytestmark = pytest.mark.gui


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    repo, reports = simulate_noisy_night(tmp_path_factory.mktemp("night"))
    return repo, sorted(r.obsid for r in reports)


@pytest.fixture(autouse=True)
def private_chunk_cache(tmp_path):
    old = remote.configure(cache_dir=tmp_path / "chunk-cache")
    yield
    remote.restore(old)


def check_trend_dock(qtbot, w, repo_url, obsids, want):
    """Open the second exposure, show C07's trend: the points are ``want`` (the catalog's);
    clicking the last point opens the last exposure."""
    with qtbot.waitSignal(w.opened, timeout=60000):
        w.open(f"{repo_url.rstrip('/')}/{obsids[1]}.zarr")
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        w.show_trend(AMP)
    panel = w.trend.panel
    assert w.trend.dock.isVisible() and panel.metric == "read_noise_e" and panel.vs == "time"
    x, y = panel.points.getData()
    np.testing.assert_array_equal(x, want.x)
    np.testing.assert_array_equal(y, want.y)
    assert panel.series.obsid == obsids
    np.testing.assert_allclose(y / y[0], FACTORS, rtol=0.08)  # the drift is there
    assert AMP in panel.title.text() and "slope" in panel.title.text()
    cx, cy = panel.current.getData()  # the exposure on screen is ringed
    assert (cx[0], cy[0]) == (want.x[1], want.y[1])
    # against sequence number: another query, the same values
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        panel.vs_box.setCurrentText("seq")
    x, y = panel.points.getData()
    assert list(x) == [1.0, 2.0, 3.0, 4.0]
    np.testing.assert_array_equal(y, want.y)
    # clicking a point opens that exposure, and the ring follows
    point = panel.points.points()[3]
    with qtbot.waitSignal(w.opened, timeout=60000) as opened:
        panel.points.sigClicked.emit(panel.points, [point], None)
    assert opened.args[0].obsid == obsids[3]
    cx, cy = panel.current.getData()
    assert (cx[0], cy[0]) == (4.0, want.y[3])


def test_trend_dock_from_a_folder(viewer, qtbot, night):
    repo, obsids = night
    w = viewer()
    want = trend.series(repo, AMP, "read_noise_e", vs="time").finite()
    check_trend_dock(qtbot, w, str(repo), obsids, want)


def test_trend_dock_through_cvt_serve(viewer, qtbot, night, tmp_path):
    from tests.cvt.test_serve import Served

    repo, obsids = night
    served = Served(repo, tmp_path / "serve.log")
    try:
        w = viewer()
        want = trend.series(repo, AMP, "read_noise_e", vs="time").finite()
        check_trend_dock(qtbot, w, served.url, obsids, want)
    finally:
        served.stop()


def test_context_menu_offers_the_amp_under_the_cursor(viewer, qtbot, night):
    repo, obsids = night
    w = viewer()
    with qtbot.waitSignal(w.opened, timeout=60000):
        w.open(repo / f"{obsids[0]}.zarr")
    x0, y0, x1, y1 = w.layout.amp_boxes[w.layout.amp_index("RXX_S00", "C07")]
    p = w.view.fp_to_widget((x0 + x1) / 2, (y0 + y1) / 2)
    menu = w.trend.menu_for(p.toPoint())
    assert [a.text() for a in menu.actions()] == [f"Trend of {AMP}"]
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        menu.actions()[0].trigger()
    menu.deleteLater()
    assert w.trend.panel.series.amp == AMP and w.trend.dock.isVisible()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The night plus two flats of the same night and a bias from three weeks before."""
    from core.ingest import ingest
    from core.simulate import simulate_ccd

    tmp = tmp_path_factory.mktemp("mixed")
    repo, reports = simulate_noisy_night(tmp)
    extra = tmp / "extra"
    extra.mkdir()
    for day, seq, kind in (
        ("20261125", 5, "flat"),
        ("20261125", 6, "flat"),
        ("20261104", 1, "bias"),
    ):
        ccd = simulate_ccd(
            "RXX_S00", camera="LATISS", seed=3, image_type=kind, day_obs=day, seq=seq
        )
        ccd.write(extra / ccd.filename)
    more, _ = ingest([extra], repo, workers=1)
    assert all(r.ok for r in more)
    night = sorted(r.obsid for r in reports)
    flats = sorted(r.obsid for r in more if r.obsid.startswith("AT_O_20261125"))
    old = [r.obsid for r in more if r.obsid.startswith("AT_O_20261104")]
    return repo, night, flats, old


def test_trend_dock_filters_by_image_type_and_span(viewer, qtbot, mixed):
    """The trend follows the image type of the exposure on screen (biases and flats are not one
    trend), can be cut to the repository's last week or shown for every type; against airmass
    its line runs in airmass order, not in time order."""
    repo, night, flats, old = mixed
    w = viewer()
    with qtbot.waitSignal(w.opened, timeout=60000):
        w.open(repo / f"{night[1]}.zarr")
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        w.show_trend(AMP)
    panel = w.trend.panel
    assert panel.type_box.currentText() == "BIAS" and panel.span_box.currentText() == "all"
    assert [panel.type_box.itemText(i) for i in range(panel.type_box.count())] == [
        "all types", "BIAS", "FLAT"
    ]  # fmt: skip
    assert panel.series.obsid == old + night
    queries = w.trend._seq
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        panel.span_box.setCurrentText("last week")
    assert panel.series.obsid == night
    assert w.trend._seq == queries  # cut from the series read: the catalog is not asked again
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        panel.type_box.setCurrentText("all types")
    assert panel.series.obsid == sorted(night + flats)
    x, y = panel.points.getData()
    np.testing.assert_allclose(y[:4] / y[0], FACTORS, rtol=0.08)  # the night's biases first

    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        panel.vs_box.setCurrentText("airmass")
    s = panel.series
    assert np.any(np.diff(s.x) < 0)  # in time order the airmass goes back and forth
    x, y = panel.points.getData()
    np.testing.assert_array_equal(x, s.x)
    lx, ly = panel.line.getData()
    order = np.argsort(s.x)
    np.testing.assert_array_equal(lx, s.x[order])
    np.testing.assert_array_equal(ly, s.y[order])

    # a flat on screen: the filter follows it
    with qtbot.waitSignal(w.trend.shown, timeout=60000):
        w.open(repo / f"{flats[0]}.zarr")
    assert panel.type_box.currentText() == "FLAT" and panel.series.obsid == flats
    cx, _ = panel.current.getData()
    assert cx[0] == panel.series.x[0]
