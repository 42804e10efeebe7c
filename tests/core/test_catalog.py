"""The exposure catalog and trends on a simulated night whose amp C07 grows noisier each exposure.

Four LATISS bias exposures (one CCD each, cheap): ``noisy_amp`` on ``RXX_S00`` C07 with a read
noise factor of 1.0, 1.6, 2.2, 2.8. The batch ingest writes the catalog as it publishes; the
catalog query and ``core.trend.series`` must show the drift on C07 and none on C03.
"""

from __future__ import annotations

import functools
import http.server
import os
import sqlite3
import threading

import numpy as np
import pytest

from core import catalog, trend
from core.exposure import open_exposure
from core.ingest import ingest
from core.simulate import Fault, simulate_ccd

FACTORS = (1.0, 1.6, 2.2, 2.8)
AMP = "RXX_S00_C07"
QUIET = "RXX_S00_C03"


def simulate_noisy_night(tmp):
    """LATISS bias exposures of one CCD, amp C07 noisier each time (``FACTORS``), ingested into
    ``tmp/repo``: (repo, reports). Also the trend dock's night (tests/cvt/test_trendpanel.py)."""
    raw = tmp / "raw"
    raw.mkdir()
    for seq, factor in enumerate(FACTORS, start=1):
        faults = [Fault("RXX_S00", "C07", "noisy_amp", {"factor": factor})] if factor > 1 else []
        ccd = simulate_ccd(
            "RXX_S00", camera="LATISS", seed=3, image_type="bias", seq=seq, faults=faults
        )
        ccd.write(raw / ccd.filename)
    repo = tmp / "repo"
    reports, unreadable = ingest([raw], repo, workers=1)
    assert unreadable == [] and all(r.ok for r in reports)
    return repo, reports


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    return simulate_noisy_night(tmp_path_factory.mktemp("night"))


def test_publication_writes_one_row_per_exposure_and_per_amp(night):
    repo, reports = night
    with catalog.open_catalog(repo) as cat:
        rows = cat.exposures()
        assert [r["obsid"] for r in rows] == sorted(r.obsid for r in reports)
        assert [r["seqnum"] for r in rows] == [1, 2, 3, 4]
        for r in rows:
            assert r["image_type"].lower() == "bias"
            assert r["complete"] == 1 and r["n_detectors"] == 1 and r["n_expected"] == 1
            assert r["n_ok"] + r["n_warning"] + r["n_known"] + r["n_fail"] == 16
            assert r["mjd"] > 60000 and r["airmass"] is not None
        n_amps = cat.db.execute("SELECT count(*) FROM amps").fetchone()[0]
        assert n_amps == 4 * 16
        # every metric column of the stores' metrics tables is in the catalog
        table = open_exposure(reports[0].path).table("metrics")
        numeric = [c for c, v in table.items() if v.dtype.kind in "fiub"]
        assert set(numeric) <= set(cat.metrics())
    assert (repo / "catalog.sqlite").is_file()
    mode = sqlite3.connect(repo / "catalog.sqlite").execute("PRAGMA journal_mode").fetchone()
    assert mode[0] == "wal"


def test_query_amp_returns_the_drift_and_the_store_values(night):
    repo, reports = night
    rows = catalog.query_amp(repo, AMP, "read_noise_e")
    assert [r["seqnum"] for r in rows] == [1, 2, 3, 4]
    values = np.array([r["value"] for r in rows])
    ratio = values / values[0]
    np.testing.assert_allclose(ratio, FACTORS, rtol=0.08)
    # the catalog holds the store's numbers, not a recomputation
    for r, report in zip(rows, reports):
        t = open_exposure(report.path).table("metrics")
        i = np.flatnonzero((t["detector"] == "RXX_S00") & (t["amp"] == "C07"))[0]
        assert r["value"] == pytest.approx(float(t["read_noise_e"][i]), rel=1e-12)
    quiet = np.array([r["value"] for r in catalog.query_amp(repo, QUIET, "read_noise_e")])
    assert np.ptp(quiet) / quiet.mean() < 0.05
    # the noisiest exposure's C07 is out of spec (health status recorded per amp)
    assert rows[-1]["status"] in ("warning", "fail")


def test_filters_by_time_and_image_type(night):
    repo, _ = night
    rows = catalog.query_amp(repo, AMP, "read_noise_e")
    mjds = [r["mjd"] for r in rows]
    later = catalog.query_amp(repo, AMP, "read_noise_e", since=mjds[1])
    assert [r["seqnum"] for r in later] == [2, 3, 4]
    both = catalog.query_amp(repo, AMP, "read_noise_e", since=mjds[1], until=mjds[2])
    assert [r["seqnum"] for r in both] == [2, 3]
    assert len(catalog.query_amp(repo, AMP, "read_noise_e", image_type="BIAS")) == 4
    assert catalog.query_amp(repo, AMP, "read_noise_e", image_type="science") == []
    iso = catalog.query_amp(repo, AMP, "read_noise_e", until="2000-01-01")
    assert iso == []
    with pytest.raises(catalog.CatalogError, match="no metric"):
        catalog.query_amp(repo, AMP, "no_such_metric")


def test_trend_series_shows_the_drift(night):
    repo, _ = night
    s = trend.series(repo, AMP, "read_noise_e", vs="seq")
    assert s.x.tolist() == [1, 2, 3, 4]
    assert np.all(np.diff(s.y) > 0)
    assert s.slope() > 0
    flat = trend.series(repo, QUIET, "read_noise_e", vs="seq")
    assert abs(flat.slope()) < 0.1 * s.slope()
    by_time = trend.series(repo, AMP, "read_noise_e", vs="time")
    assert np.all(np.diff(by_time.x) > 0) and by_time.x_label == "MJD"
    by_airmass = trend.series(repo, AMP, "read_noise_e", vs="airmass")
    assert np.all(by_airmass.x >= 1.0)
    line = trend.sparkline(s.y)
    assert len(line) == 4 and line[0] == "▁" and line[-1] == "█"


def _all_amp_rows(repo) -> list[tuple]:
    """The amps table whole: its column names, then every row (columns in name order)."""
    with sqlite3.connect(catalog.catalog_path(repo)) as db:
        cols = [r[1] for r in db.execute("PRAGMA table_info(amps)")]
        order = ", ".join(f'"{c}"' for c in sorted(cols))
        rows = db.execute(f"SELECT {order} FROM amps ORDER BY obsid, detector, amp").fetchall()
    return [tuple(cols), *rows]


def test_rebuild_from_the_stores_gives_the_same_catalog(night, tmp_path):
    """The ingest records what it has just published without reading it back; rebuilding from
    the stores gives the same catalog, every metric of every amp."""
    repo, _ = night
    before = catalog.query_amp(repo, AMP, "read_noise_e")
    before_exp = catalog.query_exposures(repo)
    before_amps = _all_amp_rows(repo)
    assert len(before_amps) == 1 + 4 * 16
    (repo / "catalog.sqlite").unlink()
    for extra in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (repo / extra).unlink(missing_ok=True)
    with pytest.raises(catalog.CatalogError, match="no catalog"):
        catalog.open_catalog(repo)
    assert catalog.rebuild(repo) == 4
    after = catalog.query_amp(repo, AMP, "read_noise_e")
    assert after == before
    after_amps = _all_amp_rows(repo)
    assert sorted(after_amps[0]) == sorted(before_amps[0])
    assert after_amps[1:] == before_amps[1:]
    strip = [{k: v for k, v in r.items() if k != "written"} for r in before_exp]
    assert [
        {k: v for k, v in r.items() if k != "written"} for r in catalog.query_exposures(repo)
    ] == strip


def test_a_remote_copy_reads_the_same(night):
    """What a remote reader does: fetch ``catalog.sqlite`` through fsspec (an object store, or
    plain HTTP GET as ``cvt serve`` serves it) into a temporary file and query that."""
    import fsspec

    repo, _ = night
    local = catalog.query_amp(repo, AMP, "read_noise_e")
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/cvt-test/repo/catalog.sqlite", (repo / "catalog.sqlite").read_bytes())
    with catalog.open_catalog("memory://cvt-test/repo") as cat:
        assert cat.query_amp(AMP, "read_noise_e") == local
        tmp = cat._tmp
    assert tmp and not os.path.exists(tmp)  # the download is gone with the catalog
    with pytest.raises(catalog.CatalogError, match="no catalog"):
        catalog.open_catalog("memory://cvt-test/no-repo")

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(repo))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert catalog.query_amp(url, AMP, "read_noise_e") == local
    finally:
        server.shutdown()
        server.server_close()


def test_query_by_detector(night):
    """Every amp of a detector across exposures, by time and image type, with the metrics
    asked for (by name, without its unit, or by a prefix only one metric has)."""
    repo, reports = night
    rows = catalog.query_detector(repo, "RXX_S00", ["read_noise", "bias_lev"])
    assert len(rows) == 4 * 16
    assert [r["seqnum"] for r in rows[::16]] == [1, 2, 3, 4]
    assert [r["amp"] for r in rows[:16]] == sorted(r["amp"] for r in rows[:16])
    c07 = [r for r in rows if r["amp"] == "C07"]
    # the same numbers as the amp's own query, and the status of each amp
    assert [r["read_noise_e"] for r in c07] == [
        r["value"] for r in catalog.query_amp(repo, AMP, "read_noise_e")
    ]
    assert all(r["bias_level"] is not None and r["status"] for r in rows)
    mjds = sorted({r["mjd"] for r in rows})
    later = catalog.query_detector(repo, "RXX_S00", since=mjds[2], image_type="bias")
    assert {r["seqnum"] for r in later} == {3, 4} and len(later) == 2 * 16
    assert "read_noise_e" not in later[0] and later[0]["amp"] == "C00"
    assert catalog.query_detector(repo, "RXX_S00", image_type="flat") == []
    assert catalog.query_detector(repo, "R22_S11") == []
    with catalog.open_catalog(repo) as cat:
        assert cat.image_types() == ["BIAS"]


def test_metric_names_resolve_or_say_which_there_are(night):
    repo, _ = night
    with catalog.open_catalog(repo) as cat:
        assert cat.resolve_metric("read_noise_e") == "read_noise_e"
        assert cat.resolve_metric("read_noise") == "read_noise_e"  # the issue's own example
        assert cat.resolve_metric("read_noise_a") == "read_noise_adu"
        assert cat.resolve_metric("divisadero") == "divisadero_tearing"
        with pytest.raises(catalog.CatalogError, match="ambiguous: bias_level, bias_row_noise"):
            cat.resolve_metric("bias_")
        with pytest.raises(
            catalog.CatalogError, match=r"no metric 'noise' \(known: .*read_noise_e"
        ):
            cat.resolve_metric("noise")
    s = trend.series(repo, AMP, "read_noise", vs="seq")
    assert s.metric == "read_noise_e" and np.all(np.diff(s.y) > 0)


def test_recording_again_and_recording_what_is_missing(night, tmp_path):
    """Recording an exposure twice leaves the same rows; ``record_missing`` puts in the
    exposures a writer published without recording (read from their stores), and no others."""
    repo, reports = night
    before, before_exp = _all_amp_rows(repo), catalog.query_exposures(repo)
    exp = open_exposure(reports[1].path)
    catalog.record_exposure(repo, exp)
    catalog.record_exposure(repo, exp)
    assert _all_amp_rows(repo) == before and catalog.query_exposures(repo) == before_exp
    with sqlite3.connect(catalog.catalog_path(repo)) as db:
        for table in ("amps", "exposures"):
            db.execute(f"DELETE FROM {table} WHERE obsid = ?", (exp.obsid,))
    db.close()
    names = [r.obsid for r in reports]
    assert catalog.record_missing(repo, [*names, "AT_O_20261125_000099"]) == [exp.obsid]
    assert catalog.record_missing(repo, names) == []
    assert _all_amp_rows(repo) == before and catalog.query_exposures(repo) == before_exp
