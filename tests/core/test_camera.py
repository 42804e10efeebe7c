"""Camera geometry against the real Rubin camera tables and the facts in CAMERA.md."""

from __future__ import annotations

import csv
import itertools
import json
import math

import numpy as np
import pytest

from core.camera import PIXEL_SIZE_MM, build_camera_json, load_camera
from core.resources import resource
from tests.threads import beats_while

ITL_RAFTS = {"R01", "R02", "R03", "R10", "R20", "R41", "R42", "R43"}
CORNER_RAFTS = {"R00", "R04", "R40", "R44"}


@pytest.fixture(scope="module")
def lsstcam():
    return load_camera("LSSTCam")


def test_counts_and_ids(lsstcam):
    dets = lsstcam.detectors
    assert len(dets) == 205
    assert sorted(d.id for d in dets) == list(range(205))
    assert sum(d.kind == "science" for d in dets) == 189
    assert sum(d.kind == "guider" for d in dets) == 8
    assert sum(d.kind == "wavefront" for d in dets) == 8
    assert sum(len(d.amps) for d in dets) == 3216
    assert lsstcam.detector("R01_S00").id == 0
    assert lsstcam.detector("R43_S22").id == 188
    assert {d.id for d in dets if d.raft in CORNER_RAFTS} == set(range(189, 205))
    assert len(load_camera("ComCam")) == 9
    assert [d.name for d in load_camera("LATISS").detectors] == ["RXX_S00"]


def test_vendors_by_raft(lsstcam):
    e2v = {"R11", "R12", "R13", "R14", "R21", "R22", "R23", "R24", "R30", "R31", "R32", "R33", "R34"}
    for d in lsstcam.detectors:
        if d.raft in CORNER_RAFTS:
            assert d.vendor == "ITL"
        elif d.raft in ITL_RAFTS:
            assert d.physical_type == "ITL"
        else:
            assert d.raft in e2v and d.physical_type == "E2V", d.name
    assert sum(d.physical_type == "ITL" for d in lsstcam.detectors) == 72
    assert sum(d.physical_type == "E2V" for d in lsstcam.detectors) == 117


def test_sizes_and_amps(lsstcam):
    for d in lsstcam.detectors:
        expected = {"ITL": (4072, 4000), "E2V": (4096, 4004), "ITL_G": (4072, 4000),
                    "ITL_WF": (4072, 2000)}[d.physical_type]
        assert (d.nx, d.ny) == expected, d.name
        # amps tile the CCD exactly, without overlap
        cover = np.zeros((d.ny, d.nx), dtype=np.int8)
        for a in d.amps:
            cover[a.y0:a.y0 + a.ny, a.x0:a.x0 + a.nx] += 1
        assert (cover == 1).all(), d.name
        assert len(d.amps) == (8 if d.kind == "wavefront" else 16)
        assert all(1.0 < a.gain < 2.5 or d.kind != "science" for a in d.amps)


def test_raft_grid_and_centre(lsstcam):
    centre = lsstcam.detector("R22_S11")
    assert centre.ccd_to_fp(centre.ref_x, centre.ref_y) == (0.0, 0.0)
    r01 = lsstcam.detector("R01_S11")
    fx, fy = r01.ccd_to_fp(r01.ref_x, r01.ref_y)
    assert (fx * PIXEL_SIZE_MM, fy * PIXEL_SIZE_MM) == pytest.approx((-127.0, -254.0))


@pytest.mark.parametrize(("vendor_raft", "gap_x", "gap_y"), [("R01", 153, 225), ("R22", 129, 221)])
def test_gaps_within_a_raft(lsstcam, vendor_raft, gap_x, gap_y):
    s00 = lsstcam.detector(f"{vendor_raft}_S00").fp_bounds
    s01 = lsstcam.detector(f"{vendor_raft}_S01").fp_bounds
    s10 = lsstcam.detector(f"{vendor_raft}_S10").fp_bounds
    assert s01[0] - s00[2] == pytest.approx(gap_x)
    assert s10[1] - s00[3] == pytest.approx(gap_y)


def test_gap_between_rafts_is_25_more(lsstcam):
    # R21_S02 and R22_S00 are neighbours across a raft boundary (both E2V)
    left = lsstcam.detector("R21_S02").fp_bounds
    right = lsstcam.detector("R22_S00").fp_bounds
    assert right[0] - left[2] == pytest.approx(129 + 25)


def test_no_two_detectors_overlap(lsstcam):
    boxes = [d.fp_bounds for d in lsstcam.detectors]
    for (i, a), (j, b) in itertools.combinations(enumerate(boxes), 2):
        ox = min(a[2], b[2]) - max(a[0], b[0])
        oy = min(a[3], b[3]) - max(a[1], b[1])
        assert ox <= 0 or oy <= 0, (lsstcam.detectors[i].name, lsstcam.detectors[j].name)


def test_corner_sensors_rotated(lsstcam):
    turns = {d.name: d.quarter_turns for d in lsstcam.detectors if d.raft in CORNER_RAFTS}
    assert turns["R00_SG0"] == 1 and turns["R00_SW0"] == 2 and turns["R44_SG1"] == 0
    # a rotated guider is 4000 wide and 4072 tall in the focal plane
    b = lsstcam.detector("R00_SG0").fp_bounds
    assert (b[2] - b[0], b[3] - b[1]) == (4000, 4072)


def test_rotate_to_fp_matches_mapping(lsstcam):
    """The rotated image's pixel (col, row) sits where ccd_to_fp puts the CCD pixel."""
    for name in ("R00_SG0", "R00_SW0", "R04_SG1", "R22_S11"):
        d = lsstcam.detector(name)
        img = np.arange(d.nx * d.ny, dtype=np.int64).reshape(d.ny, d.nx)
        rot = d.rotate_to_fp(img)
        x0, y0 = d.fp_bounds[:2]
        rng = np.random.default_rng(1)
        for _ in range(50):
            cx, cy = rng.integers(0, d.nx), rng.integers(0, d.ny)
            fx, fy = d.ccd_to_fp(cx, cy)
            col = int(np.floor(fx - x0))
            row = int(np.floor(fy - y0))
            assert rot[row, col] == img[cy, cx], name


def test_mapping_round_trips_random_points(lsstcam):
    rng = np.random.default_rng(7)
    det = rng.integers(0, 205, 20000)
    cx = rng.uniform(-0.49, 4071.49, det.size)
    cy = rng.uniform(-0.49, 1999.49, det.size)
    fx, fy = lsstcam.to_focal_plane(det, cx, cy)
    loc = lsstcam.locate(fx, fy)
    assert (loc.detector_index == det).all()
    np.testing.assert_allclose(loc.ccd_x, cx, atol=1e-9)
    np.testing.assert_allclose(loc.ccd_y, cy, atol=1e-9)
    # amp coordinates go back to the same CCD pixel
    for i in range(0, det.size, 997):
        x, y = lsstcam.amp_to_ccd(det[i], loc.amp_index[i], loc.amp_u[i], loc.amp_v[i])
        assert (x, y) == pytest.approx((cx[i], cy[i]))


def test_locate_outside_and_in_gaps(lsstcam):
    s00 = lsstcam.detector("R22_S00").fp_bounds
    loc = lsstcam.locate([s00[2] + 10, 1e6], [0.5 * (s00[1] + s00[3]), 0])
    assert (loc.detector_index == -1).all()
    assert np.isnan(loc.ccd_x).all()


def test_amp_readout_coordinates(lsstcam):
    """Amp u counts from the first data pixel read out: C10 is flipped in x, C00 of E2V is not."""
    d = lsstcam.detector("R22_S11")  # E2V
    i = lsstcam.index("R22_S11")
    c10 = [k for k, a in enumerate(d.amps) if a.name == "C10"][0]
    c00 = [k for k, a in enumerate(d.amps) if a.name == "C00"][0]
    assert lsstcam.amp_to_ccd(i, c10, 0, 0) == (511.0, 4003.0)
    assert lsstcam.amp_to_ccd(i, c00, 0, 0) == (0.0, 0.0)


@pytest.mark.realdata
@pytest.mark.parametrize("stem", ["lsstcam", "comcam", "latiss"])
def test_shipped_resource_is_derived_from_the_real_tables(obs_lsst, stem):
    name = {"lsstcam": "LSSTCam", "comcam": "ComCam", "latiss": "LATISS"}[stem]
    cam_dir = obs_lsst / "camera"
    derived = build_camera_json(name, cam_dir / f"{stem}_detectors.csv", cam_dir / f"{stem}_amplifiers.csv")
    shipped = json.loads(resource("cameras", f"{stem}.json").read_text())
    assert derived == json.loads(json.dumps(shipped))


@pytest.mark.realdata
def test_positions_and_rotations_match_the_table(obs_lsst, lsstcam):
    with open(obs_lsst / "camera" / "lsstcam_detectors.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 205
    for row in rows:
        d = lsstcam.detector(row["name"])
        fx, fy = d.ccd_to_fp(float(row["refPoint_x"]), float(row["refPoint_y"]))
        assert fx * PIXEL_SIZE_MM == pytest.approx(float(row["fpPosition_x"]), abs=1e-9)
        assert fy * PIXEL_SIZE_MM == pytest.approx(float(row["fpPosition_y"]), abs=1e-9)
        yaw = float(row["yaw"])
        assert math.isclose(math.cos(yaw), math.cos(d.quarter_turns * math.pi / 2), abs_tol=1e-9)
        assert math.isclose(math.sin(yaw), math.sin(d.quarter_turns * math.pi / 2), abs_tol=1e-9)


def test_camera_parse_lets_other_threads_run():
    """``load_camera`` parses its table with a Python-level hook: the same dicts as plain
    ``json.load``, in steps that hand the interpreter lock over (one C call held it 13-16 ms,
    on the viewer's io worker while the GUI thread drew the first frame)."""
    from core.camera import _FILES, _pairs

    for name in _FILES.values():
        text = resource("cameras", name + ".json").read_text()
        assert json.loads(text, object_pairs_hook=_pairs) == json.loads(text)
    text = resource("cameras", _FILES["LSSTCam"] + ".json").read_text()

    stepwise = beats_while(lambda: json.loads(text, object_pairs_hook=_pairs), repeat=4)
    one_call = beats_while(lambda: json.loads(text), repeat=4)
    print(f"beats: stepwise {stepwise}, one call {one_call}")  # counts, not times: noise-proof
    assert stepwise > 5 and stepwise > 2 * one_call, (stepwise, one_call)
