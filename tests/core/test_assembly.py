"""CCD assembly: the numba kernel against a slow obvious numpy version, and the golden E2V image."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from core.assembly import AmpBox, amp_boxes, assemble_ccd, ccd_shape
from core.camera import load_camera
from core.layout import amp_placements

ITL = (3, 512, 0, 2000)  # zero-based half-open DATASEC of a modern ITL amp
E2V = (10, 522, 0, 2002)
RAW = (2048, 576)

LAYOUTS = [
    pytest.param("ITL", 16, ITL, RAW, id="itl"),
    pytest.param("E2V", 16, E2V, RAW, id="e2v"),
    pytest.param("ITL", 8, ITL, RAW, id="wavefront"),
    pytest.param("E2V", 16, (2, 9, 1, 6), (8, 12), id="e2v-small"),
    pytest.param("ITL", 8, (0, 5, 0, 3), (3, 5), id="wavefront-no-overscan"),
]


def assemble_reference(segments, datasec, placements):
    """The rule of core.layout written out with np.flip and slicing, one amp at a time."""
    x0, x1, y0, y1 = datasec
    w, h = x1 - x0, y1 - y0
    n_cols = max(p.x_index for p in placements) + 1
    n_rows = max(p.row for p in placements) + 1
    out = np.full((n_rows * h, n_cols * w), -999, dtype=segments.dtype)
    for seg, p in zip(segments, placements, strict=True):
        amp = seg[y0:y1, x0:x1]
        if p.flip_x:
            amp = np.flip(amp, axis=1)
        if p.flip_y:
            amp = np.flip(amp, axis=0)
        out[p.row * h : (p.row + 1) * h, p.x_index * w : (p.x_index + 1) * w] = amp
    return out


def random_segments(rng, n, shape, dtype=np.int32):
    if np.dtype(dtype).kind == "f":
        seg = rng.normal(25000, 50, (n, *shape)).astype(dtype)
        seg[0, 0, :] = np.nan  # NaN and saturated values are copied like any other
        seg[-1, -1, -1] = np.inf
        return seg
    return rng.integers(-(2**17), 2**18, (n, *shape), dtype=dtype)


@pytest.mark.parametrize(("vendor", "n", "datasec", "raw"), LAYOUTS)
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_kernel_matches_numpy_reference(vendor, n, datasec, raw, dtype):
    rng = np.random.default_rng(n + datasec[0])
    placements = amp_placements(vendor, n)
    seg = random_segments(rng, n, raw, dtype)
    got = assemble_ccd(seg, datasec, placements)
    want = assemble_reference(seg, datasec, placements)
    assert got.dtype == dtype
    assert got.shape == ccd_shape(datasec, placements)
    np.testing.assert_array_equal(got, want)  # NaNs compare equal here


@pytest.mark.parametrize(("vendor", "n", "datasec", "raw"), LAYOUTS)
def test_float32_output_and_out_buffer(vendor, n, datasec, raw):
    rng = np.random.default_rng(7)
    placements = amp_placements(vendor, n)
    seg = random_segments(rng, n, raw)
    want = assemble_reference(seg, datasec, placements).astype(np.float32)
    np.testing.assert_array_equal(assemble_ccd(seg, datasec, placements, dtype=np.float32), want)
    out = np.full(want.shape, np.nan, dtype=np.float32)
    assert assemble_ccd(seg, datasec, placements, out=out) is out
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize(
    ("vendor", "n", "datasec", "shape"),
    [("ITL", 16, ITL, (4000, 4072)), ("E2V", 16, E2V, (4004, 4096)), ("ITL", 8, ITL, (2000, 4072))],
)
def test_ccd_shapes(vendor, n, datasec, shape):
    assert ccd_shape(datasec, amp_placements(vendor, n)) == shape


@pytest.mark.parametrize(("vendor", "n", "datasec", "raw"), LAYOUTS)
def test_amp_boxes_tile_the_ccd_and_hold_each_amp(vendor, n, datasec, raw):
    rng = np.random.default_rng(1)
    placements = amp_placements(vendor, n)
    seg = random_segments(rng, n, raw)
    ccd = assemble_ccd(seg, datasec, placements)
    boxes = amp_boxes(datasec, placements)
    assert len(boxes) == n and all(isinstance(b, AmpBox) for b in boxes)
    cover = np.zeros(ccd.shape, dtype=int)
    x0, x1, y0, y1 = datasec
    for box, p, s in zip(boxes, placements, seg, strict=True):
        cover[box.y0 : box.y0 + box.ny, box.x0 : box.x0 + box.nx] += 1
        amp = ccd[box.y0 : box.y0 + box.ny, box.x0 : box.x0 + box.nx]
        # undo the flips and we are back at the raw data section
        amp = amp[:, ::-1] if p.flip_x else amp
        amp = amp[::-1, :] if p.flip_y else amp
        np.testing.assert_array_equal(amp, s[y0:y1, x0:x1])
    assert (cover == 1).all()


@pytest.mark.parametrize(
    ("camera", "detector", "datasec"),
    [("LSSTCam", "R01_S00", ITL), ("LSSTCam", "R22_S11", E2V), ("LSSTCam", "R00_SW1", ITL),
     ("LSSTCam", "R04_SG0", ITL), ("ComCam", "R22_S11", ITL), ("LATISS", "RXX_S00", ITL)],
)  # fmt: skip
def test_amp_boxes_agree_with_the_camera_geometry(camera, detector, datasec):
    """The persisted Rubin camera puts every amp exactly where amp_boxes does."""
    det = load_camera(camera).detector(detector)
    n = 8 if det.kind == "wavefront" else 16
    placements = amp_placements(det.vendor, n)
    boxes = dict(zip((p.name for p in placements), amp_boxes(datasec, placements), strict=True))
    assert ccd_shape(datasec, placements) == (det.ny, det.nx)
    for amp in det.amps:
        assert boxes[amp.name] == (amp.x0, amp.y0, amp.nx, amp.ny), amp.name
    flips = {p.name: (p.flip_x, p.flip_y) for p in placements}
    assert all(flips[a.name] == (a.flip_x, a.flip_y) for a in det.amps)


def test_validation_errors():
    placements = amp_placements("ITL")
    seg = np.zeros((16, 20, 10), dtype=np.int32)
    with pytest.raises(ValueError, match="placements"):
        assemble_ccd(seg, (0, 5, 0, 5), placements[:8])
    with pytest.raises(ValueError, match="exceeds"):
        assemble_ccd(seg, (0, 11, 0, 5), placements)
    with pytest.raises(ValueError, match="half-open"):
        assemble_ccd(seg, (5, 5, 0, 5), placements)
    with pytest.raises(ValueError, match=r"\(n_amp, ny, nx\)"):
        assemble_ccd(seg[0], (0, 5, 0, 5), placements)
    with pytest.raises(ValueError, match="out has shape"):
        assemble_ccd(seg, (0, 5, 0, 5), placements, out=np.zeros((3, 3), np.int32))


@pytest.mark.realdata
def test_golden_e2v_assembly_is_exact(obs_lsst):
    """The Rubin pipelines' assembled E2V spot image, reproduced bit for bit from the raw."""
    from core.rawfile import read_raw

    raw = read_raw(obs_lsst / "assembly" / "e2v_spot.fits.gz")
    assert raw.info.vendor == "E2V"  # from LSST_NUM: this file has no CCD_MANU
    assert raw.info.detector == "R22_S11"
    expected = fits.getdata(obs_lsst / "assembly" / "e2v_expected_assembled.fits.gz")
    got = assemble_ccd(raw.segments, raw.datasec, raw.placements, dtype=np.float32)
    assert got.shape == expected.shape == (4004, 4096)
    assert expected.sum() > 1e6  # the spots are really there (0/1 pixels)
    assert np.array_equal(got, expected)
    # and the same in int32, the ingest's type
    assert np.array_equal(assemble_ccd(raw.segments, raw.datasec, raw.placements), expected)
