"""``cvt bench watch`` on a tiny night: every exposure staged, landed and complete, in both of its
ways of staging (all ahead, or one at a time when the machine's memory holds one exposure)."""

from __future__ import annotations

import os
import re

import pytest
from astropy.io import fits

from cvt.cli import main
from cvt.commands import bench_watch


@pytest.mark.parametrize("memory", [None, 1e9])  # this machine's; too little for two exposures
def test_a_night_lands_every_exposure_and_completes_it(tmp_path, capsys, monkeypatch, memory):
    if memory is not None:
        monkeypatch.setattr(bench_watch, "_memory_bytes", lambda: memory)
    work = tmp_path / "work"
    args = ["bench", "watch", "--camera", "LATISS", "--exposures", "2", "--spacing", "1"]
    assert main([*args, "--workers", "1", "--keep", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert ("staging one exposure at a time" in out) == (memory is not None)
    assert len(re.findall(r"1 CCDs complete", out)) == 2
    assert "latency, last file -> complete (2 exposures)" in out
    assert sorted(p.name for p in (work / "repo").glob("*.zarr")) == [
        "AT_O_20261125_000001.zarr",
        "AT_O_20261125_000002.zarr",
    ]
    assert not (work / "staged").exists() or not any((work / "staged").rglob("*.fits"))


def test_a_staged_file_is_the_template_as_another_exposure_and_lands_now(tmp_path):
    from core.simulate import simulate_exposure

    sim = simulate_exposure(tmp_path / "t", "LATISS", seed=3, faults=False, workers=1)
    template = bench_watch.Template(sim.files[0])
    (tmp_path / "s").mkdir()
    (tmp_path / "raw").mkdir()
    staged = template.stage(tmp_path / "s", 7, shift=60.0)
    os.utime(staged, (0, 0))
    landed = bench_watch.land(staged, tmp_path / "raw")
    assert landed.parent == tmp_path / "raw" and not staged.exists()
    assert landed.stat().st_mtime > 1e9  # landed now, not when it was staged
    with fits.open(sim.files[0]) as a, fits.open(landed) as b:
        assert b[0].header["SEQNUM"] == 7 and b[0].header["OBSID"].endswith("_000007")
        assert (b[1].data == a[1].data).all()
