"""The ingest benchmark's baseline must do the same work as ours, or its ratio means nothing:
its stored level 0 equals our ingest's (to the rounding of a per-row bias estimated by another
code), and it keeps what makes level 0 lossless."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from core.bench.ingest import baseline_ccd
from core.exposure import open_exposure
from core.ingest import ingest
from core.metrics import amp_array_boxes
from core.simulate import simulate_exposure

DETECTORS = ["R22_S11", "R01_S00", "R00_SG0"]  # E2V, ITL, a quarter-turned guider


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    s = simulate_exposure(tmp / "raw", detectors=DETECTORS, seed=8, faults=False, workers=1)
    (report,), _ = ingest([tmp / "raw"], tmp / "repo", workers=1)
    return tmp, s, open_exposure(report.path)


@pytest.mark.parametrize("overscan", ["clipped", "median"])
@pytest.mark.parametrize("name", DETECTORS)
def test_baseline_stores_the_same_level0_as_ours(sim, name, overscan):
    tmp, s, exp = sim
    path = next(p for p in s.files if name in p.name)
    out = tmp / f"baseline-{name}-{overscan}"
    out.mkdir()
    assert baseline_ccd(str(path), str(out), overscan=overscan) > 0
    group = zarr.open_group(str(out / f"{name}.zarr"), mode="r")
    ours = exp.detector(name)
    theirs0 = group["0"][:]
    assert theirs0.shape == ours.level_shapes[0]
    diff = theirs0.astype(np.int64) - ours.level(0)[:]
    # the same pixels in the same places: within an amp, the two differ only by the rounding of
    # each readout row's bias (another estimator), i.e. by one constant along every row
    for r0, r1, c0, c1 in amp_array_boxes(ours.amps, ours.ccd_shape, ours.quarter_turns):
        sub = diff[r0:r1, c0:c1]
        assert (sub == sub[:, :1]).all() or (sub == sub[:1, :]).all()
    # and by little: a clipped mean (per-row sigma there, per-amp here) within a few ADU, a plain
    # median a few ADU away
    assert np.abs(diff).max() <= (5 if overscan == "clipped" else 10), np.abs(diff).max()
    assert np.mean(diff == 0) > 0.1
    assert group["serial_overscan"].shape[0] == len(ours.amps)
    assert group["row_bias"].shape == ours.group["isr/row_bias"].shape
    np.testing.assert_array_equal(group["serial_overscan"][:], ours.group["isr/serial_overscan"][:])
    assert len(group["header"][:]) > 10_000
    assert len([k for k in group.array_keys() if k.isdigit()]) == ours.n_levels
