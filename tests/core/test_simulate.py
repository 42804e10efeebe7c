"""The raw simulator: files as the camera writes them, truth that matches the pixels, determinism.

Kernels are checked against slow, obvious numpy twins; the files against astropy, the project's
own raw reader and assembly, and the real 2025 LSSTCam headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pytest
from astropy.io import fits

from core import _simulate_kernels as K
from core.assembly import assemble_ccd
from core.camera import load_camera
from core.layout import SEGMENTS_8, SEGMENTS_16, amp_placements
from core.rawfile import read_raw
from core.simulate import (
    EPER_TAIL,
    FAULT_KINDS,
    Fault,
    choose_faults,
    default_detectors,
    raw_filename,
    simulate_ccd,
    simulate_exposure,
)

SEED = 7
SCI_DETECTORS = ["R22_S11", "R01_S01"]  # one E2V, one ITL
SCI_FAULTS = [
    Fault("R22_S11", "C03", "noisy_amp", {"factor": 4.0}),
    Fault("R22_S11", "C14", "dead_amp"),
    Fault("R22_S11", "C05", "bias_jump", {"row": 1000, "step": 25.0}),
    Fault("R22_S11", "C12", "high_cti"),
    Fault("R22_S11", "C16", "hot_column"),
    Fault("R01_S01", "C01", "hot_pixels"),
    Fault("R01_S01", "C06", "dead_column"),
]
EXTNAMES_16 = ["Segment" + n[1:] for n in SEGMENTS_16]
EXTNAMES_8 = ["Segment" + n[1:] for n in SEGMENTS_8]


# ---------------------------------------------------------------------------------------------
# Fixtures: one small science exposure on disk, plain and RICE


@pytest.fixture(scope="module")
def sci(tmp_path_factory):
    out = tmp_path_factory.mktemp("sci")
    return simulate_exposure(out, detectors=SCI_DETECTORS, seed=SEED, faults=SCI_FAULTS, workers=1)


@pytest.fixture(scope="module")
def sci_rice(tmp_path_factory):
    out = tmp_path_factory.mktemp("sci_rice")
    return simulate_exposure(
        out, detectors=["R22_S11"], seed=SEED, faults=SCI_FAULTS[:5], compress="rice", workers=1
    )


@pytest.fixture(scope="module")
def raws(sci):
    return {read_raw(p).info.detector: read_raw(p) for p in sci.files}


def _file_truth(exposure, detector):
    return next(f for f in exposure.truth["files"] if f["detector"] == detector)


def naive_assemble(segments, datasec, placements):
    """The layout rule, slowly: trim to DATASEC, flip, place (row 0 at the bottom)."""
    x0, x1, y0, y1 = datasec
    w, h = x1 - x0, y1 - y0
    ncols = max(p.x_index for p in placements) + 1
    nrows = max(p.row for p in placements) + 1
    out = np.zeros((nrows * h, ncols * w), dtype=segments.dtype)
    for p, seg in zip(placements, segments, strict=True):
        d = seg[y0:y1, x0:x1]
        if p.flip_x:
            d = d[:, ::-1]
        if p.flip_y:
            d = d[::-1]
        out[p.row * h : (p.row + 1) * h, p.x_index * w : (p.x_index + 1) * w] = d
    return out


def bias_subtracted(raw, truth_file):
    """The assembled CCD minus each amp's injected bias level (float)."""
    image = assemble_ccd(raw.segments, raw.datasec, raw.placements, dtype=np.float64)
    x0, x1, y0, y1 = raw.datasec
    w, h = x1 - x0, y1 - y0
    for p, a in zip(raw.placements, truth_file["amps"], strict=True):
        assert a["amp"] == p.name
        image[p.row * h : (p.row + 1) * h, p.x_index * w : (p.x_index + 1) * w] -= a["bias"]
    return image


# ---------------------------------------------------------------------------------------------
# The files


def test_file_names_and_hdus(sci):
    assert [p.name for p in sci.files] == [
        "MC_O_20261125_000001_R01_S01.fits",  # camera (detector id) order
        "MC_O_20261125_000001_R22_S11.fits",
    ]
    assert sci.truth_path.name == "MC_O_20261125_000001_truth.json"
    for path in sci.files:
        with fits.open(path) as hdus:
            names = [h.name for h in hdus]
            assert names == [
                "PRIMARY",
                *EXTNAMES_16,
                "REB_COND",
                "CONFIG_COND",
            ]
            assert [h.header.get("EXTNAME") for h in hdus[1:17]] == EXTNAMES_16
            assert hdus[0].data is None
            for h in hdus[1:17]:
                assert h.header["BITPIX"] == 32
                assert h.data.shape == (2048, 576)
                assert h.data.dtype.kind == "i" and h.data.dtype.itemsize == 4
                assert h.data.min() >= 0 and h.data.max() < 2**18
            for h in hdus[17:]:
                assert isinstance(h, fits.BinTableHDU) and h.header["NAXIS2"] == 0


def test_primary_header(sci):
    cam = load_camera("LSSTCam")
    for path in sci.files:
        h = fits.getheader(path, 0)
        det = cam.detector(f"{h['RAFTBAY']}_{h['CCDSLOT']}")
        assert h["OBSID"] == "MC_O_20261125_000001"
        assert h["DAYOBS"] == "20261125" and h["SEQNUM"] == 1
        assert h["CAMCODE"] == "MC" and h["CONTRLLR"] == "O"
        assert h["INSTRUME"] == "lsstCam" and h["TELESCOP"] == "Simonyi Survey Telescope"
        assert h["IMGTYPE"] == h["TESTTYPE"] == "SCIENCE"
        assert h["EXPTIME"] == 30.0 and 30.0 < h["DARKTIME"] < 32.0
        assert h["CCD_MANU"] == det.vendor and h["LSST_NUM"] == det.serial
        assert h["CCD_TYPE"] == ("CCD250" if det.vendor == "E2V" else "3800C")
        assert h["FILENAME"] == path.name
        assert h["DETSIZE"] == f"[1:{det.nx},1:{det.ny}]"
        assert h["FILTBAND"] == "r" and h["FILTER"] == "r_57"
        assert 0 <= h["RASTART"] < 360 and -90 <= h["DECSTART"] <= 90
        assert 30 < h["ELSTART"] < 90 and 0 <= h["AZSTART"] < 360
        assert h["AMSTART"] == pytest.approx(1 / math.sin(math.radians(h["ELSTART"])))
        assert 0 <= h["ROTPA"] < 360 and h["SEQFILE"].endswith(".seq")
        # DATE-OBS is the next UTC day of the evening's DAYOBS, and MJD-OBS agrees with it
        assert h["DATE-OBS"].startswith("2026-11-26T") and h["DATE-BEG"] == h["DATE-OBS"]
        assert h["DATE-END"] > h["DATE-BEG"]
        assert h["MJD-OBS"] == pytest.approx(61370.0, abs=1.0)
        assert any("Simulated" in str(c) for c in h["COMMENT"])


def test_segment_headers_follow_the_real_convention(sci):
    for path in sci.files:
        with fits.open(path) as hdus:
            vendor = hdus[0].header["CCD_MANU"]
            h10, h00 = hdus["Segment10"].header, hdus["Segment00"].header
            if vendor == "ITL":
                assert h10["DATASEC"] == "[4:512,1:2000]"
                assert h10["DETSEC"] == "[509:1,1:2000]"
                assert h00["DETSEC"] == "[509:1,4000:2001]"
                assert h10["DETSIZE"] == "[1:4072,1:4000]"
            else:
                assert h10["DATASEC"] == "[11:522,1:2002]"
                assert h10["DETSEC"] == "[512:1,1:2002]"
                assert h00["DETSEC"] == "[1:512,4004:2003]"
                assert h10["DETSIZE"] == "[1:4096,1:4004]"
                # the real E2V Segment00 (obs_lsst test data, 2021)
                assert (h00["DTV1"], h00["DTV2"], h00["DTM1_1"], h00["DTM2_2"]) == (
                    -10,
                    4005,
                    1,
                    -1,
                )
            for h in (hdu.header for hdu in hdus[1:17]):
                assert h["CCDSUM"] == "1 1"
                for s in "ACRFEBQ":
                    assert f"WCSNAME{s}" in h and f"CRVAL1{s}" in h and f"PC1_1{s}" in h


def test_segment_wcs_maps_raw_pixels_like_the_layout_rule(raws):
    """The camera's CCD frame (WCS C) is ours transposed, 1-based: CCD_X = y + 1, CCD_Y = x + 1."""
    for raw in raws.values():
        x0, x1, y0, y1 = raw.datasec
        w, h = x1 - x0, y1 - y0
        for p, hdr in zip(raw.placements, raw.segment_headers, strict=True):
            for p1, p2 in ((x0 + 1, 1), (x1, h), (x0 + 7, 33)):  # 1-based raw column, row
                u, v = p1 - 1 - x0, p2 - 1
                x = p.x_index * w + (w - 1 - u if p.flip_x else u)
                y = p.row * h + (h - 1 - v if p.flip_y else v)
                ccd_x = hdr["CRVAL1C"] + hdr["PC1_1C"] * p1 + hdr["PC1_2C"] * p2
                ccd_y = hdr["CRVAL2C"] + hdr["PC2_1C"] * p1 + hdr["PC2_2C"] * p2
                assert (ccd_x, ccd_y) == (y + 1, x + 1), (p.name, p1, p2)


@pytest.mark.realdata
def test_headers_carry_the_real_2025_keys(obs_lsst, sci):
    """Every key of a real 2025 LSSTCam raw (primary + first segment) is in ours, except the
    checksums and the three 'STUTTER' keys with blanks in their names; the values of the segment
    keys of the same CCD (R01_S01) are the real ones."""
    import yaml

    real = yaml.safe_load(
        (obs_lsst / "headers" / "lsstCam-MC_O_20250415_000060_R01_S01.yaml").read_text()
    )
    path = next(p for p in sci.files if "R01_S01" in p.name)
    with fits.open(path) as hdus:
        ours = set(hdus[0].header) | set(hdus[1].header)
        seg = hdus[1].header
    skip = {"CHECKSUM", "DATASUM", "ZDATASUM", "ZHECKSUM"}
    compressed = {k for k in real if k.startswith("Z") or k in ("TTYPE1", "TFORM1", "TFIELDS")}
    missing = set(real) - ours - skip - compressed - {k for k in real if " " in k}
    assert missing == set()
    for key in ("DATASEC", "DETSEC", "DETSIZE", "DTV1", "DTV2", "CRVAL1A", "CRVAL2A", "CRVAL1C",
                "CRVAL2C", "CRVAL1R", "CRVAL2R", "CRVAL1F", "CRVAL2F", "CRVAL1E", "CRVAL2Q",
                "PC1_2C", "PC2_1C", "PC1_1E", "PC2_2B"):  # fmt: skip
        assert seg[key] == real[key], key


def test_raw_reader_round_trip(raws, sci):
    assert set(raws) == set(SCI_DETECTORS)
    for det, raw in raws.items():
        info = raw.info
        assert info.camera == "LSSTCam" and info.obsid == "MC_O_20261125_000001"
        assert info.compression == "none" and info.n_segments == 16
        assert info.vendor == load_camera("LSSTCam").detector(det).vendor
        ccd = simulate_ccd(det, seed=SEED, faults=[f for f in SCI_FAULTS if f.detector == det])
        assert np.array_equal(ccd.segments, raw.segments)  # in memory == on disk
        # the project's assembly agrees with the slow layout rule
        np.testing.assert_array_equal(
            assemble_ccd(raw.segments, raw.datasec, raw.placements),
            naive_assemble(raw.segments, raw.datasec, raw.placements),
        )


def test_rice_decodes_to_the_plain_pixels(sci, sci_rice):
    plain = next(p for p in sci.files if "R22_S11" in p.name)
    rice = sci_rice.files[0]
    assert rice.stat().st_size < plain.stat().st_size / 3
    with fits.open(plain) as a, fits.open(rice) as b:
        assert [h.name for h in a] == [h.name for h in b]
        for i in range(1, 17):
            assert isinstance(b[i], fits.CompImageHDU)
            np.testing.assert_array_equal(a[i].data, b[i].data)
            assert b[i].header["DETSEC"] == a[i].header["DETSEC"]
    with fits.open(rice, disable_image_compression=True) as b:
        h = b[1].header
        assert (h["ZCMPTYPE"], h["ZTILE1"], h["ZTILE2"], h["ZBITPIX"]) == ("RICE_1", 576, 1, 32)
        assert (h["ZNAXIS1"], h["ZNAXIS2"], h["ZVAL1"], h["ZVAL2"]) == (576, 2048, 32, 4)
        assert "ZQUANTIZ" not in h  # integers: lossless
    raw = read_raw(rice)
    assert raw.info.compression == "rice"
    np.testing.assert_array_equal(raw.segments, read_raw(plain).segments)


# ---------------------------------------------------------------------------------------------
# The truth against the pixels


def test_truth_file(sci):
    truth = json.loads(sci.truth_path.read_text())
    assert truth == json.loads(json.dumps(sci.truth))
    assert truth["schema"] == "cvt-simulate-truth/1"
    assert (truth["camera"], truth["obsid"], truth["image_type"]) == (
        "LSSTCam", "MC_O_20261125_000001", "science",
    )  # fmt: skip
    assert truth["seed"] == SEED and truth["exptime"] == 30.0
    assert [f["file"] for f in truth["files"]] == [p.name for p in sci.files]
    assert {(f["detector"], f["amp"], f["kind"]) for f in truth["faults"]} == {
        (f.detector, f.amp, f.kind) for f in SCI_FAULTS
    }
    for f in truth["files"]:
        assert [a["amp"] for a in f["amps"]] == list(SEGMENTS_16)
        assert all(0.5 < a["gain"] < 3 for a in f["amps"])
    stars = truth["stars"]
    n = len(stars["ccd_x"])
    assert n > 300 and all(len(v) == n for v in stars.values())
    cam = load_camera("LSSTCam")
    for det in SCI_DETECTORS:
        sel = [i for i in range(n) if stars["detector"][i] == det]
        fx, fy = cam.detector(det).ccd_to_fp(
            np.array(stars["ccd_x"])[sel], np.array(stars["ccd_y"])[sel]
        )
        np.testing.assert_allclose(fx, np.array(stars["fp_x"])[sel], atol=2e-3)
        np.testing.assert_allclose(fy, np.array(stars["fp_y"])[sel], atol=2e-3)
    assert 3.5 <= stars["fwhm"][0] <= 5.0
    assert any(stars["saturated"]) and not all(stars["saturated"])


def _overscan(raw, i, rows=None):
    """Serial overscan of segment i, without the first 8 columns (the EPER tail)."""
    x0, x1, y0, y1 = raw.datasec
    seg = raw.segments[i]
    return seg[y0:y1, x1 + len(EPER_TAIL) :] if rows is None else seg[rows, x1 + len(EPER_TAIL) :]


def test_bias_and_read_noise_in_the_overscan(raws, sci):
    for det, raw in raws.items():
        truth = _file_truth(sci, det)
        jump = {f.amp: f.params for f in SCI_FAULTS if f.detector == det and f.kind == "bias_jump"}
        for i, a in enumerate(truth["amps"]):
            rows = slice(0, jump[a["amp"]]["row"]) if a["amp"] in jump else None
            over = _overscan(raw, i, rows).astype(np.float64)
            assert abs(np.median(over) - a["bias"]) <= 1.0, (det, a["amp"])
            resid = over - over.mean(axis=1, keepdims=True)  # the row-to-row wander out
            n = over.shape[1]
            sigma = resid.std() * math.sqrt(n / (n - 1))
            if a["dead"]:
                assert sigma == 0.0 and np.all(raw.segments[i] == a["bias"])
            else:
                assert sigma == pytest.approx(a["read_noise_adu"], rel=0.05), (det, a["amp"])
            # the prescan carries the same bias and noise
            pre = raw.segments[i][: raw.datasec[3], : raw.datasec[0]].astype(np.float64)
            if rows is None:
                assert abs(np.median(pre) - a["bias"]) <= 1.5


def test_noisy_and_dead_amps(raws, sci):
    raw = raws["R22_S11"]
    truth = _file_truth(sci, "R22_S11")
    table = {a.name: a for a in load_camera("LSSTCam").detector("R22_S11").amps}
    sig = {}
    for i, a in enumerate(truth["amps"]):
        over = _overscan(raw, i).astype(np.float64)
        sig[a["amp"]] = (over - over.mean(axis=1, keepdims=True)).std()
    others = np.median([v for k, v in sig.items() if k not in ("C03", "C14")])
    assert sig["C03"] > 3.5 * others
    assert sig["C03"] == pytest.approx(4.0 * table["C03"].read_noise / table["C03"].gain, rel=0.05)
    dead = raw.segments[SEGMENTS_16.index("C14")]
    assert dead.min() == dead.max() == truth["amps"][SEGMENTS_16.index("C14")]["bias"]
    fault = next(f for f in sci.truth["faults"] if f["kind"] == "dead_amp")
    assert fault["params"]["level"] == dead[0, 0]


def test_bias_jump_in_the_overscan_row_profile(raws, sci):
    raw = raws["R22_S11"]
    i = SEGMENTS_16.index("C05")
    profile = np.median(_overscan(raw, i), axis=1)
    steps = np.array(
        [profile[r : r + 25].mean() - profile[r - 25 : r].mean() for r in range(25, 1977)]
    )
    assert np.argmax(np.abs(steps)) + 25 == pytest.approx(1000, abs=2)
    assert profile[1000:1025].mean() - profile[975:1000].mean() == pytest.approx(25.0, abs=2.0)


def test_high_cti_amp_trails_into_the_overscan(raws, sci):
    raw = raws["R22_S11"]
    truth = _file_truth(sci, "R22_S11")
    x0, x1, y0, y1 = raw.datasec
    excess = {}
    for i, a in enumerate(truth["amps"]):
        if a["dead"]:
            continue
        seg = raw.segments[i][y0:y1].astype(np.float64)
        level = seg[:, x1 + len(EPER_TAIL) :].mean(axis=1)  # per row: bias, wander, jumps
        last = (seg[:, x1 - 1] - level).mean()  # signal of the last data column, ADU
        first3 = (seg[:, x1 : x1 + 3] - level[:, None]).mean(axis=0)
        excess[a["amp"]] = first3[0]
        n = a["serial_transfers"]
        if a["amp"] == "C12":
            assert a["serial_cti"] == 1e-4
            expected = a["serial_cti"] * (n + 1) * last * np.array(EPER_TAIL[:3])
            np.testing.assert_allclose(first3, expected, rtol=0.05)
            # the camera team's EPER estimate recovers the CTI (times the tail in 3 columns)
            eper = first3.sum() / last / (n + 1)
            assert eper == pytest.approx(1e-4 * sum(EPER_TAIL[:3]), rel=0.05)
    assert excess["C12"] > 20
    assert max(v for k, v in excess.items() if k != "C12") < 0.1 * excess["C12"]


def test_hot_column_and_hot_pixels(raws, sci):
    truth = _file_truth(sci, "R22_S11")
    fault = next(f for f in sci.truth["faults"] if f["kind"] == "hot_column")
    image = bias_subtracted(raws["R22_S11"], truth)
    col = fault["params"]["column"]
    amp = load_camera("LSSTCam").detector("R22_S11").amp("C16")
    assert amp.x0 <= col < amp.x0 + amp.nx
    rows = slice(amp.y0, amp.y0 + amp.ny)
    here = np.median(image[rows, col])
    beside = np.median(image[rows, col - 3 : col + 4][:, [0, 1, 5, 6]])
    gain = truth["amps"][SEGMENTS_16.index("C16")]["gain"]
    p = fault["params"]
    expected = (p["rate"] * sci.truth["darktime"] + p["offset"]) / gain
    assert here - beside == pytest.approx(expected, rel=0.05)
    # the columns next to it are ordinary sky
    assert abs(np.median(image[rows, col + 2]) - beside) < 5

    truth = _file_truth(sci, "R01_S01")
    fault = next(f for f in sci.truth["faults"] if f["kind"] == "hot_pixels")
    image = bias_subtracted(raws["R01_S01"], truth)
    p = fault["params"]
    r = math.ceil(p["radius"]) + 1
    box = image[p["y"] - r : p["y"] + r + 1, p["x"] - r : p["x"] + r + 1]
    sky = np.median(image[p["y"] - 60 : p["y"] + 60, p["x"] - 60 : p["x"] + 60])
    bright = np.count_nonzero(box > sky + 400)
    assert bright >= min(10, p["n_pixels"] // 2)


def test_dead_column_in_a_flat():
    faults = [
        Fault("R01_S01", "C06", "dead_column", {"column": 3300}),
        Fault("R01_S01", "C13", "high_cti"),
    ]
    ccd = simulate_ccd("R01_S01", seed=SEED, image_type="flat", faults=faults)
    truth = ccd.truth
    assert truth["faults"][0]["params"]["column"] == 3300
    image = assemble_ccd(ccd.segments, (3, 512, 0, 2000), ccd.placements, dtype=np.float64)
    for p, a in zip(ccd.placements, truth["amps"], strict=True):
        image[p.row * 2000 : (p.row + 1) * 2000, p.x_index * 509 : (p.x_index + 1) * 509] -= a[
            "bias"
        ]
    amp = load_camera("LSSTCam").detector("R01_S01").amp("C06")
    rows = slice(amp.y0, amp.y0 + amp.ny)
    level = np.median(image[rows, 3290:3299])
    assert 25_000 < level < 50_000  # ~50k e- at gain ~1.2-1.5
    assert np.median(image[rows, 3300]) < 0.05 * level
    # the high-CTI amp of a flat: a big deferred-charge tail
    i = SEGMENTS_16.index("C13")
    first = ccd.segments[i][:2000, 512].astype(np.float64).mean() - truth["amps"][i]["bias"]
    assert first > 500


def test_a_bright_star_peaks_at_its_truth_position(raws, sci):
    stars = sci.truth["stars"]
    n = len(stars["ccd_x"])
    cam = load_camera("LSSTCam")
    checked = 0
    for det in SCI_DETECTORS:
        truth = _file_truth(sci, det)
        image = bias_subtracted(raws[det], truth)
        d = cam.detector(det)
        idx = [i for i in range(n) if stars["detector"][i] == det]
        xs, ys = np.array(stars["ccd_x"])[idx], np.array(stars["ccd_y"])[idx]
        flux = np.array(stars["flux"])[idx]
        for k in np.argsort(-np.array(stars["peak"])[idx]):
            i = idx[k]
            x, y = stars["ccd_x"][i], stars["ccd_y"][i]
            near = np.hypot(xs - x, ys - y) < 25
            isolated = np.all(flux[near] <= flux[k]) and near.sum() == 1
            amp = next(a for a in d.amps if a.contains(np.array(round(x)), np.array(round(y))))
            inside = (
                amp.x0 + 10 < x < amp.x0 + amp.nx - 10 and amp.y0 + 10 < y < amp.y0 + amp.ny - 10
            )
            if stars["saturated"][i] or stars["peak"][i] < 3000 or not (isolated and inside):
                continue
            ix, iy = round(x), round(y)
            win = image[iy - 4 : iy + 5, ix - 4 : ix + 5]
            jy, jx = np.unravel_index(np.argmax(win), win.shape)
            assert abs(ix - 4 + jx - x) <= 1.0 and abs(iy - 4 + jy - y) <= 1.0, (det, x, y)
            gain = truth["amps"][SEGMENTS_16.index(amp.name)]["gain"]
            sky = np.median(image[iy - 40 : iy + 41, ix - 40 : ix + 41])
            assert win.max() - sky == pytest.approx(stars["peak"][i] / gain, rel=0.15)
            checked += 1
            break
    assert checked == 2


def test_saturated_stars_clip_at_the_saturation_level_and_bleed(raws, sci):
    stars = sci.truth["stars"]
    cam = load_camera("LSSTCam")
    checked = 0
    for i in np.flatnonzero(stars["saturated"]):
        det = stars["detector"][i]
        d = cam.detector(det)
        x, y = round(stars["ccd_x"][i]), round(stars["ccd_y"][i])
        amp = next(a for a in d.amps if a.contains(np.array(x), np.array(y)))
        if not (amp.y0 + 60 < y < amp.y0 + amp.ny - 60):
            continue
        raw = raws[det]
        image = assemble_ccd(raw.segments, raw.datasec, raw.placements)
        sat = _file_truth(sci, det)["amps"][SEGMENTS_16.index(amp.name)]["saturation"]
        column = image[amp.y0 : amp.y0 + amp.ny, x]
        assert image[y, x] == int(sat)
        assert np.count_nonzero(column == int(sat)) >= 3  # the core and its bleed trail
        checked += 1
    assert checked >= 1


# ---------------------------------------------------------------------------------------------
# Faults


def test_choose_faults():
    dets = default_detectors("LSSTCam")
    eight = dets[90:98]
    faults = choose_faults("LSSTCam", eight, seed=3)
    assert {f.kind for f in faults} == set(FAULT_KINDS)
    assert len({(f.detector, f.amp) for f in faults}) == len(faults)
    assert all(f.detector in eight for f in faults)
    assert choose_faults("LSSTCam", eight[::-1], seed=3) == faults  # order does not matter
    assert choose_faults("LSSTCam", eight, seed=4) != faults
    science = [d.name for d in load_camera("LSSTCam").detectors if d.kind == "science"]
    counts = [f.kind for f in choose_faults("LSSTCam", science, seed=1)]
    assert all(counts.count(k) == round(189 / 20) for k in FAULT_KINDS)
    # small exposures: about one of each kind per 20 CCDs
    n = sum(len(choose_faults("LSSTCam", dets[:2], seed=s)) for s in range(200))
    assert 0.5 * 200 * 7 * 2 / 20 < n < 1.5 * 200 * 7 * 2 / 20
    columns = [f for f in faults if f.kind in ("hot_column", "dead_column")]
    cam = load_camera("LSSTCam")
    for f in columns:
        amp = cam.detector(f.detector).amp(f.amp)
        assert amp.x0 <= f.params["column"] < amp.x0 + amp.nx


def test_fault_validation():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault("R22_S11", "C00", "melted")
    with pytest.raises(ValueError, match="outside the amp"):
        simulate_ccd("R22_S11", faults=[Fault("R22_S11", "C00", "hot_column", {"column": 4000})])
    with pytest.raises(KeyError):
        simulate_ccd("R22_S11", faults=[Fault("R22_S11", "C99", "noisy_amp")])


# ---------------------------------------------------------------------------------------------
# Determinism, other cameras, wavefront sensors


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    dets = ["R00_SW0", "R00_SW1"]  # wavefront sensors: half-size CCDs
    a = simulate_exposure(tmp_path / "a", detectors=dets, seed=11, workers=1)
    b = simulate_exposure(tmp_path / "b", detectors=dets, seed=11, workers=2)  # threads
    assert len(a.files) == 2
    for fa, fb in zip(a.files, b.files, strict=True):
        assert _digest(fa) == _digest(fb)
    assert a.truth_path.read_bytes() == b.truth_path.read_bytes()
    # the wavefront sensor's 8 segments and 4072 x 2000 geometry
    raw = read_raw(a.files[0])
    assert raw.info.n_segments == 8 and raw.segments.shape == (8, 2048, 576)
    with fits.open(a.files[0]) as hdus:
        assert [h.name for h in hdus[1:9]] == EXTNAMES_8
        assert hdus[9].name == "REB_COND"
        assert hdus[1].header["DETSIZE"] == "[1:4072,1:2000]"
        assert hdus[0].header["LSST_NUM"].startswith("ITL-4400B")
    assert raw.placements == amp_placements("ITL", 8)
    image = assemble_ccd(raw.segments, raw.datasec, raw.placements)
    assert image.shape == (2000, 4072)
    np.testing.assert_array_equal(image, naive_assemble(raw.segments, raw.datasec, raw.placements))


def test_different_seeds_differ():
    a = simulate_ccd("R00_SW0", seed=1, image_type="bias")
    b = simulate_ccd("R00_SW0", seed=2, image_type="bias")
    c = simulate_ccd("R00_SW0", seed=1, image_type="bias", parallel=False)
    assert np.array_equal(a.segments, c.segments)  # threads or not: the same pixels
    assert not np.array_equal(a.segments, b.segments)
    assert a.truth["amps"][0]["bias"] != b.truth["amps"][0]["bias"]
    d = simulate_ccd("R00_SW0", seed=1, image_type="bias", seq=2)  # next exposure: new noise
    assert not np.array_equal(a.segments, d.segments)
    assert abs(a.truth["amps"][0]["bias"] - d.truth["amps"][0]["bias"]) < 3  # same electronics


def test_comcam_and_latiss_names(tmp_path):
    assert default_detectors("ComCam") == [f"R22_S{r}{c}" for r in range(3) for c in range(3)]
    assert raw_filename("ComCam", "R22_S11", "20261125", 5) == "CC_O_20261125_000005_R22_S11.fits"
    assert default_detectors("LATISS") == ["RXX_S00"]
    assert raw_filename("LATISS", "RXX_S00", "20261125", 1) == "AT_O_20261125_000001_R00_S00.fits"
    exp = simulate_exposure(tmp_path, camera="LATISS", seed=1, image_type="bias", workers=1)
    assert [p.name for p in exp.files] == ["AT_O_20261125_000001_R00_S00.fits"]
    assert exp.truth["files"][0]["detector"] == "RXX_S00"
    h = fits.getheader(exp.files[0], 0)
    assert (h["RAFTBAY"], h["CCDSLOT"], h["CAMCODE"], h["INSTRUME"]) == (
        "R00",
        "S00",
        "AT",
        "LATISS",
    )
    assert h["LSST_NUM"] == "ITL-3800C-068" and h["IMGTYPE"] == "BIAS" and h["EXPTIME"] == 0.0
    assert fits.getheader(exp.files[0], 1)["CRVAL1F"] == 16826.0  # as the real 2024 LATISS raw
    # one CCD made in memory and written is the same file, byte for byte
    faults = choose_faults("LATISS", ["RXX_S00"], seed=1)  # what the exposure chose
    ccd = simulate_ccd("R00_S00", camera="LATISS", seed=1, image_type="bias", faults=faults)
    assert ccd.filename == exp.files[0].name
    assert ccd.write(tmp_path / "again.fits").read_bytes() == exp.files[0].read_bytes()
    info = read_raw(exp.files[0]).info
    assert (info.camera, info.detector, info.obsid) == ("LATISS", "RXX_S00", "AT_O_20261125_000001")
    with pytest.raises(KeyError):
        raw_filename("ComCam", "R01_S00", "20261125", 1)


def test_image_types():
    levels = {}
    for kind in ("bias", "dark", "flat", "science"):
        ccd = simulate_ccd("R00_SW1", seed=3, image_type=kind, keep_signal=True)
        levels[kind] = float(np.median(ccd.signal))
        if kind in ("bias", "dark"):
            assert ccd.truth["stars"] is None
    assert levels["bias"] < 0.01 and levels["dark"] < 0.1
    assert 40_000 < levels["flat"] < 55_000 and 600 < levels["science"] < 1300


# ---------------------------------------------------------------------------------------------
# The command


def test_cli(tmp_path, capsys):
    from cvt.cli import main

    argv = ["simulate", str(tmp_path), "--camera", "latiss", "--image-type", "dark",
            "--exposures", "2", "--seed", "4", "--no-faults", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "AT_O_20261125_000001_R00_S00.fits",
        "AT_O_20261125_000001_truth.json",
        "AT_O_20261125_000002_R00_S00.fits",
        "AT_O_20261125_000002_truth.json",
    ]
    truth = json.loads((tmp_path / "AT_O_20261125_000002_truth.json").read_text())
    assert truth["faults"] == [] and truth["image_type"] == "dark" and truth["exptime"] == 30.0
    assert "AT_O_20261125_000002: 1 file" in capsys.readouterr().out
    assert main(["simulate", str(tmp_path), "--detectors", "R99_S99"]) == 2


# ---------------------------------------------------------------------------------------------
# Kernels against slow twins


def _splitmix64_py(key, counter):
    m = (1 << 64) - 1
    z = (key + counter * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def test_splitmix64_matches_python():
    for key, counter in ((0, 0), (1, 2), (2**64 - 1, 12345), (0xDEADBEEF, 2**40)):
        assert int(K.splitmix64(np.uint64(key), np.uint64(counter))) == _splitmix64_py(key, counter)


def test_normal_and_poisson_distributions():
    z = np.empty(2_000_000)
    u = np.empty(2_000_000)
    K.fill_draws(np.uint64(99), z, u)
    assert abs(z.mean()) < 0.003 and z.std() == pytest.approx(1.0, abs=0.003)
    assert np.mean(np.abs(z) > 3) == pytest.approx(0.0026998, rel=0.1)
    assert np.mean(np.abs(z) > 3.5) > 0  # the ziggurat's tail path
    assert u.min() > 0 and u.max() < 1 and u.mean() == pytest.approx(0.5, abs=0.002)
    assert abs(np.corrcoef(z, u)[0, 1]) < 0.003  # independent bits of one draw
    for lam in (0.002, 0.7, 5.0, 19.0):
        draws = np.array([K.poisson_inv(lam, x) for x in u[:200_000]])
        assert draws.mean() == pytest.approx(lam, rel=0.05, abs=1e-3)
        assert draws.var() == pytest.approx(lam, rel=0.05, abs=1e-3)
    assert K.poisson_inv(0.0, 0.9) == 0.0


def naive_segment(shape, signal, x0, y0, flip_x, flip_y, pre, nxd, nyd, gain, rn_adu, clip_hi,
                  cti_s, n_s, tail_s, cti_p, n_p, tail_p, row_offset, key, dead):  # fmt: skip
    """``fill_segment``, slowly: the data section un-flipped into readout order, EPER, noise."""
    rows, cols = shape
    if dead >= 0:
        return np.full(shape, math.floor(dead + 0.5), dtype=np.int32)
    z = np.empty(rows * cols)
    u = np.empty(rows * cols)
    K.fill_draws(np.uint64(key), z, u)
    z, u = z.reshape(shape), u.reshape(shape)
    data = signal[y0 : y0 + nyd, x0 : x0 + nxd].astype(np.float64)
    if flip_x:
        data = data[:, ::-1]
    if flip_y:
        data = data[::-1]
    lam = np.zeros(shape)
    lam[:nyd, pre : pre + nxd] = data
    for t in range(min(len(tail_s), cols - pre - nxd)):
        lam[:nyd, pre + nxd + t] = cti_s * (n_s + 1) * data[:, -1] * tail_s[t]
    for t in range(min(len(tail_p), rows - nyd)):
        lam[nyd + t, pre : pre + nxd] = cti_p * (n_p + 1) * tail_p[t] * data[-1]
    inv = 1.0 / gain
    small = lam < K.POISSON_EXACT_BELOW
    e = np.array([K.poisson_inv(v, w) for v, w in zip(lam.ravel(), u.ravel(), strict=True)])
    e = e.reshape(shape)
    off = row_offset[:, None]
    value = np.where(
        small,
        off + e * inv + rn_adu * z,
        off + lam * inv + np.sqrt(lam * inv * inv + rn_adu * rn_adu) * z,
    )
    return np.clip(np.floor(value + 0.5), 0, clip_hi).astype(np.int32)


@pytest.mark.parametrize("flip_x", [False, True])
@pytest.mark.parametrize("flip_y", [False, True])
@pytest.mark.parametrize("dead", [-1.0, 25000.4])
def test_fill_segment_matches_its_twin(flip_x, flip_y, dead):
    rng = np.random.default_rng(5)
    signal = rng.uniform(0, 60, (50, 40)).astype(np.float32)  # both Poisson branches
    signal[30, 25] = 0.0
    signal[31, 26] = 2.0e5  # saturates: clipped
    shape, pre, nxd, nyd, x0, y0 = (26, 18), 2, 12, 21, 20, 25
    tail = np.asarray(EPER_TAIL)
    row_offset = 1000 + rng.normal(0, 1, shape[0])
    args = (signal, x0, y0, flip_x, flip_y, pre, nxd, nyd, 1.3, 4.5, 30000.0,
            3e-3, 14, tail, 2e-3, 21, tail, row_offset, 12345, dead)  # fmt: skip
    out = np.empty(shape, dtype=np.int32)
    K.fill_segment(out, *args)
    np.testing.assert_array_equal(out, naive_segment(shape, *args))


def test_bleed_conserves_charge_and_caps_at_full_well():
    signal = np.full((200, 30), 100.0, dtype=np.float32)
    signal[100, 10] = 5.0e5
    signal[101, 10] = 3.0e5
    total = signal.sum(dtype=np.float64)
    before = signal.copy()
    K.bleed_columns(signal, 0, 30, 0, 200, np.float32(9.0e4))
    assert signal.max() <= 9.0e4
    assert signal.sum(dtype=np.float64) == pytest.approx(total, rel=1e-6)
    np.testing.assert_array_equal(np.delete(signal, 10, axis=1), np.delete(before, 10, axis=1))
    full = np.flatnonzero(signal[:, 10] == np.float32(9.0e4))
    assert np.all(np.diff(full) == 1)  # one contiguous trail, about centred on the star
    assert abs((full[0] + full[-1]) / 2 - 100.5) <= 1
    # at an edge the charge that leaves the amp is lost, never wrapped: 9e5 e- over the full
    # well, half of it up the column, half off the edge
    edge = np.zeros((10, 3), dtype=np.float32)
    edge[0, 1] = 1.0e6
    K.bleed_columns(edge, 0, 3, 0, 10, np.float32(1.0e5))
    assert edge[:, 1].tolist() == [1.0e5] * 5 + [5.0e4] + [0.0] * 4  # the other half is lost
    assert edge[:, [0, 2]].sum() == 0


def test_moffat_stamp():
    stamp, ix0, iy0 = K.moffat_stamp(1.0e5, 50.3, 20.8, 4.0, 3.5, 15)
    assert stamp.sum() == pytest.approx(1.0e5)
    j, i = np.unravel_index(np.argmax(stamp), stamp.shape)
    assert (ix0 + i, iy0 + j) == (50, 21)


@pytest.mark.parametrize(
    "case", ["noise", "zeros", "constant", "full_range", "cosmic", "short", "one", "extremes"]
)
def test_rice_encoder_is_cfitsio_rice(case):
    rng = np.random.default_rng(1)
    data = {
        "noise": (25_000 + rng.normal(0, 5, 576)).astype(np.int32),
        "zeros": np.zeros(576, np.int32),
        "constant": np.full(576, -7, np.int32),
        "full_range": rng.integers(-(2**31), 2**31, 576, dtype=np.int64).astype(np.int32),
        "cosmic": (
            25_000 + rng.normal(0, 5, 576) * np.where(rng.random(576) < 0.03, 1e4, 1)
        ).astype(np.int32),
        "short": rng.integers(0, 2**18, 45).astype(np.int32),
        "one": np.array([3], np.int32),
        "extremes": np.array([2**31 - 1, -(2**31), 0, 5, 2**31 - 1], np.int32),
    }[case]
    buf = np.empty(K.rice_max_bytes(data.size), dtype=np.uint8)
    n = K.rice_encode(data, buf)
    codecs = pytest.importorskip("astropy.io.fits.hdu.compressed._codecs")
    rice = codecs.Rice1(blocksize=32, bytepix=4, tilesize=data.size)
    assert bytes(buf[:n]) == bytes(rice.encode(data))  # the same bytes as cfitsio's coder
    decoded = np.frombuffer(rice.decode(buf[:n].copy()), dtype=np.int32)
    np.testing.assert_array_equal(decoded, data)


def test_rice_rows_parallel_equals_serial():
    rng = np.random.default_rng(2)
    image = (25_000 + rng.normal(0, 6, (64, 576))).astype(np.int32)
    bufs = [np.zeros((64, K.rice_max_bytes(576)), np.uint8) for _ in range(2)]
    lengths = [np.zeros(64, np.int64) for _ in range(2)]
    K.rice_encode_rows(image, bufs[0], lengths[0])
    K.rice_encode_rows_parallel(image, bufs[1], lengths[1])
    np.testing.assert_array_equal(lengths[0], lengths[1])
    np.testing.assert_array_equal(bufs[0], bufs[1])
    heap = np.empty(int(lengths[0].sum()), np.uint8)
    offsets = K.pack_heap(bufs[0], lengths[0], heap)
    assert offsets[0] == 0 and offsets[-1] + lengths[0][-1] == heap.size
    assert bytes(heap[offsets[5] : offsets[5] + lengths[0][5]]) == bytes(
        bufs[0][5, : lengths[0][5]]
    )


def test_module_docstring_documents_the_truth_schema():
    import core.simulate

    doc = core.simulate.__doc__
    for key in ("schema", "files", "amps", "bias", "read_noise_adu", "serial_cti", "faults",
                "stars", "ccd_x", "fp_x", "flux", "peak", "fwhm", "saturated"):  # fmt: skip
        assert re.search(rf"\b{key}\b", doc), key


def test_ctrl_c_stops_the_simulation_once_the_files_being_written_are(tmp_path):
    """``cvt simulate`` stopped with Ctrl-C: the CCDs being written end (each file whole), the
    ones waiting for a thread are never started (the pool had run all 205 first), no truth."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "raw"
    argv = [sys.executable, "-m", "cvt", "simulate", str(out), "--camera", "lsstcam", "--workers", "2"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (seen := list(out.glob("*.fits"))):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT and err == "interrupted\n", err
    files = sorted(p.name for p in out.iterdir())
    # those seen, and at most the two the threads were on (a file shows once its writing starts)
    assert 1 <= len(files) <= len(seen) + 2, files
    assert all(name.endswith(".fits") for name in files), files
    for name in files:
        assert read_raw(out / name).segments.shape[0] == 16  # whole
