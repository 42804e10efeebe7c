"""Shared fixtures: where the real Rubin files are, and a skip when they are absent."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "obs_lsst"


@pytest.fixture(scope="session")
def obs_lsst() -> Path:
    """The real Rubin data folder (``../shared/data/obs_lsst``); skips the test when absent."""
    if not SHARED.is_dir():
        pytest.skip("real Rubin data (../shared/data/obs_lsst) is not present")
    return SHARED
