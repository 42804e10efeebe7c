"""A realistic raw simulator: files exactly as the LSSTCam, ComCam and LATISS cameras write them.

One multi-extension FITS file per CCD, ``{CAMCODE}_O_{DAYOBS}_{SEQ:06d}_{RAFT}_{SLOT}.fits``
(``MC`` LSSTCam, ``CC`` ComCam, ``AT`` LATISS, whose one CCD is ``R00_S00`` in its files and
``RXX_S00`` in the camera table): a header-only primary HDU with the keys of the 2025 LSSTCam
headers, 16 ``Segment10 .. Segment17, Segment07 .. Segment00`` image HDUs (8 ``Segment1x`` for a
wavefront sensor) of 576 x 2048 int32 (18-bit) pixels, plain or RICE_1 tile-compressed one row
per tile, and the header-only ``REB_COND`` and ``CONFIG_COND`` tables.

The signal (sky, stars, cosmic rays, flat light, dark current, defects) is made in the assembled
CCD frame (``core.camera``; array row 0 at the bottom) in electrons, then each amplifier reads
its data section through ``core.layout`` (un-flipped into readout order), with its own bias level,
a slow row-to-row bias wander, gain, Poisson noise (exact below 20 e-, its normal limit above),
read noise (data, prescan and overscan), deferred charge in the first overscan columns and rows
(EPER), and saturation: charge above the full well (the amp's saturation level less its bias,
in e-) bleeds up and down its column, and the raw value is clipped at the saturation level and
at 2**18 - 1. The camera table's gain, read noise and saturation are used where sensible (gain
0.5-3 e-/ADU, read noise 2-25 e-, saturation 7e4 .. 2**18 - 1 ADU), else 1.5, the vendor's
median and 1.35e5.

``simulate_ccd`` makes one CCD in memory (for tests and benchmarks); ``simulate_exposure``
writes an exposure; ``Fault`` lists inject specific defects.

Everything is deterministic for a seed: the same bytes every time, whatever the number of
threads or processes; the noise is counter-based (``core._simulate_kernels``). The defects
(``Fault``) and the sensor's hot pixels depend on the seed and the detector only, so they stay put
from one exposure to the next; the sky, stars, cosmic rays and noise change with ``seq``.

Truth file ``{OBSID}_truth.json`` (schema ``cvt-simulate-truth/1``), written beside the raws::

    schema, camera, obsid, day_obs, seq, image_type, exptime, darktime (s), seed, compress,
    fwhm_px, sky_e (e-/px, science), flat_e (e-/px, flat), dark_current (e-/s/px),
    eper_tail (fraction of the deferred charge in overscan column/row 1, 2, ...),
    files: [ {file, detector (camera table name), raftbay, ccdslot, detector_id, vendor,
              serial, n_segments, datasec, ccd_shape [ny, nx], n_hot_pixels,
              cosmic_rays: [[x0, y0, x1, y1, e_per_px], ...] (CCD frame),
              amps: [ {amp (C10..), extname, hdu, bias (ADU, the level below any jump),
                       bias_wander_rms (ADU), gain (e-/ADU), read_noise_e, read_noise_adu
                       (injected, faults included; 0 for a dead amp), saturation (ADU, the
                       raw clip level, bias included), full_well_e, serial_cti, parallel_cti,
                       serial_transfers, parallel_transfers, dead}, ... ] }, ... ],
    faults: [ {detector, amp, kind, params}, ... ]  (see ``Fault``; column faults give the
              CCD column ``params.column``),
    stars: {detector: [...], ccd_x, ccd_y (CCD frame, row 0 at the bottom), fp_x, fp_y
            (focal-plane pixels, Detector.ccd_to_fp), flux (e-), peak (e-, brightest pixel
            above the background), fwhm (px), saturated: [...]}   (columns of equal length)

The EPER charge in the first overscan columns is ``serial_cti * (serial_transfers + 1) *
S_last * eper_tail[k]`` e- (``S_last`` the row's last data pixel), the same in the parallel
overscan rows; so the classic estimator (first 3 columns over the last column over N + 1) gives
``serial_cti * sum(eper_tail[:3])``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from core import __version__
from core import _simulate_kernels as K
from core.camera import Camera, Detector, load_camera
from core.distributed import interrupts_held
from core.layout import AmpPlacement, amp_placements

__all__ = [
    "CAMERA_CODES",
    "FAULT_KINDS",
    "IMAGE_TYPES",
    "RAW_FORMATS",
    "Fault",
    "RawFormat",
    "SimulatedCCD",
    "SimulatedExposure",
    "choose_faults",
    "default_detectors",
    "raw_filename",
    "simulate_ccd",
    "simulate_exposure",
]

CAMERA_CODES = {"LSSTCam": "MC", "ComCam": "CC", "LATISS": "AT"}
CONTROLLER = "O"
IMAGE_TYPES = ("bias", "dark", "flat", "science")
FAULT_KINDS = (
    "hot_column",
    "dead_column",
    "dead_amp",
    "noisy_amp",
    "bias_jump",
    "high_cti",
    "hot_pixels",
)
TRUTH_SCHEMA = "cvt-simulate-truth/1"

RAW_NX, RAW_NY = 576, 2048
BLOCK = 2880

# Physical model (documented in the truth file where it matters).
EXPTIME = {"bias": 0.0, "dark": 30.0, "flat": 15.0, "science": 30.0}
SKY_E_PER_S = 1000.0 / 30.0  # ~1000 e- per pixel in 30 s
FLAT_E = 50_000.0
DARK_CURRENT = 0.002  # e-/s/px
VIGNETTING = 0.12  # fractional loss of light at the edge of the field
MOFFAT_BETA = 3.5
STARS_PER_CCD = 500.0  # for a full 4k x 4k CCD; scales with area
STAR_FLUX_MIN, STAR_FLUX_MAX, STAR_SLOPE = 3.0e3, 3.0e8, 0.75  # N(>F) ~ F**-STAR_SLOPE
COSMIC_RATE = 0.04  # per cm^2 per s (of dark time)
HOT_PIXELS_PER_CCD = 60.0
EPER_TAIL = tuple((0.7 * 0.3**k) / (1.0 - 0.3**8) for k in range(8))
DEFAULT_SATURATION = 1.35e5
DEFAULT_READ_NOISE = {"E2V": 5.4, "ITL": 6.4}
SIM_COMMENT = "Simulated by the CVT raw simulator (core.simulate); not camera data."

# Streams of the counter-based random numbers (the first key after the seed).
_S_EXPOSURE, _S_STATIC, _S_CCD, _S_AMP_STATIC, _S_AMP, _S_NOISE, _S_FAULTS = range(1, 8)


@dataclass(frozen=True)
class RawFormat:
    """The raw segment layout of a vendor (modern files: 576 x 2048 per amp)."""

    vendor: str
    prescan: int
    nx: int  # data columns per amp
    ny: int  # data rows per amp

    @property
    def datasec(self) -> str:
        return f"[{self.prescan + 1}:{self.prescan + self.nx},1:{self.ny}]"


RAW_FORMATS = {"ITL": RawFormat("ITL", 3, 509, 2000), "E2V": RawFormat("E2V", 10, 512, 2002)}


@dataclass(frozen=True)
class Fault:
    """A defect injected on one amplifier. ``params`` left out are filled in (deterministically).

    kinds and params:
      ``hot_column``  column (CCD x), rate (e-/s), offset (e- per read, so biases show it)
      ``dead_column`` column (CCD x), response (fraction of the light kept, ~0)
      ``dead_amp``    level (ADU): a disconnected output, that constant, no noise
      ``noisy_amp``   factor (read noise multiplier, 3-5)
      ``bias_jump``   row (raw row, readout order, where the step starts), step (ADU)
      ``high_cti``    serial_cti (~1e-4)
      ``hot_pixels``  x, y (CCD centre), radius (px), n_pixels, rate (median e-/s)
    """

    detector: str
    amp: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "detector": self.detector,
            "amp": self.amp,
            "kind": self.kind,
            "params": dict(self.params),
        }


@dataclass
class SimulatedCCD:
    """One simulated CCD in memory: the raw segments in HDU (``core.layout``) order and the truth."""

    camera: str
    detector: str
    vendor: str
    segments: np.ndarray  # (n_seg, 2048, 576) int32
    datasec: str
    placements: tuple[AmpPlacement, ...]
    truth: dict[str, Any]  # this file's entry of the truth file, with its stars and faults
    signal: np.ndarray | None = field(default=None, repr=False)  # noiseless CCD frame, e-
    _plan: _Plan | None = field(default=None, repr=False)

    @property
    def filename(self) -> str:
        assert self._plan is not None
        return raw_filename(self.camera, self.detector, self._plan.day_obs, self._plan.seq)

    def write(self, path: str | os.PathLike[str], compress: str | None = None) -> Path:
        """Write the raw file (``compress`` None or ``"rice"``); returns its path."""
        assert self._plan is not None
        return _write_raw(Path(path), self, self._plan, compress)


@dataclass
class SimulatedExposure:
    """A simulated exposure on disk: the raw files (camera order) and the truth."""

    outdir: Path
    obsid: str
    files: list[Path]
    truth_path: Path
    truth: dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Names


def _camera(name: str) -> Camera:
    return load_camera(name)


def _canonical_camera(name: str) -> str:
    return _camera(name).name


def _resolve_detector(cam: Camera, name: str) -> Detector:
    if cam.name == "LATISS" and name.upper() in ("R00_S00", "RXX_S00", "S00"):
        name = "RXX_S00"
    return cam.detector(name)


def _bay_slot(camera: str, det: Detector) -> tuple[str, str]:
    """RAFTBAY and CCDSLOT as the files write them (LATISS: R00, S00)."""
    if camera == "LATISS":
        return "R00", "S00"
    return det.raft, det.slot


def default_detectors(camera: str) -> list[str]:
    """All detectors of a camera, in camera (detector id) order."""
    return [d.name for d in _camera(camera).detectors]


def raw_filename(camera: str, detector: str, day_obs: str, seq: int) -> str:
    """``{CAMCODE}_{CONTRLLR}_{YYYYMMDD}_{SEQ:06d}_{RAFT}_{SLOT}.fits`` of one CCD."""
    camera = _canonical_camera(camera)
    det = _resolve_detector(_camera(camera), detector)
    bay, slot = _bay_slot(camera, det)
    return f"{CAMERA_CODES[camera]}_{CONTROLLER}_{day_obs}_{seq:06d}_{bay}_{slot}.fits"


def _obsid(camera: str, day_obs: str, seq: int) -> str:
    return f"{CAMERA_CODES[camera]}_{CONTROLLER}_{day_obs}_{seq:06d}"


# ---------------------------------------------------------------------------------------------
# Counter-based seeding: one generator or key per (seed, stream, ...)


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.Philox(np.random.SeedSequence(seed, spawn_key=key)))


def _key64(seed: int, *key: int) -> np.uint64:
    return np.random.SeedSequence(seed, spawn_key=key).generate_state(1, np.uint64)[0]


# ---------------------------------------------------------------------------------------------
# The exposure plan (everything shared by the CCDs of one exposure; picklable)


@dataclass(frozen=True)
class _Plan:
    camera: str
    seed: int
    seq: int
    day_obs: str
    image_type: str
    obsid: str
    exptime: float
    darktime: float
    fwhm: float
    sky: float
    flat: float
    date_beg: datetime
    pointing: tuple[tuple[str, Any], ...]
    faults: tuple[Fault, ...] = ()

    def faults_on(self, detector: str) -> list[Fault]:
        return [f for f in self.faults if f.detector == detector]


def _make_plan(
    camera: str, seed: int, seq: int, day_obs: str, image_type: str, faults: Iterable[Fault]
) -> _Plan:
    camera = _canonical_camera(camera)
    if image_type not in IMAGE_TYPES:
        raise ValueError(f"unknown image type {image_type!r}; expected one of {IMAGE_TYPES}")
    if int(seed) < 0:
        raise ValueError("the seed must be a non-negative integer")
    if not (len(day_obs) == 8 and day_obs.isdigit()):
        raise ValueError(f"day_obs must be YYYYMMDD, not {day_obs!r}")
    if not 0 <= int(seq) <= 999_999:
        raise ValueError("seq must be in 0 .. 999999")
    rng = _rng(seed, _S_EXPOSURE, seq)
    exptime = EXPTIME[image_type]
    darktime = round(exptime + 0.9 + 0.1 * rng.random(), 4)
    fwhm = float(rng.uniform(3.5, 5.0))
    sky = SKY_E_PER_S * exptime * float(rng.uniform(0.8, 1.2))
    flat = FLAT_E * float(rng.uniform(0.97, 1.03))
    night = datetime.strptime(day_obs, "%Y%m%d") + timedelta(days=1, minutes=30)
    date_beg = night + timedelta(seconds=37.0 * (seq % 900) + float(rng.uniform(0, 5)))
    el = float(rng.uniform(35.0, 85.0))
    pointing = dict(
        ra=float(rng.uniform(0, 360)),
        dec=float(rng.uniform(-80, 5)),
        rotpa=float(rng.uniform(0, 360)),
        el=el,
        az=float(rng.uniform(0, 360)),
        ha=float(rng.uniform(-3, 3)),
        focusz=float(rng.uniform(-4.5, -2.5)),
        airtemp=float(rng.uniform(5, 15)),
        pressure=float(rng.uniform(73800, 74500)),
        humidity=float(rng.uniform(10, 60)),
        windspd=float(rng.uniform(0, 10)),
        winddir=float(rng.uniform(0, 360)),
        seeing=fwhm * 0.2,
    )
    return _Plan(
        camera=camera,
        seed=int(seed),
        seq=int(seq),
        day_obs=day_obs,
        image_type=image_type,
        obsid=_obsid(camera, day_obs, seq),
        exptime=exptime,
        darktime=darktime,
        fwhm=fwhm,
        sky=sky,
        flat=flat,
        date_beg=date_beg,
        pointing=tuple(pointing.items()),
        faults=tuple(faults),
    )


# ---------------------------------------------------------------------------------------------
# Faults


def _fault_params(cam: Camera, fault: Fault, seed: int) -> Fault:
    """The fault with its missing params filled in, deterministically from (seed, place, kind)."""
    det = _resolve_detector(cam, fault.detector)
    amp = det.amp(fault.amp)
    rng = _rng(
        seed,
        _S_FAULTS,
        det.id,
        [a.name for a in det.amps].index(amp.name),
        FAULT_KINDS.index(fault.kind),
    )
    p = dict(fault.params)
    k = fault.kind
    if k in ("hot_column", "dead_column"):
        p.setdefault("column", int(amp.x0 + rng.integers(5, amp.nx - 5)))
        col = int(p["column"])
        if not amp.x0 <= col < amp.x0 + amp.nx:
            raise ValueError(f"{det.name} {amp.name}: column {col} is outside the amp")
        if k == "hot_column":
            p.setdefault("rate", round(float(rng.uniform(20, 80)), 2))
            p.setdefault("offset", round(float(rng.uniform(100, 300)), 1))
        else:
            p.setdefault("response", 0.02)
    elif k == "dead_amp":
        index = [q.name for q in amp_placements(det.vendor, len(det.amps))].index(amp.name)
        p.setdefault("level", float(round(_static_bias(seed, det, index))))
    elif k == "noisy_amp":
        p.setdefault("factor", round(float(rng.uniform(3.0, 5.0)), 2))
    elif k == "bias_jump":
        p.setdefault("row", int(rng.integers(300, 1700)))
        p.setdefault("step", round(float(rng.choice([-1, 1]) * rng.uniform(12, 40)), 1))
    elif k == "high_cti":
        p.setdefault("serial_cti", 1.0e-4)
    elif k == "hot_pixels":
        p.setdefault("x", int(amp.x0 + rng.integers(20, amp.nx - 20)))
        p.setdefault("y", int(amp.y0 + rng.integers(20, amp.ny - 20)))
        p.setdefault("radius", round(float(rng.uniform(4, 12)), 1))
        p.setdefault("n_pixels", int(rng.integers(25, 80)))
        p.setdefault("rate", round(float(rng.uniform(50, 300)), 1))
    return Fault(det.name, amp.name, k, p)


def choose_faults(camera: str, detectors: Sequence[str], seed: int) -> list[Fault]:
    """Random faults for an exposure of these detectors: about one of each kind per 20 CCDs, at
    least one of each kind for 8 CCDs or more, each on its own amp. Depends on the seed and the set
    of detectors only (not their order, nor the exposure), so a defect stays put across exposures.
    """
    cam = _camera(camera)
    dets = sorted((_resolve_detector(cam, d) for d in detectors), key=lambda d: d.id)
    n = len(dets)
    if n == 0:
        return []
    rng = _rng(seed, _S_FAULTS)
    used: set[tuple[str, str]] = set()
    out = []
    n_amps = sum(len(d.amps) for d in dets)
    for kind in FAULT_KINDS:
        count = max(1, round(n / 20)) if n >= 8 else int(rng.random() < n / 20)
        for _ in range(min(count, n_amps - len(used))):
            while True:
                det = dets[int(rng.integers(n))]
                amp = det.amps[int(rng.integers(len(det.amps)))]
                if (det.name, amp.name) not in used:
                    break
            used.add((det.name, amp.name))
            out.append(_fault_params(cam, Fault(det.name, amp.name, kind), seed))
    return out


def _resolve_faults(
    cam: Camera, faults: bool | Iterable[Fault], detectors: Sequence[str], seed: int
) -> list[Fault]:
    if faults is True:
        return choose_faults(cam.name, detectors, seed)
    if faults is False or faults is None:
        return []
    return [_fault_params(cam, f, seed) for f in faults]


# ---------------------------------------------------------------------------------------------
# One CCD


def _sane(value: float, lo: float, hi: float, default: float) -> float:
    return float(value) if lo <= value <= hi else float(default)


def _static_bias(seed: int, det: Detector, index: int) -> float:
    """The bias level of amp ``index`` (HDU order) before its small exposure-to-exposure drift:
    24-27 kADU (guiders 13-15 kADU), a level per CCD plus a scatter per amp."""
    lo, hi = (13_000.0, 15_000.0) if det.kind == "guider" else (24_000.0, 27_000.0)
    ccd_level = _rng(seed, _S_STATIC, det.id).uniform(lo + 400, hi - 400)
    scatter = _rng(seed, _S_AMP_STATIC, det.id, index, 1).normal(0, 250)
    return float(np.clip(ccd_level + scatter, lo, hi))


def _amp_setup(
    plan: _Plan,
    det: Detector,
    fmt: RawFormat,
    placements: Sequence[AmpPlacement],
    faults: list[Fault],
) -> list[dict[str, Any]]:
    """Per amp (in HDU order): the electronic constants and the faults' effects on them."""
    by_name = {a.name: a for a in det.amps}
    rows = np.arange(RAW_NY)
    amps = []
    for i, p in enumerate(placements):
        a = by_name[p.name]
        rs = _rng(plan.seed, _S_AMP_STATIC, det.id, i)
        re = _rng(plan.seed, _S_AMP, plan.seq, det.id, i)
        bias = _static_bias(plan.seed, det, i) + float(re.normal(0, 0.5))
        gain = _sane(a.gain, 0.5, 3.0, 1.5)
        rn_e = _sane(a.read_noise, 2.0, 25.0, DEFAULT_READ_NOISE[fmt.vendor])
        sat = _sane(a.saturation, 7.0e4, K.ADC_MAX, DEFAULT_SATURATION)
        amp_w = float(rs.uniform(0.3, 1.0))
        period = float(rs.uniform(500, 3000))
        wander = amp_w * np.sin(2 * np.pi * rows / period + re.uniform(0, 2 * np.pi))
        walk = np.empty(RAW_NY)
        w = 0.0
        innov = re.normal(0, 0.1, RAW_NY)
        for r in range(RAW_NY):  # AR(1), sigma ~0.5 ADU
            w = 0.98 * w + innov[r]
            walk[r] = w
        wander = wander + walk
        wander -= wander.mean()
        amps.append(
            dict(
                name=a.name,
                placement=p,
                gain=gain,
                read_noise_e=rn_e,
                saturation=sat,
                bias=bias,
                wander=wander,
                serial_cti=float(10 ** rs.uniform(np.log10(5e-7), np.log10(3e-6))),
                parallel_cti=float(10 ** rs.uniform(np.log10(3e-7), np.log10(2e-6))),
                jump=None,
                dead=None,
                x0=a.x0,
                y0=a.y0,
                nx=a.nx,
                ny=a.ny,
            )
        )
    index = {a["name"]: a for a in amps}
    for f in faults:
        a = index[f.amp]
        if f.kind == "noisy_amp":
            a["read_noise_e"] *= float(f.params["factor"])
        elif f.kind == "high_cti":
            a["serial_cti"] = float(f.params["serial_cti"])
            if "parallel_cti" in f.params:
                a["parallel_cti"] = float(f.params["parallel_cti"])
        elif f.kind == "bias_jump":
            a["jump"] = (int(f.params["row"]), float(f.params["step"]))
        elif f.kind == "dead_amp":
            a["dead"] = float(f.params["level"])
    for a in amps:
        # full well: the raw clip level, reached a little before the charge stops growing, so
        # bleed trails sit on it
        a["full_well_e"] = (a["saturation"] - a["bias"]) * a["gain"] * 1.02
    return amps


def _add_signal(
    plan: _Plan, cam: Camera, det: Detector, amps: list[dict[str, Any]], faults: list[Fault]
) -> tuple[np.ndarray, dict[str, Any]]:
    """The noiseless assembled-CCD image in e- and what went into it (stars, tracks)."""
    ny, nx = det.ny, det.nx
    signal = np.empty((ny, nx), dtype=np.float32)
    level = {"science": plan.sky, "flat": plan.flat}.get(plan.image_type, 0.0)
    xmin, ymin, xmax, ymax = cam.fp_bounds
    r_edge = max(
        math.hypot(xmin, ymin),
        math.hypot(xmax, ymax),
        math.hypot(xmin, ymax),
        math.hypot(xmax, ymin),
    )
    (a, b), (c, d) = {
        0: ((1, 0), (0, 1)),
        1: ((0, -1), (1, 0)),
        2: ((-1, 0), (0, -1)),
        3: ((0, 1), (-1, 0)),
    }[det.quarter_turns]
    K.fill_background(
        signal,
        level,
        VIGNETTING,
        r_edge,
        det.fp_x,
        det.fp_y,
        det.ref_x,
        det.ref_y,
        a,
        b,
        c,
        d,
        DARK_CURRENT * plan.darktime,
    )

    # the sensor's own hot pixels (static for the seed)
    static = _rng(plan.seed, _S_STATIC, det.id, 1)
    n_hot = int(static.poisson(HOT_PIXELS_PER_CCD * nx * ny / (4072 * 4000)))
    hx = static.integers(0, nx, n_hot)
    hy = static.integers(0, ny, n_hot)
    hrate = 10 ** static.uniform(np.log10(5), np.log10(500), n_hot)
    np.add.at(signal, (hy, hx), (hrate * plan.darktime).astype(np.float32))

    for f in faults:
        p = f.params
        amp = det.amp(f.amp)
        if f.kind == "hot_column":
            col = int(p["column"])
            signal[amp.y0 : amp.y0 + amp.ny, col] += float(p["rate"]) * plan.darktime + float(
                p["offset"]
            )
        elif f.kind == "hot_pixels":
            fr = _rng(plan.seed, _S_FAULTS, det.id, 99, int(p["x"]), int(p["y"]))
            n = int(p["n_pixels"])
            rad = float(p["radius"])
            ang = fr.uniform(0, 2 * np.pi, n)
            rr = rad * np.sqrt(fr.uniform(0, 1, n))
            xs = np.clip(
                np.rint(p["x"] + rr * np.cos(ang)).astype(int), amp.x0, amp.x0 + amp.nx - 1
            )
            ys = np.clip(
                np.rint(p["y"] + rr * np.sin(ang)).astype(int), amp.y0, amp.y0 + amp.ny - 1
            )
            rates = float(p["rate"]) * fr.lognormal(0, 0.7, n)
            np.add.at(signal, (ys, xs), (rates * plan.darktime + 50.0).astype(np.float32))

    rng = _rng(plan.seed, _S_CCD, plan.seq, det.id)
    stars = _stars(plan, det, rng) if plan.image_type == "science" else None
    if stars is not None and len(stars["ccd_x"]):
        peaks = np.zeros(len(stars["ccd_x"]))
        alpha = plan.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))
        K.add_stars(
            signal,
            stars["ccd_x"],
            stars["ccd_y"],
            stars["flux"],
            alpha,
            MOFFAT_BETA,
            stars["radius"],
            peaks,
        )
        stars["peak"] = peaks

    # cosmic rays: straight tracks, ~80 e-/micron through a 100 micron thick CCD
    area_cm2 = nx * ny * 1e-6
    n_cr = int(rng.poisson(COSMIC_RATE * area_cm2 * plan.darktime))
    x0 = rng.uniform(0, nx, n_cr)
    y0 = rng.uniform(0, ny, n_cr)
    length = np.minimum(rng.exponential(12.0, n_cr), 80.0)
    ang = rng.uniform(0, 2 * np.pi, n_cr)
    x1 = x0 + length * np.cos(ang)
    y1 = y0 + length * np.sin(ang)
    per_px = 8000.0 * np.sqrt(1.0 + (length / 10.0) ** 2) / np.maximum(length, 1.0)
    per_px *= rng.lognormal(0, 0.3, n_cr)
    K.add_tracks(signal, x0, y0, x1, y1, per_px)

    for amp in amps:
        K.bleed_columns(
            signal,
            amp["x0"],
            amp["x0"] + amp["nx"],
            amp["y0"],
            amp["y0"] + amp["ny"],
            np.float32(amp["full_well_e"]),
        )
    for f in faults:
        if f.kind == "dead_column":
            amp = det.amp(f.amp)
            signal[amp.y0 : amp.y0 + amp.ny, int(f.params["column"])] *= float(f.params["response"])

    if stars is not None:
        px = np.clip(np.floor(stars["ccd_x"] + 0.5).astype(int), 0, nx - 1)
        py = np.clip(np.floor(stars["ccd_y"] + 0.5).astype(int), 0, ny - 1)
        fw = np.zeros(len(px))
        for amp in amps:
            inside = (
                (px >= amp["x0"])
                & (px < amp["x0"] + amp["nx"])
                & (py >= amp["y0"])
                & (py < amp["y0"] + amp["ny"])
            )
            fw[inside] = amp["full_well_e"]
        background = level  # vignetting is gentle; the flag is about the peak
        stars["saturated"] = stars["peak"] + background >= fw / 1.02
    tracks = np.column_stack([x0, y0, x1, y1, per_px]) if n_cr else np.zeros((0, 5))
    return signal, dict(stars=stars, tracks=tracks, n_hot_pixels=n_hot)


def _stars(plan: _Plan, det: Detector, rng: np.random.Generator) -> dict[str, np.ndarray]:
    nx, ny = det.nx, det.ny
    n = int(rng.poisson(STARS_PER_CCD * nx * ny / (4072 * 4000)))
    x = rng.uniform(-0.5, nx - 0.5, n)
    y = rng.uniform(-0.5, ny - 0.5, n)
    u = rng.random(n)
    flux = np.minimum(STAR_FLUX_MIN * (1.0 - u) ** (-1.0 / STAR_SLOPE), STAR_FLUX_MAX)
    alpha = plan.fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / MOFFAT_BETA) - 1.0))
    pf = (MOFFAT_BETA - 1.0) / (math.pi * alpha * alpha)
    # out to where the wing drops below ~0.5 e-
    r = alpha * np.sqrt(np.maximum((2.0 * flux * pf) ** (1.0 / MOFFAT_BETA) - 1.0, 0.0))
    radius = np.clip(np.ceil(r), math.ceil(2.5 * plan.fwhm), 96).astype(np.int64)
    order = np.argsort(flux, kind="stable")  # faint first: a fixed summation order
    return dict(ccd_x=x[order], ccd_y=y[order], flux=flux[order], radius=radius[order])


def _simulate(plan: _Plan, detector: str, parallel: bool, keep_signal: bool) -> SimulatedCCD:
    cam = _camera(plan.camera)
    det = _resolve_detector(cam, detector)
    fmt = RAW_FORMATS[det.vendor]
    n_seg = len(det.amps)
    placements = amp_placements(det.vendor, n_seg)
    faults = plan.faults_on(det.name)
    amps = _amp_setup(plan, det, fmt, placements, faults)
    signal, extra = _add_signal(plan, cam, det, amps, faults)

    geom = np.empty((n_seg, 9), dtype=np.int64)
    par = np.empty((n_seg, 6), dtype=np.float64)
    row_offset = np.empty((n_seg, RAW_NY), dtype=np.float64)
    keys = np.empty(n_seg, dtype=np.uint64)
    for i, a in enumerate(amps):
        p = a["placement"]
        # where the amp sits, from the one layout rule (and the size of its data section)
        x0, y0 = p.x_index * fmt.nx, p.row * fmt.ny
        assert (x0, y0) == (a["x0"], a["y0"]), (det.name, a["name"])
        n_s, n_p = fmt.prescan + fmt.nx, fmt.ny
        geom[i] = (x0, y0, p.flip_x, p.flip_y, fmt.prescan, fmt.nx, fmt.ny, n_s, n_p)
        rn_adu = a["read_noise_e"] / a["gain"]
        dead = -1.0 if a["dead"] is None else a["dead"]
        par[i] = (
            a["gain"],
            rn_adu,
            min(a["saturation"], K.ADC_MAX),
            a["serial_cti"],
            a["parallel_cti"],
            dead,
        )
        off = a["bias"] + a["wander"]
        if a["jump"] is not None:
            off = off.copy()
            off[a["jump"][0] :] += a["jump"][1]
        row_offset[i] = off
        keys[i] = _key64(plan.seed, _S_NOISE, plan.seq, det.id, i)
        a.update(serial_transfers=n_s, parallel_transfers=n_p, read_noise_adu=rn_adu)
    tail = np.asarray(EPER_TAIL)
    segments = np.empty((n_seg, RAW_NY, RAW_NX), dtype=np.int32)
    fill = K.fill_segments_parallel if parallel else K.fill_segments
    fill(segments, signal, geom, par, tail, tail, row_offset, keys)

    truth = _file_truth(plan, cam, det, fmt, amps, extra, faults)
    return SimulatedCCD(
        camera=plan.camera,
        detector=det.name,
        vendor=det.vendor,
        segments=segments,
        datasec=fmt.datasec,
        placements=placements,
        truth=truth,
        signal=signal if keep_signal else None,
        _plan=plan,
    )


def _r(x: float, nd: int = 3) -> float:
    return round(float(x), nd)


def _file_truth(
    plan: _Plan,
    cam: Camera,
    det: Detector,
    fmt: RawFormat,
    amps: list[dict[str, Any]],
    extra: dict[str, Any],
    faults: list[Fault],
) -> dict[str, Any]:
    bay, slot = _bay_slot(plan.camera, det)
    amp_truth = []
    for a in amps:
        dead = a["dead"] is not None
        amp_truth.append(
            dict(
                amp=a["name"],
                extname=a["placement"].extname,
                hdu=a["placement"].hdu_index,
                bias=_r(a["dead"] if dead else a["bias"]),
                bias_wander_rms=_r(0.0 if dead else float(np.std(a["wander"]))),
                gain=a["gain"],
                read_noise_e=0.0 if dead else _r(a["read_noise_e"], 4),
                read_noise_adu=0.0 if dead else _r(a["read_noise_adu"], 4),
                saturation=a["saturation"],
                full_well_e=_r(a["full_well_e"], 1),
                serial_cti=float(f"{a['serial_cti']:.4g}"),
                parallel_cti=float(f"{a['parallel_cti']:.4g}"),
                serial_transfers=a["serial_transfers"],
                parallel_transfers=a["parallel_transfers"],
                dead=dead,
            )
        )
    stars = extra["stars"]
    star_truth = None
    if stars is not None:
        fx, fy = det.ccd_to_fp(stars["ccd_x"], stars["ccd_y"])
        n = len(stars["ccd_x"])
        star_truth = dict(
            detector=[det.name] * n,
            ccd_x=[_r(v) for v in stars["ccd_x"]],
            ccd_y=[_r(v) for v in stars["ccd_y"]],
            fp_x=[_r(v) for v in fx],
            fp_y=[_r(v) for v in fy],
            flux=[_r(v, 1) for v in stars["flux"]],
            peak=[_r(v, 1) for v in stars["peak"]],
            fwhm=[_r(plan.fwhm)] * n,
            saturated=[bool(s) for s in stars["saturated"]],
        )
    return dict(
        file=raw_filename(plan.camera, det.name, plan.day_obs, plan.seq),
        detector=det.name,
        raftbay=bay,
        ccdslot=slot,
        detector_id=det.id,
        vendor=det.vendor,
        serial=det.serial,
        n_segments=len(amps),
        datasec=fmt.datasec,
        ccd_shape=[det.ny, det.nx],
        n_hot_pixels=extra["n_hot_pixels"],
        cosmic_rays=[[_r(v, 2) for v in t] for t in extra["tracks"]],
        amps=amp_truth,
        faults=[f.to_dict() for f in faults],
        stars=star_truth,
    )


def simulate_ccd(
    detector: str = "R22_S11",
    camera: str = "LSSTCam",
    seed: int = 0,
    image_type: str = "science",
    seq: int = 1,
    day_obs: str = "20261125",
    faults: Iterable[Fault] = (),
    parallel: bool = True,
    keep_signal: bool = False,
) -> SimulatedCCD:
    """One CCD in memory (no disk), bit-identical to the same CCD of ``simulate_exposure`` given
    the same faults (``choose_faults(camera, detectors, seed)`` for the random ones).

    ``parallel`` fills the amps on numba's threads; ``keep_signal`` keeps the noiseless
    assembled-CCD image (e-) in ``.signal``.
    """
    cam = _camera(camera)
    det = _resolve_detector(cam, detector)
    resolved = _resolve_faults(cam, list(faults), [det.name], seed)
    plan = _make_plan(cam.name, seed, seq, day_obs, image_type, resolved)
    return _simulate(plan, det.name, parallel, keep_signal)


# ---------------------------------------------------------------------------------------------
# Headers


def _fmt_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def _mjd(t: datetime) -> float:
    return (t - datetime(1858, 11, 17)).total_seconds() / 86400.0


_FILTERS = {
    "LSSTCam": ("r", "r_57", 314.0, 5),
    "ComCam": ("r", "r_03", 0.0, 2),
    "LATISS": ("r", "SDSSr_65mm", None, 2),
}
_SEQFILE = {
    "LSSTCam": "FP_{vendor}_2s_l3cp_v30.seq",
    "ComCam": "FP_ITL_2s_ir2_v26.seq",
    "LATISS": "FP_ITL_2s_ir2_v26_no_RG.seq",
}


def _primary_header(plan: _Plan, det: Detector) -> fits.Header:
    p = dict(plan.pointing)
    cam = plan.camera
    bay, slot = _bay_slot(cam, det)
    t_beg = plan.date_beg
    t_end = t_beg + timedelta(seconds=plan.darktime)
    t_trg = t_end - timedelta(milliseconds=5)
    imgtype = {"bias": "BIAS", "dark": "DARK", "flat": "FLAT", "science": "SCIENCE"}[
        plan.image_type
    ]
    band, filt, filtpos, filtslot = _FILTERS[cam]
    el = p["el"]
    am = 1.0 / math.sin(math.radians(el))
    ccd_type = det.serial.split("-")[1] if det.serial.count("-") >= 2 else ""
    vendor = det.vendor
    seqfile = _SEQFILE[cam].format(vendor=vendor)
    telescope = "LSST AuxTelescope" if cam == "LATISS" else "Simonyi Survey Telescope"
    instrume = {"LSSTCam": "lsstCam", "ComCam": "ComCam", "LATISS": "LATISS"}[cam]
    obj = {"science": f"Rubin_SV_{p['ra']:.0f}_{p['dec']:.0f}", "flat": "FlatField position"}
    ny = det.ny
    nx = det.nx
    cards: list[tuple[str, Any, str]] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
        ("BINX", 1, "[pixels] binning along X axis"),
        ("BINY", 1, "[pixels] binning along Y axis"),
        ("CCDGAIN", 1.0, "Estimate of overall system gain"),
        ("CCDNOISE", 10.0, "Rough guess at system noise"),
        ("DATE", _fmt_time(t_trg + timedelta(milliseconds=5)), "Creation Date and Time of File"),
        (
            "MJD",
            _mjd(t_trg + timedelta(milliseconds=5)),
            "Modified Julian Date that the file was written",
        ),
        ("IMGTYPE", imgtype, "BIAS, DARK, FLAT, SCIENCE ..."),
        ("DATE-OBS", _fmt_time(t_beg), "Date of the observation (image acquisition)"),
        ("MJD-OBS", _mjd(t_beg), "Modified Julian Date of image acquisition"),
        ("DATE-TRG", _fmt_time(t_trg), "TRG date"),
        ("MJD-TRG", _mjd(t_trg), "TRG time"),
        ("OBSID", plan.obsid, "ImageName from Camera StartIntergration"),
        ("DATE-BEG", _fmt_time(t_beg), "Time at the start of integration"),
        ("MJD-BEG", _mjd(t_beg), "Modified Julian Date derived from DATE-BEG"),
        ("DATE-END", _fmt_time(t_end), "end date of the observation"),
        ("MJD-END", _mjd(t_end), "Modified Julian Date derived from DATE-END"),
        ("BUNIT", "adu", "Brightness units for pixel array"),
        ("TIMESYS", "TAI", "The time scale used"),
        ("GROUPID", _fmt_time(t_beg - timedelta(seconds=3)), "The group id"),
        ("INSTRUME", instrume, "Instrument"),
        ("TELESCOP", telescope, "Telescope"),
        ("OBS-LONG", -70.749417, "[deg] Observatory east longitude"),
        ("OBS-LAT", -30.244639, "[deg] Observatory latitude"),
        ("OBS-ELEV", 2663.0, "[m] Observatory elevation"),
        ("OBSGEO-X", 1818938.94, "[m] X-axis Geocentric coordinate"),
        ("OBSGEO-Y", -5208470.95, "[m] Y-axis Geocentric coordinate"),
        ("OBSGEO-Z", -3195172.08, "[m] Z-axis Geocentric coordinate"),
        ("RA", p["ra"], "RA of target (deg)"),
        ("DEC", p["dec"], "Dec of target (deg)"),
        ("RASTART", p["ra"] + 0.0008, "RA of telescope from AZSTART and ELSTART"),
        ("DECSTART", p["dec"] - 0.00005, "DEC of telescope from AZSTART and ELSTART"),
        ("RAEND", p["ra"] + 0.001, "RA of telescope from AZEND and ELEND"),
        ("DECEND", p["dec"] - 0.00005, "DEC of telescope from AZEND and ELEND"),
        ("ROTPA", p["rotpa"], "Rotation angle relative to the sky (deg)"),
        ("ROTCOORD", "sky", "Telescope Rotation Coordinates"),
        ("HASTART", p["ha"], "[HH:MM:SS] Telescope hour angle at start"),
        ("ELSTART", el, "[deg] Telescope zenith distance at start"),
        ("AZSTART", p["az"], "[deg] Telescope azimuth angle at start"),
        ("AMSTART", am, "Airmass at start"),
        ("HAEND", p["ha"] + plan.darktime / 3600.0, "[HH:MM:SS] Telescope hour angle at end"),
        ("ELEND", el - 0.03, "[deg] Telescope zenith distance at end"),
        ("AZEND", p["az"] + 0.08, "[deg] Telescope azimuth angle at end"),
        ("AMEND", 1.0 / math.sin(math.radians(el - 0.03)), "Airmass at end"),
        ("TRACKSYS", "RADEC", "Tracking coordinate system"),
        ("RADESYS", "ICRS", "Equatorial coordinate system"),
        ("FOCUSZ", p["focusz"], "[mm] Focus Z position"),
        ("OBJECT", obj.get(plan.image_type), "Name of the observed object"),
        ("VIGNETTE", "NO", "Is the camera vignetted?"),
        ("VIGN_MIN", "NO", "Minimum vignetting"),
        ("TESTTYPE", imgtype, "BIAS, DARK, FLAT, SCIENCE ..."),
        ("CAMCODE", CAMERA_CODES[cam], "The camera code"),
        ("CONTRLLR", CONTROLLER, "The controller (e.g. O for OCS, C for CCS)"),
        ("DAYOBS", plan.day_obs, "The observation day as defined by image name"),
        ("SEQNUM", plan.seq, "The sequence number from the image name"),
        ("PROGRAM", "BLOCK-T999", "Name of the program"),
        ("REASON", "simulation", "Reason for observation"),
        ("CURINDEX", 1, "Index number for snap or sequence"),
        ("MAXINDEX", 1, "Max number for snap or sequence"),
        ("TSTAND", "CVT_SIMULATOR", "Test stand"),
        (
            "IMAGETAG",
            f"{int(_key64(plan.seed, 100, plan.seq)) & 0xFFFFFFFFFFFFFFF:015x}",
            "DAQ Image id",
        ),
        ("OBSANNOT", "", "Observation annotation"),
        ("CCD_MANU", vendor, "CCD Manufacturer"),
        ("CCD_TYPE", ccd_type, "CCD Model Number"),
        ("CCDSLOT", slot, "The CCD Slot"),
        ("RAFTBAY", bay, "The RAFT Bay"),
        ("FIRMWARE", "3139500e", "DAQ firmware version (Hex)"),
        (
            "PLATFORM",
            {"LSSTCam": "lsstcam", "ComCam": "comcam", "LATISS": "auxtel"}[cam],
            "DAQ platform version",
        ),
        ("CONTNUM", f"18ed{det.id:04x}", "REB serial # (Hex)"),
        ("DAQVERS", "R5-V13.4 2025-03-20T16:46:35Z (811f588b)", "DAQ version"),
        (
            "DAQPART",
            {"LSSTCam": "camera", "ComCam": "comcam", "LATISS": "lat"}[cam],
            "DAQ partition",
        ),
        ("DAQFOLD", "raw", "DAQ folder the image was initially created in"),
        ("SEQFILE", seqfile, "Sequencer file name"),
        ("SEQNAME", seqfile, "Sequencer file name"),
        ("SEQCKSUM", "1781310301", "Checksum of Sequencer"),
        ("LSST_NUM", det.serial, "LSST Assigned CCD Number"),
        ("CCD_SERN", f"{20000 + det.id * 17}", "Manufacturers' CCD Serial Number"),
        ("REBNAME", f"LCA-13574-{det.id // 3:03d}", "LSST Assigned Name REB name"),
        ("RAFTNAME", f"LCA-11021_RTM-{det.id // 9:03d}", "LSST Assigned Name Raft name"),
        ("FPVERS", "1.2.13-SNAPSHOT", "Version of focal-plane subsystem"),
        ("IHVERS", "1.1.8", "Version of image handling"),
        ("FILTBAND", band, "Name of the filter band"),
        ("FILTER", filt, "Name of the filter"),
        ("FILTPOS", filtpos, "Filter position"),
        ("FILTSLOT", filtslot, "Filter slot"),
        ("EXPTIME", plan.exptime, "Exposure time"),
        ("DARKTIME", plan.darktime, "Dark time"),
        ("SHUTTIME", plan.exptime + (0.001 if plan.exptime else 0.0), "Shutter exposure time"),
        ("AIRTEMP", p["airtemp"], "Outside air temperature"),
        ("PRESSURE", p["pressure"], "Outside air pressure"),
        ("HUMIDITY", p["humidity"], "Outside relative humidity"),
        ("WINDSPD", p["windspd"], "Outside wind speed"),
        ("WINDDIR", p["winddir"], "Outside wind direction"),
        ("SEEING", p["seeing"] if plan.image_type == "science" else None, "Seeing"),
        ("CCDTEMP", -100.0 + (det.id % 7) * 0.1, "CCD temperature"),
        ("DETSIZE", f"[1:{nx},1:{ny}]", "Size of the assembled CCD"),
        ("HEADVER", 2, "Version number of header"),
        ("FILENAME", raw_filename(cam, det.name, plan.day_obs, plan.seq), "Original file name"),
    ]
    h = _cards_to_header(cards)
    h.add_comment(SIM_COMMENT)
    h.add_comment(f"cvt {__version__} seed={plan.seed}")
    return h


def _frame_offsets(camera: str, det: Detector) -> tuple[float, float, float, float]:
    """Offsets of the camera's RAFT and FOCAL_PLANE frames from its CCD frame, ``(raft_X,
    raft_Y, fp_X, fp_Y)``; the camera's frames are the transpose of ours (X along our y)."""
    pitch, raft = 4225.0, 12700.0
    if camera == "LATISS":
        rr, rc, sr, sc = 1, 0, 0, 0
    elif det.kind == "science":
        rr, rc = int(det.raft[1]), int(det.raft[2])
        sr, sc = int(det.slot[1]), int(det.slot[2])
    else:  # corner rafts: the detector's own centre in the focal plane
        cx = det.fp_y + 2.5 * raft
        cy = det.fp_x + 2.5 * raft
        rr, rc = int(det.raft[1]), int(det.raft[2])
        fx, fy = cx - det.ny / 2, cy - det.nx / 2
        return fx - rr * raft, fy - rc * raft, fx, fy
    ox = sr * pitch + (raft / 2 - pitch - det.ny / 2)
    oy = sc * pitch + (raft / 2 - pitch - det.nx / 2)
    return ox, oy, ox + rr * raft, oy + rc * raft


_WCS_COMMENT = "In the camera coordinate system"
_SP_COMMENT = "In the serial-parallel coordinate system"


def _segment_cards(
    det: Detector,
    fmt: RawFormat,
    p: AmpPlacement,
    camera: str,
    offsets: tuple[float, float, float, float],
) -> list[tuple[str, Any, str]]:
    """The real files' segment keys (DETSEC in their convention, alternate WCS A C R F E B Q)."""
    w, h, pre = fmt.nx, fmt.ny, fmt.prescan
    j, r = p.x_index, p.row
    # our CCD x (1-based) of raw column p1 is cx0 + sx * p1; our y (1-based) of raw row p2 is
    # cy0 + sy * p2
    cx0, sx = (j * w + w + pre + 1, -1) if p.flip_x else (j * w - pre, 1)
    cy0, sy = (r * h + h + 1, -1) if p.flip_y else (r * h, 1)
    ax0 = w + pre + 1 if p.flip_x else -pre
    ay0 = h + 1 if p.flip_y else 0
    # DETSEC: x as ours, y mirrored (the known header convention: C1x rows at the bottom)
    dtv1, dtm11 = cx0, sx
    dtv2, dtm22 = det.ny + 1 - cy0, -sy
    detsec = (
        f"[{dtv1 + dtm11 * (pre + 1)}:{dtv1 + dtm11 * (pre + w)},"
        f"{dtv2 + dtm22 * 1}:{dtv2 + dtm22 * h}]"
    )
    rx, ry, fx, fy = offsets
    cards: list[tuple[str, Any, str]] = [
        ("CHANNEL", p.hdu_index, ""),
        ("EXTNAME", p.extname, ""),
        ("CCDSUM", "1 1", ""),
        ("DATASEC", fmt.datasec, ""),
        ("DETSEC", detsec, ""),
        ("DETSIZE", f"[1:{det.nx},1:{det.ny}]", ""),
        ("DTV1", dtv1, "detector transformation vector"),
        ("DTV2", dtv2, "detector transformation vector"),
        ("DTM1_1", float(dtm11), "detector transformation matrix"),
        ("DTM2_2", float(dtm22), "detector transformation matrix"),
        ("DTM1_2", 0.0, "detector transformation matrix"),
        ("DTM2_1", 0.0, "detector transformation matrix"),
    ]

    def frame(s: str, name: str, t1: str, t2: str, v1: float, v2: float, serpar: bool) -> None:
        cards.append((f"WCSNAME{s}", name, "Name of coordinate system"))
        cards.append((f"CTYPE1{s}", t1, _SP_COMMENT if serpar else _WCS_COMMENT))
        cards.append((f"CTYPE2{s}", t2, _SP_COMMENT if serpar else _WCS_COMMENT))
        if serpar:
            pc = (float(sx), 0.0, 0.0, float(sy))
        else:
            pc = (0.0, float(sy), float(sx), 0.0)
        for key, val in zip(("PC1_1", "PC1_2", "PC2_1", "PC2_2"), pc, strict=True):
            cards.append((f"{key}{s}", val, ""))
        cards.extend(
            [
                (f"CDELT1{s}", 1.0, ""),
                (f"CDELT2{s}", 1.0, ""),
                (f"CRPIX1{s}", 0.0, ""),
                (f"CRPIX2{s}", 0.0, ""),
                (f"CRVAL1{s}", float(v1), ""),
                (f"CRVAL2{s}", float(v2), ""),
            ]
        )

    frame("A", "AMPLIFIER", "Seg_X", "Seg_Y", ay0, ax0, False)
    frame("C", "CCD", "CCD_X", "CCD_Y", cy0, cx0, False)
    frame("R", "RAFT", "RAFT_X", "RAFT_Y", cy0 + rx, cx0 + ry, False)
    frame("F", "FOCAL_PLANE", "FP_X", "FP_Y", cy0 + fx, cx0 + fy, False)
    frame("E", "FP_SERPAR", "FP_S", "FP_P", cx0 + fy, cy0 + fx, True)
    frame("B", "CCD_SERPAR", "CCD_S", "CCD_P", cx0, cy0, True)
    frame("Q", "RAFT_SERPAR", "RAFT_S", "RAFT_P", cx0 + ry, cy0 + rx, True)
    cards.append(("BSCALE", 1.0, ""))
    cards.append(("BZERO", 0.0, ""))
    cards.append(("INHERIT", True, "Extension inherits values from primary header"))
    return cards


def _fit_comment(value: Any, comment: str) -> str:
    """The comment cut to fit its 80-character card (astropy would warn and cut it itself)."""
    if isinstance(value, str):
        width = max(len(value.replace("'", "''").ljust(8)) + 2, 20)
    else:
        width = 20
    room = 80 - 10 - width - 3
    return comment[: max(room, 0)]


def _cards_to_header(cards: Iterable[tuple[str, Any, str]]) -> fits.Header:
    h = fits.Header()
    for key, value, comment in cards:
        h.append((key, value, _fit_comment(value, comment)), end=True)
    return h


def _image_header(extra: list[tuple[str, Any, str]]) -> bytes:
    h = _cards_to_header(
        [
            ("XTENSION", "IMAGE", "marks beginning of new HDU"),
            ("BITPIX", 32, "bits per data value"),
            ("NAXIS", 2, "number of axis"),
            ("NAXIS1", RAW_NX, "size of the n'th axis"),
            ("NAXIS2", RAW_NY, "size of the n'th axis"),
            ("PCOUNT", 0, "Required value"),
            ("GCOUNT", 1, "Required value"),
            *extra,
        ]
    )
    return h.tostring().encode("ascii")


def _rice_header(extra: list[tuple[str, Any, str]], heap: int, max_tile: int) -> bytes:
    h = _cards_to_header(
        [
            ("XTENSION", "BINTABLE", "binary table extension"),
            ("BITPIX", 8, "array data type"),
            ("NAXIS", 2, "number of array dimensions"),
            ("NAXIS1", 8, "width of table in bytes"),
            ("NAXIS2", RAW_NY, "number of rows in table"),
            ("PCOUNT", heap, "number of group parameters"),
            ("GCOUNT", 1, "number of groups"),
            ("TFIELDS", 1, "number of fields in each row"),
            ("TTYPE1", "COMPRESSED_DATA", "label for field 1"),
            ("TFORM1", f"1PB({max_tile})", "data format of field: variable length array"),
            ("ZIMAGE", True, "extension contains compressed image"),
            ("ZTILE1", RAW_NX, "size of tiles to be compressed"),
            ("ZTILE2", 1, "size of tiles to be compressed"),
            ("ZCMPTYPE", "RICE_1", "compression algorithm"),
            ("ZNAME1", "BLOCKSIZE", "compression block size"),
            ("ZVAL1", K.RICE_BLOCK, "pixels per block"),
            ("ZNAME2", "BYTEPIX", "bytes per pixel (1, 2, 4, or 8)"),
            ("ZVAL2", 4, "bytes per pixel (1, 2, 4, or 8)"),
            ("ZTENSION", "IMAGE", "Image extension"),
            ("ZBITPIX", 32, "data type of original image"),
            ("ZNAXIS", 2, "dimension of original image"),
            ("ZNAXIS1", RAW_NX, "length of original image axis"),
            ("ZNAXIS2", RAW_NY, "length of original image axis"),
            ("ZPCOUNT", 0, "number of parameters"),
            ("ZGCOUNT", 1, "number of groups"),
            *extra,
        ]
    )
    return h.tostring().encode("ascii")


def _cond_headers(plan: _Plan, det: Detector) -> bytes:
    """The header-only condition tables the camera appends (REB_COND, CONFIG_COND)."""
    rng = _rng(plan.seed, _S_CCD, plan.seq, det.id, 7)
    base = [
        ("XTENSION", "BINTABLE", "marks beginning of new HDU"),
        ("BITPIX", 8, "bits per data value"),
        ("NAXIS", 2, "number of axes"),
        ("NAXIS1", 0, "size of the n'th axis"),
        ("NAXIS2", 0, "size of the n'th axis"),
        ("PCOUNT", 0, "Required value"),
        ("GCOUNT", 1, "Required value"),
        ("TFIELDS", 0, "Number of table fields"),
    ]
    reb = [("EXTNAME", "REB_COND", "Name of the extension")]
    reb.extend(
        (f"TEMP{i}", round(float(rng.uniform(-5, 10)), 4), f"REB Board temperature {i}")
        for i in range(1, 11)
    )
    reb += [
        ("ATEMPU", round(float(rng.uniform(-13, -10)), 4), "ASPIC 0 upper temperature"),
        ("ATEMPL", round(float(rng.uniform(-10, -8)), 4), "ASPIC 0 lower temperature"),
        ("CCDTEMP", round(-100.0 + float(rng.uniform(-0.5, 0.5)), 4), "CCD temperature"),
        ("RTDTEMP", round(-105.0 + float(rng.uniform(-1, 1)), 4), "RTD temperature"),
        ("DIGPS_V", 5.425, "REB Digital PS voltage"),
        ("DIGPS_I", round(float(rng.uniform(640, 670)), 3), "REB Digital PS current"),
        ("ANAPS_V", 7.825, "REB Analog PS voltage"),
        ("ANAPS_I", round(float(rng.uniform(620, 650)), 3), "REB Analog PS current"),
        ("CLKHPS_V", 15.325, "REB CLK_H PS voltage"),
        ("CLKLPS_V", 13.575, "REB CLK_L PS voltage"),
        ("ODPS_V", 38.675, "REB OD PS voltage"),
        ("ODV", 23.3968, "REB bias OD voltage"),
        ("OGV", -3.42125, "REB bias OG voltage"),
        ("RDV", 11.6044, "REB bias RD voltage"),
        ("GDV", 26.0024, "REB bias GD voltage"),
        ("HVBIAS", "ON", "REB HVBias Switch state"),
        ("IDLEFLSH", 0, "IDLE FLUSH setting"),
        ("POWER", round(float(rng.uniform(17, 18.5)), 4), "Total REB PS power"),
    ]
    config = [("EXTNAME", "CONFIG_COND", "Name of the extension")]
    for key, what in (
        ("FPDAQCS", "DAQ"),
        ("FPHIDCS", "HardwareId"),
        ("FPINSCS", "Instrument"),
        ("FPLIMCS", "Limits"),
        ("FPRCS", "Rafts"),
        ("FPSEQCS", "Sequencer"),
        ("RPLIMCS", "Limits"),
        ("RPPOWCS", "Power"),
    ):
        config.append((key, str(int(rng.integers(1, 2**32))), f"Checksum for {what} configuration"))
    return (
        _cards_to_header(base + reb).tostring() + _cards_to_header(base + config).tostring()
    ).encode("ascii")


# ---------------------------------------------------------------------------------------------
# Writing


def _padded(n: int) -> int:
    return -n % BLOCK


def _write_raw(
    path: Path, ccd: SimulatedCCD, plan: _Plan, compress: str | None, parallel: bool = True
) -> Path:
    if compress not in (None, "rice"):
        raise ValueError(f"unknown compression {compress!r}; expected None or 'rice'")
    cam = _camera(plan.camera)
    det = _resolve_detector(cam, ccd.detector)
    fmt = RAW_FORMATS[det.vendor]
    offsets = _frame_offsets(plan.camera, det)
    tmp = path.with_name("." + path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(_primary_header(plan, det).tostring().encode("ascii"))
        for p, seg in zip(ccd.placements, ccd.segments, strict=True):
            cards = _segment_cards(det, fmt, p, plan.camera, offsets)
            if compress is None:
                f.write(_image_header(cards))
                data = seg.astype(">i4")
                f.write(memoryview(data).cast("B"))
                f.write(b"\0" * _padded(data.nbytes))
            else:
                buf = np.empty((RAW_NY, K.rice_max_bytes(RAW_NX)), dtype=np.uint8)
                lengths = np.empty(RAW_NY, dtype=np.int64)
                enc = K.rice_encode_rows_parallel if parallel else K.rice_encode_rows
                enc(np.ascontiguousarray(seg), buf, lengths)
                heap = np.empty(int(lengths.sum()), dtype=np.uint8)
                offs = K.pack_heap(buf, lengths, heap)
                table = np.empty((RAW_NY, 2), dtype=">i4")
                table[:, 0] = lengths
                table[:, 1] = offs
                f.write(_rice_header(cards, heap.nbytes, int(lengths.max())))
                f.write(table.tobytes())
                f.write(heap.tobytes())
                f.write(b"\0" * _padded(table.nbytes + heap.nbytes))
        f.write(_cond_headers(plan, det))
    os.replace(tmp, path)
    return path


def _simulate_and_write(
    plan: _Plan, detector: str, outdir: str, compress: str | None, parallel: bool
) -> dict[str, Any]:
    """One CCD of an exposure: simulate, write, return its truth (runs in worker threads)."""
    ccd = _simulate(plan, detector, parallel, keep_signal=False)
    _write_raw(Path(outdir) / ccd.truth["file"], ccd, plan, compress, parallel)
    return ccd.truth


def simulate_exposure(
    outdir: str | os.PathLike[str],
    camera: str = "LSSTCam",
    detectors: Sequence[str] | None = None,
    seed: int = 0,
    image_type: str = "science",
    seq: int = 1,
    day_obs: str = "20261125",
    compress: str | None = None,
    faults: bool | Iterable[Fault] = True,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SimulatedExposure:
    """Write one exposure's raw files (one per detector; all of the camera's by default) and its
    truth file into ``outdir``.

    ``faults``: True picks random ones (``choose_faults``), False none, or an explicit list of
    ``Fault`` (params left out are filled in). ``workers``: threads across CCDs, each CCD on
    one (the kernels release the GIL; default: the number of cores, at most one per CCD); with
    1 the CCDs run one after the other, each spread over numba's threads. The output is the same
    bytes whatever ``workers`` is. ``progress(done, total)`` is called after each CCD.
    """
    cam = _camera(camera)
    if compress not in (None, "rice"):
        raise ValueError(f"unknown compression {compress!r}; expected None or 'rice'")
    names = default_detectors(cam.name) if detectors is None else list(detectors)
    dets = sorted({_resolve_detector(cam, n).name for n in names}, key=cam.index)
    if not dets:
        raise ValueError("no detectors to simulate")
    resolved = _resolve_faults(cam, faults, dets, seed)
    for f in resolved:
        if f.detector not in dets:
            raise ValueError(f"fault on {f.detector}, which is not simulated")
    plan = _make_plan(cam.name, seed, seq, day_obs, image_type, resolved)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    n_workers = min(os.cpu_count() or 1, len(dets)) if workers is None else max(1, int(workers))
    n_workers = min(n_workers, len(dets))
    truths: list[dict[str, Any]] = []
    if n_workers == 1:
        for d in dets:
            truths.append(_simulate_and_write(plan, d, str(out), compress, True))
            if progress is not None:
                progress(len(truths), len(dets))
    else:
        # numba's parallel kernels are not called from several threads at once (the workqueue
        # threading layer forbids it): each worker runs the serial ones
        with ThreadPoolExecutor(n_workers, thread_name_prefix="cvt-simulate") as pool:
            # the threads start deaf to Ctrl-C: it comes to this one at once, waiting or not (one
            # of them took it, and this one heard of it only when the CCD it waited for ended)
            with interrupts_held():
                futures = [
                    pool.submit(_simulate_and_write, plan, d, str(out), compress, False)
                    for d in dets
                ]
            try:
                for fut in futures:
                    truths.append(fut.result())
                    if progress is not None:
                        progress(len(truths), len(dets))
            except BaseException:  # Ctrl-C: the CCDs being written end, the others never start
                pool.shutdown(cancel_futures=True)
                raise
    truth = _exposure_truth(plan, truths, resolved, compress)
    truth_path = out / f"{plan.obsid}_truth.json"
    tmp = truth_path.with_name("." + truth_path.name + ".part")
    tmp.write_text(json.dumps(truth, indent=1) + "\n")
    os.replace(tmp, truth_path)
    return SimulatedExposure(out, plan.obsid, [out / t["file"] for t in truths], truth_path, truth)


def _exposure_truth(
    plan: _Plan, files: list[dict[str, Any]], faults: list[Fault], compress: str | None
) -> dict[str, Any]:
    stars: dict[str, list[Any]] = {
        k: []
        for k in ("detector", "ccd_x", "ccd_y", "fp_x", "fp_y", "flux", "peak", "fwhm", "saturated")
    }
    file_entries = []
    for t in files:
        t = dict(t)
        s = t.pop("stars")
        t.pop("faults")
        if s is not None:
            for k in stars:
                stars[k].extend(s[k])
        file_entries.append(t)
    return dict(
        schema=TRUTH_SCHEMA,
        camera=plan.camera,
        obsid=plan.obsid,
        day_obs=plan.day_obs,
        seq=plan.seq,
        image_type=plan.image_type,
        exptime=plan.exptime,
        darktime=plan.darktime,
        seed=plan.seed,
        compress=compress,
        fwhm_px=_r(plan.fwhm),
        sky_e=_r(plan.sky, 2) if plan.image_type == "science" else 0.0,
        flat_e=_r(plan.flat, 2) if plan.image_type == "flat" else 0.0,
        dark_current=DARK_CURRENT,
        eper_tail=[_r(w, 6) for w in EPER_TAIL],
        files=file_entries,
        faults=[f.to_dict() for f in faults],
        stars=stars,
    )
