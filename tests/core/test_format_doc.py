"""The README's exposure format is enough to write a reader: a reader written here from its
words alone, with zarr-python and numpy (nothing of ``core``), gives back every raw pixel of the
simulated raw files, on detectors of both vendors, turned ones and a wavefront sensor."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from astropy.io import fits

from core.ingest import ingest
from core.simulate import simulate_exposure

DETECTORS = ["R22_S11", "R01_S00", "R00_SG0", "R04_SW1", "R40_SG1"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fmt")
    sim = simulate_exposure(tmp / "raw", detectors=DETECTORS, seed=12, workers=1)
    (report,), _ = ingest([tmp / "raw"], tmp / "repo", workers=1)
    return sim, report.path


def unturned_level0(det) -> np.ndarray:
    """Level 0 turned back to the CCD's own orientation (the README: level 0 is the CCD image
    turned by ``quarter_turns`` as ``np.rot90(ccd, k, axes=(1, 0))``); read once a detector."""
    return np.rot90(det["0"][:], -det.attrs["cvt"]["quarter_turns"], axes=(1, 0))


def readme_raw_pixel(root, detector: str, amp_name: str, u: int, v: int, ccd: np.ndarray) -> int:
    """The raw ADU of amp pixel (u, v), by the README ("From an amp's pixel to level 0");
    ``ccd``: the detector's ``unturned_level0``."""
    det = root[f"detectors/{detector}"]
    cvt = det.attrs["cvt"]
    i = [a["name"] for a in cvt["amps"]].index(amp_name)
    a = cvt["amps"][i]
    x = a["x0"] + (a["nx"] - 1 - u if a["flip_x"] else u)
    y = a["y0"] + (a["ny"] - 1 - v if a["flip_y"] else v)
    assert ccd.shape == tuple(cvt["ccd_shape"])
    level0 = ccd[y, x]
    x0, _, y0, _ = cvt["datasec"]
    row_bias = det["isr/row_bias"][i, v + y0]
    col_bias = det["isr/col_bias"][i, u]
    return int(level0 + np.rint(row_bias) + np.rint(col_bias))


def test_a_reader_from_the_readme_gives_back_the_raw(store):
    sim, path = store
    root = zarr.open_group(str(path), mode="r")
    rng = np.random.default_rng(0)
    checked = 0
    for detector in DETECTORS:
        raw_path = next(sim.outdir.glob(f"*_{detector}.fits"))
        with fits.open(raw_path) as hdul:
            segments = {h.name.upper(): h.data for h in hdul[1:] if h.name.upper().startswith("SEGMENT")}
        cvt = root[f"detectors/{detector}"].attrs["cvt"]
        ccd = unturned_level0(root[f"detectors/{detector}"])
        x0, x1, y0, y1 = cvt["datasec"]
        for amp in cvt["amps"]:
            seg = segments[f"SEGMENT{amp['name'][1:]}"]
            for u, v in [(0, 0), (x1 - x0 - 1, y1 - y0 - 1)] + [
                (int(rng.integers(x1 - x0)), int(rng.integers(y1 - y0))) for _ in range(3)
            ]:
                assert readme_raw_pixel(root, detector, amp["name"], u, v, ccd) == seg[v + y0, u + x0]
                checked += 1
    assert checked == 5 * sum(len(root[f"detectors/{d}"].attrs["cvt"]["amps"]) for d in DETECTORS)
    turns = {root[f"detectors/{d}"].attrs["cvt"]["quarter_turns"] for d in DETECTORS}
    assert len(turns) > 1  # turned detectors are among them
