"""Camera geometry of LSSTCam, ComCam and LATISS: where every detector and amplifier sits.

Shipped in ``resources/cameras/*.json``, derived (``build_camera_json``) from the camera tables
the Rubin pipelines persist (``obs_lsst``): true positions and rotations, not a uniform grid.

Frames (all pixel centres at integer coordinates, as in the Rubin pipelines):

- **CCD pixels** ``(x, y)``: the assembled, trimmed CCD with array row 0 at the bottom
  (``core.layout``); ``0 <= x < nx``, ``0 <= y < ny``.
- **Amp pixels** ``(u, v)``: an amplifier's data section in readout order, i.e. the raw segment's
  data columns and rows (``u`` serial, ``v`` parallel, both from 0 at the first pixel read out of
  the data section); a raw segment column is ``u + prescan``.
- **Focal-plane pixels** ``(fx, fy)``: focal-plane millimetres divided by the 10 micron pixel
  size, origin at the centre of the focal plane, x right, y up, as seen in the Rubin pipelines'
  focal-plane frame (``FOCAL_PLANE``). A detector pixel maps by
  ``f = fpPosition / pixel_size + R(yaw) @ ((x, y) - refPoint)`` with ``R`` the counter-clockwise
  rotation by the detector's yaw (a multiple of 90 degrees), exactly as cameraGeom does.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from core.layout import amp_placements
from core.resources import resource

PIXEL_SIZE_MM = 0.01
CAMERAS = ("LSSTCam", "ComCam", "LATISS")
_FILES = {"LSSTCam": "lsstcam", "ComCam": "comcam", "LATISS": "latiss"}
_KINDS = {0: "science", 2: "guider", 3: "wavefront"}

# 2x2 rotation matrices for 0, 90, 180, 270 degrees counter-clockwise (exact integers).
_ROT = {
    0: ((1, 0), (0, 1)),
    1: ((0, -1), (1, 0)),
    2: ((-1, 0), (0, -1)),
    3: ((0, 1), (-1, 0)),
}


@dataclass(frozen=True)
class Amp:
    """An amplifier: its trimmed box in the assembled CCD and its electronic constants."""

    name: str  # C10 .. C17, C07 .. C00
    x0: int
    y0: int
    nx: int
    ny: int
    flip_x: bool
    flip_y: bool
    gain: float  # e-/ADU
    saturation: float  # ADU
    read_noise: float  # e-

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return (x >= self.x0) & (x < self.x0 + self.nx) & (y >= self.y0) & (y < self.y0 + self.ny)


@dataclass(frozen=True)
class Detector:
    """One CCD in the focal plane."""

    name: str  # R22_S11
    id: int
    kind: str  # science | guider | wavefront
    physical_type: str  # ITL | E2V | ITL_G | ITL_WF
    serial: str
    nx: int  # assembled CCD size in pixels
    ny: int
    fp_x: float  # focal-plane position of the reference pixel, in focal-plane pixels
    fp_y: float
    ref_x: float  # reference pixel in CCD pixels
    ref_y: float
    quarter_turns: int  # rotation in the focal plane, counter-clockwise, 0..3
    amps: tuple[Amp, ...] = field(repr=False)

    @property
    def raft(self) -> str:
        return self.name.split("_")[0]

    @property
    def slot(self) -> str:
        return self.name.split("_")[1]

    @property
    def vendor(self) -> str:
        return "E2V" if self.physical_type.startswith("E2V") else "ITL"

    def amp(self, name: str) -> Amp:
        for amp in self.amps:
            if amp.name == name:
                return amp
        raise KeyError(f"{self.name} has no amplifier {name!r}")

    def ccd_to_fp(self, x, y):
        """CCD pixel coordinates to focal-plane pixels (vectorized)."""
        (a, b), (c, d) = _ROT[self.quarter_turns]
        dx = np.asarray(x, dtype=np.float64) - self.ref_x
        dy = np.asarray(y, dtype=np.float64) - self.ref_y
        return self.fp_x + a * dx + b * dy, self.fp_y + c * dx + d * dy

    def fp_to_ccd(self, fx, fy):
        """Focal-plane pixels to CCD pixel coordinates (vectorized; the inverse rotation)."""
        (a, b), (c, d) = _ROT[self.quarter_turns]
        dx = np.asarray(fx, dtype=np.float64) - self.fp_x
        dy = np.asarray(fy, dtype=np.float64) - self.fp_y
        # R is orthogonal: R^-1 = R^T
        return self.ref_x + a * dx + c * dy, self.ref_y + b * dx + d * dy

    @property
    def fp_bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the detector's pixel edges in focal-plane pixels."""
        xs, ys = self.ccd_to_fp(
            np.array([-0.5, self.nx - 0.5, -0.5, self.nx - 0.5]),
            np.array([-0.5, -0.5, self.ny - 0.5, self.ny - 0.5]),
        )
        return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())

    def rotate_to_fp(self, image: np.ndarray) -> np.ndarray:
        """An assembled CCD image (row 0 at the bottom) turned into the focal-plane frame.

        Row 0 stays the bottom: the result's column index grows with focal-plane x and its row
        index with focal-plane y; its lower-left pixel edge is at ``fp_bounds[:2]``.
        """
        return np.rot90(image, self.quarter_turns, axes=(1, 0))


@dataclass(frozen=True)
class Location:
    """Where focal-plane points fall: one entry per point; -1 / NaN where outside any detector."""

    detector_index: np.ndarray  # index into Camera.detectors, -1 outside
    ccd_x: np.ndarray
    ccd_y: np.ndarray
    amp_index: np.ndarray  # index into Detector.amps, -1 outside
    amp_u: np.ndarray  # serial coordinate within the amp's data section (readout order)
    amp_v: np.ndarray  # parallel coordinate


class Camera:
    """A camera: its detectors, and vectorized mappings between focal plane, CCD and amp."""

    def __init__(self, name: str, detectors: list[Detector]):
        self.name = name
        self.detectors = tuple(detectors)
        self._by_name = {d.name: i for i, d in enumerate(self.detectors)}
        self._by_id = {d.id: i for i, d in enumerate(self.detectors)}
        bounds = np.array([d.fp_bounds for d in self.detectors])
        self._bounds = bounds  # (n, 4) xmin ymin xmax ymax

    def __repr__(self) -> str:
        return f"Camera({self.name!r}, {len(self.detectors)} detectors)"

    def __len__(self) -> int:
        return len(self.detectors)

    def detector(self, name: str) -> Detector:
        try:
            return self.detectors[self._by_name[name]]
        except KeyError:
            raise KeyError(f"{self.name} has no detector {name!r}") from None

    def detector_by_id(self, det_id: int) -> Detector:
        try:
            return self.detectors[self._by_id[int(det_id)]]
        except KeyError:
            raise KeyError(f"{self.name} has no detector id {det_id}") from None

    def index(self, name: str) -> int:
        return self._by_name[name]

    @property
    def fp_bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of all detectors, in focal-plane pixels."""
        b = self._bounds
        return (
            float(b[:, 0].min()),
            float(b[:, 1].min()),
            float(b[:, 2].max()),
            float(b[:, 3].max()),
        )

    def locate(self, fx, fy) -> Location:
        """Map focal-plane pixel coordinates to (detector, CCD x/y, amp, amp u/v), vectorized."""
        fx = np.atleast_1d(np.asarray(fx, dtype=np.float64))
        fy = np.atleast_1d(np.asarray(fy, dtype=np.float64))
        n = fx.shape[0]
        det = np.full(n, -1, dtype=np.int32)
        ccd_x = np.full(n, np.nan)
        ccd_y = np.full(n, np.nan)
        amp = np.full(n, -1, dtype=np.int32)
        amp_u = np.full(n, np.nan)
        amp_v = np.full(n, np.nan)
        b = self._bounds
        for i, d in enumerate(self.detectors):
            inside = (fx >= b[i, 0]) & (fx < b[i, 2]) & (fy >= b[i, 1]) & (fy < b[i, 3])
            if not inside.any():
                continue
            idx = np.flatnonzero(inside)
            x, y = d.fp_to_ccd(fx[idx], fy[idx])
            det[idx] = i
            ccd_x[idx] = x
            ccd_y[idx] = y
            px = np.floor(x + 0.5)
            py = np.floor(y + 0.5)
            for k, a in enumerate(d.amps):
                sel = a.contains(px, py)
                if sel.any():
                    j = idx[sel]
                    amp[j] = k
                    u = x[sel] - a.x0
                    v = y[sel] - a.y0
                    amp_u[j] = (a.nx - 1) - u if a.flip_x else u
                    amp_v[j] = (a.ny - 1) - v if a.flip_y else v
        return Location(det, ccd_x, ccd_y, amp, amp_u, amp_v)

    def to_focal_plane(self, detector_index, ccd_x, ccd_y):
        """CCD pixel coordinates of the given detectors (indices) to focal-plane pixels."""
        detector_index = np.atleast_1d(np.asarray(detector_index))
        ccd_x = np.broadcast_to(np.asarray(ccd_x, dtype=np.float64), detector_index.shape)
        ccd_y = np.broadcast_to(np.asarray(ccd_y, dtype=np.float64), detector_index.shape)
        fx = np.full(detector_index.shape, np.nan)
        fy = np.full(detector_index.shape, np.nan)
        for i in np.unique(detector_index):
            if i < 0:
                continue
            sel = detector_index == i
            fx[sel], fy[sel] = self.detectors[i].ccd_to_fp(ccd_x[sel], ccd_y[sel])
        return fx, fy

    def amp_to_ccd(self, detector_index: int, amp_index: int, u, v):
        """Amp data-section coordinates (readout order) to CCD pixel coordinates."""
        a = self.detectors[detector_index].amps[amp_index]
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        x = a.x0 + ((a.nx - 1) - u if a.flip_x else u)
        y = a.y0 + ((a.ny - 1) - v if a.flip_y else v)
        return x, y


def _detector_from_json(d: dict) -> Detector:
    amps = tuple(Amp(**a) for a in d.pop("amps"))
    return Detector(amps=amps, **d)


def _pairs(pairs: list) -> dict:
    return dict(pairs)


@cache
def load_camera(name: str) -> Camera:
    """The shipped geometry of ``LSSTCam``, ``ComCam`` or ``LATISS`` (case-insensitive).

    Parsed with a Python-level object hook (as ``core.lazyzarr.read_root``): ``json.load``
    alone is one C call that holds the interpreter lock throughout, 13-16 ms for the 750 kB of
    LSSTCam's, a wait of the viewer's GUI thread when its first exposure opens on a worker."""
    canonical = {c.lower(): c for c in CAMERAS}.get(name.lower())
    if canonical is None:
        raise ValueError(f"unknown camera {name!r}; known cameras: {', '.join(CAMERAS)}")
    with open(resource("cameras", _FILES[canonical] + ".json")) as f:
        data = json.load(f, object_pairs_hook=_pairs)
    return Camera(data["name"], [_detector_from_json(d) for d in data["detectors"]])


# ---------------------------------------------------------------------------------------------
# Deriving the shipped resource from the persisted Rubin camera tables


def build_camera_json(name: str, detectors_csv: Path, amplifiers_csv: Path) -> dict:
    """The JSON resource of one camera from its obs_lsst tables (``*_detectors.csv``, ``*_amplifiers.csv``).

    Amp placement and flips are taken from ``core.layout``, and checked here against the table's
    boxes and flip flags (bit 64 flips x, bit 32 flips y), so the one rule and the real camera
    can never drift apart silently.
    """
    with open(amplifiers_csv) as f:
        amp_rows: dict[str, list[dict]] = {}
        for row in csv.DictReader(f):
            amp_rows.setdefault(row["detector"], []).append(row)
    out = []
    with open(detectors_csv) as f:
        for row in csv.DictReader(f):
            det_name = row["name"]
            nx = int(row["bbox_max_x"]) - int(row["bbox_min_x"]) + 1
            ny = int(row["bbox_max_y"]) - int(row["bbox_min_y"]) + 1
            pixel = float(row["pixelSize_x"])
            if not math.isclose(pixel, PIXEL_SIZE_MM):
                raise ValueError(f"{det_name}: pixel size {pixel} mm is not 10 microns")
            turns = round(float(row["yaw"]) / (math.pi / 2))
            if not math.isclose(float(row["yaw"]), turns * math.pi / 2, abs_tol=1e-9):
                raise ValueError(f"{det_name}: yaw {row['yaw']} is not a multiple of 90 degrees")
            ptype = row["physicalType"]
            vendor = "E2V" if ptype.startswith("E2V") else "ITL"
            rows = amp_rows[det_name]
            placements = {p.name: p for p in amp_placements(vendor, len(rows))}
            amps = []
            for a in rows:
                p = placements[a["name"]]
                anx, any_ = int(a["bbox_extent_x"]), int(a["bbox_extent_y"])
                x0, y0 = int(a["bbox_min_x"]), int(a["bbox_min_y"])
                flags = int(a["flags"])
                flip_x, flip_y = bool(flags & 64), bool(flags & 32)
                if (x0, y0, flip_x, flip_y) != (p.x_index * anx, p.row * any_, p.flip_x, p.flip_y):
                    raise ValueError(
                        f"{det_name} {a['name']}: table box/flips ({x0}, {y0}, {flip_x}, {flip_y}) "
                        f"disagree with the layout rule {p}"
                    )
                amps.append(
                    dict(
                        name=a["name"],
                        x0=x0,
                        y0=y0,
                        nx=anx,
                        ny=any_,
                        flip_x=flip_x,
                        flip_y=flip_y,
                        gain=float(a["gain"]),
                        saturation=float(a["saturation"]),
                        read_noise=float(a["readnoise"]),
                    )
                )
            out.append(
                dict(
                    name=det_name,
                    id=int(row["id"]),
                    kind=_KINDS[int(row["type"])],
                    physical_type=ptype,
                    serial=row["serial"],
                    nx=nx,
                    ny=ny,
                    fp_x=round(float(row["fpPosition_x"]) / pixel, 6),
                    fp_y=round(float(row["fpPosition_y"]) / pixel, 6),
                    ref_x=float(row["refPoint_x"]),
                    ref_y=float(row["refPoint_y"]),
                    quarter_turns=turns % 4,
                    amps=amps,
                )
            )
    return {"name": name, "pixel_size_mm": PIXEL_SIZE_MM, "source": "obs_lsst", "detectors": out}


def write_camera_resources(camera_dir: Path, out_dir: Path) -> list[Path]:
    """Regenerate ``resources/cameras/*.json`` from a folder of obs_lsst camera tables."""
    written = []
    for name, stem in _FILES.items():
        data = build_camera_json(
            name, camera_dir / f"{stem}_detectors.csv", camera_dir / f"{stem}_amplifiers.csv"
        )
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(data, indent=1) + "\n")
        written.append(path)
    return written


if __name__ == "__main__":  # python -m core.camera CAMERA_TABLE_DIR RESOURCES/cameras
    import sys

    for p in write_camera_resources(Path(sys.argv[1]), Path(sys.argv[2])):
        print("wrote", p)
