"""``cvt check``: exit codes, JSON per amp, the HTML report with its focal-plane map."""

from __future__ import annotations

import json
import re

import pytest

from core.ingest import ingest
from cvt.cli import main

DETECTORS = ("R22_S11", "R22_S12")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A science exposure with two faults and a clean bias, simulated and ingested."""
    from core.simulate import Fault, simulate_exposure

    root = tmp_path_factory.mktemp("check")
    faults = [
        Fault("R22_S11", "C03", "dead_amp"),
        Fault("R22_S12", "C14", "noisy_amp", {"factor": 4.0}),
    ]
    sci = simulate_exposure(
        root / "raw-sci", detectors=DETECTORS, seed=5, image_type="science", seq=1,
        faults=faults, workers=1,
    )  # fmt: skip
    bias = simulate_exposure(
        root / "raw-bias", detectors=DETECTORS, seed=5, image_type="bias", seq=2, faults=False,
        workers=1,
    )  # fmt: skip
    reports, bad = ingest([root / "raw-sci", root / "raw-bias"], root / "repo", workers=1)
    assert not bad and all(r.ok and not r.failures for r in reports)
    return root / "repo", sci.obsid, bias.obsid


def test_faulty_exposure_exits_1_with_the_worst_amps_first(repo, capsys):
    path, sci, _ = repo
    assert main(["check", str(path / f"{sci}.zarr")]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{sci} (SCIENCE, 2 detectors, 32 amps):")
    assert "1 fail" in out[0]
    assert out[2].split()[:2] == ["R22_S11_C03", "fail"]
    assert "dead" in out[2]
    assert any(line.split()[0] == "R22_S12_C14" and "read_noise_e" in line for line in out[2:])


def test_json_has_one_entry_per_amp_with_reasons(repo, capsys):
    path, sci, _ = repo
    assert main(["check", str(path / f"{sci}.zarr"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["exposure"] == sci and data["category"] == "science"
    assert len(data["amps"]) == 32
    amps = {(a["detector"], a["amp"]): a for a in data["amps"]}
    dead = amps[("R22_S11", "C03")]
    assert dead["status"] == "fail"
    assert dead["reasons"] == [
        {"metric": "dead", "value": 1.0, "threshold": 0.5, "comparison": ">", "level": "fail",
         "text": "dead 1 > 0.5"}
    ]  # fmt: skip
    noisy = amps[("R22_S12", "C14")]
    (reason,) = [r for r in noisy["reasons"] if r["metric"] == "read_noise_e"]
    assert reason["value"] > 8.0 and reason["threshold"] in (8.0, 25.0)
    assert sum(a["status"] == "ok" for a in data["amps"]) >= 28
    assert data["counts"]["fail"] == sum(a["status"] == "fail" for a in data["amps"])


def test_clean_exposure_exits_0(repo, capsys):
    path, _, bias = repo
    assert main(["check", str(path / f"{bias}.zarr")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "32 ok" in out[0] and len(out) == 1


def test_html_report_with_a_focal_plane_map(repo, tmp_path, capsys):
    path, sci, _ = repo
    report = tmp_path / "health.html"
    assert main(["check", str(path / f"{sci}.zarr"), "--html", str(report)]) == 1
    assert str(report) in capsys.readouterr().out
    text = report.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<svg" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # self-contained
    rects = re.findall(r'<rect x="([-\d.]+)" y="([-\d.]+)" width="([\d.]+)" height="([\d.]+)" '
                       r'fill="(#\w+)"[^>]*><title>([^<]*)</title>', text)  # fmt: skip
    assert len(rects) == 32
    dead = [r for r in rects if r[5].startswith("R22_S11_C03")]
    assert dead[0][4] == "#d9473f" and "dead 1 &gt; 0.5" in dead[0][5]
    # amps are placed in the focal plane: R22_S12 is right of R22_S11, amps do not overlap
    x_of = {r[5].split()[0]: float(r[0]) for r in rects}
    assert x_of["R22_S12_C10"] > x_of["R22_S11_C17"]
    assert {(float(r[2]), float(r[3])) for r in rects} == {(512.0, 2002.0)}
    assert len({(r[0], r[1]) for r in rects}) == 32
    assert "<td>R22_S11</td><td>C03</td>" in text.replace("\n", "")


def test_user_config_changes_the_verdict(repo, tmp_path, capsys):
    path, sci, _ = repo
    cfg = tmp_path / "mine.toml"
    cfg.write_text('known = ["R22_S11_C03"]\n[default.read_noise_e]\nfail_above = 100.0\n')
    code = main(["check", str(path / f"{sci}.zarr"), "--json", "--config", str(cfg)])
    data = json.loads(capsys.readouterr().out)
    amps = {(a["detector"], a["amp"]): a for a in data["amps"]}
    assert amps[("R22_S11", "C03")]["status"] == "known"
    assert code == (1 if data["counts"]["fail"] else 0)


def test_errors_exit_2_with_one_line(repo, tmp_path, capsys):
    path, sci, _ = repo
    missing = tmp_path / "nope.zarr"
    assert main(["check", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(missing) in err[0]
    bad = tmp_path / "bad.toml"
    bad.write_text("[[[")
    assert main(["check", str(path / f"{sci}.zarr"), "--config", str(bad)]) == 2
    assert "bad.toml" in capsys.readouterr().err


def test_ingest_wrote_sources_and_per_ccd_metrics(repo):
    """The store's catalog: CCD and focal-plane positions of the simulated stars; the per-CCD
    PSF, sky and source count repeated on each amp's row of the metrics table."""
    import numpy as np

    from core.camera import load_camera
    from core.exposure import open_exposure

    path, sci, _ = repo
    exp = open_exposure(path / f"{sci}.zarr")
    truth = json.loads((path.parent / "raw-sci" / f"{sci}_truth.json").read_text())
    src = exp.table("sources")
    cam = load_camera("LSSTCam")
    metrics = exp.table("metrics")
    for name in DETECTORS:
        mine = src["detector"] == name
        assert mine.sum() > 100
        x, y = src["x"][mine], src["y"][mine]
        fx, fy = cam.detector(name).ccd_to_fp(x, y)
        np.testing.assert_allclose(src["fp_x"][mine], fx, atol=1e-6)
        np.testing.assert_allclose(src["fp_y"][mine], fy, atol=1e-6)
        stars = np.array(truth["stars"]["detector"]) == name
        bright = stars & (np.array(truth["stars"]["flux"]) > 1e5)
        tx = np.array(truth["stars"]["ccd_x"])[bright]
        ty = np.array(truth["stars"]["ccd_y"])[bright]
        d = np.hypot(x[None, :] - tx[:, None], y[None, :] - ty[:, None]).min(axis=1)
        # bright stars found where they are, in CCD pixels (a few sit on the dead amp or blend)
        assert np.mean(d < 1.0) > 0.8
        assert np.median(d) < 0.05
        rows = metrics["detector"] == name
        assert np.all(metrics["ccd_sources"][rows] == mine.sum())
        fwhm = metrics["ccd_psf_fwhm"][rows][0]
        # arcsec at 0.2"/px; the adaptive-moment (Gaussian) FWHM of the simulator's Moffat
        # (beta 3.5) stars comes out ~11 % above the Moffat core's FWHM
        assert fwhm == pytest.approx(truth["fwhm_px"] * 0.2, rel=0.15)
        assert metrics["ccd_sky_level"][rows][0] > 100


def test_check_over_http_gives_the_same_report_as_the_local_path(repo, tmp_path, capsys):
    """``cvt check URL`` through ``cvt serve`` as users start it, slow and failing 20 % of its
    file requests: the same summary, the same JSON per amp, the same exit status."""
    from core import remote
    from tests.cvt.test_serve import Served

    path, sci, bias = repo
    old = remote.configure(cache_dir=tmp_path / "chunk-cache", backoff=0.01, backoff_max=0.1)
    served = Served(path, tmp_path / "serve.log", "--inject-latency-ms", "10",
                    "--inject-faults", "0.2")  # fmt: skip
    try:
        for obsid in (sci, bias):
            local, url = str(path / f"{obsid}.zarr"), f"{served.url}{obsid}.zarr"
            runs = {}
            for where in (local, url):
                code = main(["check", where])
                text = capsys.readouterr().out
                json_code = main(["check", where, "--json"])
                doc = json.loads(capsys.readouterr().out)
                assert doc.pop("url").rstrip("/") == where.rstrip("/")
                runs[where] = (code, text, json_code, doc)
            assert runs[url] == runs[local]
            assert runs[local][0] == (1 if obsid == sci else 0)
    finally:
        served.stop()
        remote.restore(old)
    log = (tmp_path / "serve.log").read_text()
    assert "TEST MODE" in log and " 500 " in log  # failures did happen, and were retried
