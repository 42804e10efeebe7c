"""Per-amp health metrics from a CCD's raw segments, as camera engineers define them.

Computed in the ingest from the segments already in memory and the per-row overscan bias the
ISR already made (nothing is read twice), one row per amp, in a few tens of milliseconds per
CCD. The definitions (exact, in raw ADU unless said; ``D = raw - rint(row_bias)`` is a data
pixel as level 0 stores it; serial overscan columns ``[x1 + 3, nx - 2)`` as the ISR uses them):

- ``bias_level``: median raw ADU of the serial overscan columns, all rows.
- ``read_noise_adu``: median over 20 x 20-pixel boxes of the serial overscan of the standard
  deviation of ``raw - row_bias``, corrected for the degree of freedom the row bias took;
  ``read_noise_e = read_noise_adu * gain``.
- ``bias_shifts``, ``bias_shift_max``: eo_pipe's bias-shift scan of the row profile
  (``row_bias``): triangular step filter of 30 rows, peaks above 3 x ``bias_row_noise`` (the
  robust sigma of the profile minus its 31-row running mean), first 30 rows skipped, kept when
  the profile is flat enough on both sides; the count and the largest |step| (ADU).
- ``serial_cti``: EPER, the mean charge above the row bias in the first 3 serial overscan
  columns over the mean of the last data column, over ``N + 1`` with ``N`` the serial transfers
  (prescan + data columns); ``parallel_cti`` the same with the first 3 parallel overscan rows,
  the last data row and ``N`` = data rows. ``*_err``: the read-noise error. NaN when the last
  column (row) holds less than 20 ADU (a bias or a dark has nothing to defer).
- ``signal_median``, ``signal_noise``: median of ``D`` and its IQR / 1.349 (ADU).
  ``signal_ratio``: the amp's median in e- over the median of the CCD's live amps (NaN when that
  is below 100 e-: biases and darks).
- ``saturated_pixels``: data pixels with raw ADU >= floor(saturation of the amp).
- ``bright_pixels``: data pixels more than ``T`` above the amp median, ``T = 5 signal_noise``,
  and in darks at least 5 e-/s x exposure time / gain; in science images only hot pixels
  (more than twice as far above the median as each of their 4 neighbours: not stars); not
  counted when in a bright column or in a cosmic-ray-like track (thin 8-connected group of 4+).
- ``bright_columns``: columns holding >= 20 contiguous bright pixels (not in science images:
  stars), or whose mean (pixels winsorized at median -/+ 3 noise) stands more than 10 robust
  sigmas above the running median of the 15 columns around it, saturated columns excepted.
- ``dark_pixels``, ``dark_columns`` (flats and science): pixels below 80 % of the amp median;
  a column with >= 20 contiguous such pixels. NaN when 20 % of the median is within 5 noise.
- ``defect_fraction``: (bright + dark pixels + (bright + dark columns) x data rows) / pixels.
- ``divisadero_tearing`` (flats): the largest |response - 1| of the two columns at each amp
  edge inside the CCD; response: clipped column mean over the 200 rows nearest the serial
  register, normalised by its median and a line fitted to the central columns (eotest).
- ``dead``: no variation in the data region, or data and overscan noise both below 0.5 ADU.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core import _metrics_kernels as k
from core.isr import IsrConfig, downsample_scaled, serial_overscan
from core.layout import AmpPlacement, amp_array_box, array_to_ccd

IMAGE_CATEGORIES = ("bias", "dark", "flat", "science", "default")
PIXEL_SCALE_ARCSEC = 0.2

_CATEGORY_OF = {
    "bias": "bias",
    "zero": "bias",
    "dark": "dark",
    "flat": "flat",
    "sflat": "flat",
    "dflat": "flat",
    "science": "science",
    "object": "science",
    "skyexp": "science",
    "acq": "science",
    "focus": "science",
    "cwfs": "science",
}


def image_category(image_type: str | None) -> str:
    """bias, dark, flat, science or default, from a header IMGTYPE (``FLAT``, ``OBJECT`` ...)."""
    if not image_type:
        return "default"
    t = str(image_type).strip().lower()
    if t in _CATEGORY_OF:
        return _CATEGORY_OF[t]
    if "flat" in t:
        return "flat"
    return "default"


def has_sources(image_type: str | None) -> bool:
    """Are sources detected on images of this type (science images only)?"""
    return image_category(image_type) == "science"


@dataclass(frozen=True)
class MetricsConfig:
    """The knobs of the definitions above (defaults: eo_pipe's and CAMERA.md's)."""

    noise_box: tuple[int, int] = (20, 20)  # rows, columns
    eper_pixels: int = 3
    eper_min_signal: float = 20.0  # ADU in the last column / row
    shift_window: int = 30
    shift_noise_half_width: int = 15
    shift_threshold: float = 3.0
    shift_skip_rows: int = 30
    bright_sigma: float = 5.0
    hot_contrast: float = 2.5  # science: a hot pixel stands this far above its neighbours' median
    dark_current: float = 5.0  # e-/s: a bright pixel in a dark
    dark_fraction: float = 0.8  # of the amp median: a dark pixel
    column_run: int = 20  # contiguous pixels: a column defect
    column_sigma: float = 10.0
    column_half_window: int = 7
    winsor_sigma: float = 3.0
    tearing_rows: tuple[int, int] = (10, 210)
    tearing_fit_edge: int = 25
    tearing_clip_sigma: float = 5.0
    dead_noise: float = 0.5  # ADU
    ratio_min_signal: float = 100.0  # e-
    max_hot_pixels: int = 1 << 16  # kept per amp for the track test
    cosmic_ray_rows: int = 100  # a thin group of bright pixels shorter than this is a cosmic ray
    sample_row_step: int = 4  # amp median and noise from every 4th data row
    edge_border: int = 7  # pixels along the CCD's outer edges left out of the defect search
    midline_border: int = 2  # rows along the middle of the CCD left out too


AMP_COLUMNS = (
    "bias_level",
    "read_noise_adu",
    "read_noise_e",
    "bias_row_noise",
    "bias_shifts",
    "bias_shift_max",
    "serial_cti",
    "serial_cti_err",
    "parallel_cti",
    "parallel_cti_err",
    "signal_median",
    "signal_noise",
    "signal_ratio",
    "saturated_pixels",
    "bright_pixels",
    "bright_columns",
    "dark_pixels",
    "dark_columns",
    "defect_fraction",
    "divisadero_tearing",
    "dead",
)


def _edges(placements: Sequence[AmpPlacement] | None, n_amp: int) -> np.ndarray:
    """Which ends of each amp's rows (first, last column in readout order) face another amp."""
    edges = np.ones((n_amp, 2), dtype=np.bool_)
    if placements is None:
        return edges
    for a, p in enumerate(placements):
        left, right = p.x_index > 0, p.x_index < 7
        edges[a] = (right, left) if p.flip_x else (left, right)
    return edges


def _borders(
    placements: Sequence[AmpPlacement] | None, n_amp: int, border: int, midline: int
) -> np.ndarray:
    """Per amp (first rows, first columns, last rows, last columns) in readout order to leave
    out of the defect search: ``border`` where that side of the amp is the CCD's outer edge,
    ``midline`` rows along the CCD's middle (E2V's midline rows differ in a flat)."""
    out = np.zeros((n_amp, 4), dtype=np.int64)
    if placements is None:
        return out
    edges = _edges(placements, n_amp)
    for a in range(n_amp):
        out[a, 0] = border  # the first rows read are always at the CCD's top or bottom edge
        out[a, 2] = border if n_amp == 8 else midline  # wavefront sensors: one row of amps
        out[a, 1] = 0 if edges[a, 0] else border
        out[a, 3] = 0 if edges[a, 1] else border
    return out


def amp_metrics(
    raw,
    row_bias: np.ndarray,
    gains: Sequence[float] | np.ndarray,
    saturations: Sequence[float] | np.ndarray,
    image_type: str | None,
    exposure_time: float | None,
    *,
    datasec: tuple[int, int, int, int] | None = None,
    placements: Sequence[AmpPlacement] | None = None,
    isr_config: IsrConfig = IsrConfig(),
    config: MetricsConfig = MetricsConfig(),
    serial: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The per-amp metrics (module docstring) of one CCD, as columns, one row per amp.

    ``raw`` is a ``RawCCD`` (segments, DATASEC and placements from it) or the ``(amp, row, col)``
    int32 segments with ``datasec`` given. ``row_bias`` is ``core.isr.overscan_bias``'s, made
    with ``isr_config`` (whose serial overscan columns the noise and bias level use too);
    ``serial`` is ``core.isr.serial_overscan`` of the segments when the caller has it already.
    """
    if isinstance(raw, np.ndarray):
        segments = raw
        if datasec is None:
            raise ValueError("datasec is needed with bare segments")
    else:
        segments = raw.segments
        datasec = raw.datasec if datasec is None else datasec
        placements = raw.placements if placements is None else placements
    if segments.ndim != 3 or segments.dtype != np.int32:
        raise ValueError(
            f"segments must be int32 (amp, row, col), got {segments.dtype} {segments.shape}"
        )
    n_amp, ny, nx = segments.shape
    x0, x1, y0, y1 = (int(v) for v in datasec)
    row_bias = np.asarray(row_bias)
    if row_bias.shape != (n_amp, ny):
        raise ValueError(f"row_bias is {row_bias.shape}, expected {(n_amp, ny)}")
    gains = np.asarray(gains, dtype=np.float64)
    sat = np.floor(np.asarray(saturations, dtype=np.float64))
    if gains.shape != (n_amp,) or sat.shape != (n_amp,):
        raise ValueError("one gain and one saturation per amp are needed")
    category = image_category(image_type)
    t_exp = float(exposure_time or 0.0)
    c = config
    ox0, ox1 = isr_config.serial_columns(datasec, nx)
    f8 = np.float64

    if serial is None:
        serial = serial_overscan(segments, datasec)
    so0, so1 = ox0 - x1, ox1 - x1  # the columns in ``serial``
    bias = np.empty(n_amp, f8)
    k.bias_level(serial, so0, so1, bias)
    noise = np.empty(n_amp, f8)
    k.read_noise(serial, row_bias, so0, so1, c.noise_box[0], c.noise_box[1], noise)

    shifts = np.empty(n_amp, f8)
    shift_max = np.empty(n_amp, f8)
    row_noise = np.empty(n_amp, f8)
    k.bias_shifts(
        row_bias,
        c.shift_window,
        c.shift_noise_half_width,
        c.shift_threshold,
        c.shift_skip_rows,
        shifts,
        shift_max,
        row_noise,
    )

    s_cti, s_err, p_cti, p_err = (np.full(n_amp, np.nan) for _ in range(4))
    n_over = c.eper_pixels
    if nx - x1 >= n_over and ny - y1 >= n_over:
        k.eper(
            segments, row_bias, x0, x1, y0, y1, n_over, noise, c.eper_min_signal,
            s_cti, s_err, p_cti, p_err,
        )  # fmt: skip

    stats = np.empty((n_amp, 5), f8)
    k.data_sample(segments, row_bias, x0, x1, y0, y1, c.sample_row_step, stats)
    median, q25, q75, dmin, dmax = stats.T
    sigma = (q75 - q25) * k.IQR_TO_SIGMA
    flat_data = dmin == dmax
    for a in np.flatnonzero(flat_data):  # the sample shows no variation: check every pixel
        flat_data[a] = k.data_constant(segments, row_bias, x0, x1, y0, y1, a)

    bright_t = np.maximum(c.bright_sigma * sigma, 1.0)
    if category == "dark":
        bright_t = np.maximum(bright_t, c.dark_current * t_exp / gains)
    dark_t = np.full(n_amp, np.nan)
    if category in ("flat", "science"):
        ok = (1.0 - c.dark_fraction) * median > c.bright_sigma * sigma
        dark_t[ok] = c.dark_fraction * median[ok]
    winsor = np.maximum(c.winsor_sigma * sigma, 0.5)
    found = np.empty((n_amp, 6), f8)
    k.defects(
        segments, row_bias, x0, x1, y0, y1, sat, median, bright_t, dark_t, winsor,
        category == "science", c.hot_contrast, category != "science", c.column_run,
        c.column_sigma,
        c.column_half_window, _borders(placements, n_amp, c.edge_border, c.midline_border),
        c.cosmic_ray_rows, c.max_hot_pixels, found,
    )  # fmt: skip
    n_pix = (x1 - x0) * (y1 - y0)
    n_sat, b_pix, b_col, d_pix, d_col, _ = found.T
    defect = (b_pix + np.nan_to_num(d_pix) + (b_col + np.nan_to_num(d_col)) * (y1 - y0)) / n_pix

    tearing = np.full(n_amp, np.nan)
    if category == "flat":
        k.divisadero(
            segments, row_bias, x0, x1, y0, y1, median, c.tearing_clip_sigma * sigma,
            c.tearing_rows[0], c.tearing_rows[1], c.tearing_fit_edge,
            _edges(placements, n_amp), tearing,
        )  # fmt: skip

    dead = flat_data | ((noise < c.dead_noise) & (sigma < c.dead_noise))
    signal_e = median * gains
    ratio = np.full(n_amp, np.nan)
    live = signal_e[~dead]
    if live.size and np.median(live) >= c.ratio_min_signal:
        ratio = signal_e / np.median(live)

    out = {}
    if placements is not None:
        out["amp"] = np.array([p.name for p in placements])
    out.update(
        bias_level=bias,
        read_noise_adu=noise,
        read_noise_e=noise * gains,
        bias_row_noise=row_noise,
        bias_shifts=shifts,
        bias_shift_max=shift_max,
        serial_cti=s_cti,
        serial_cti_err=s_err,
        parallel_cti=p_cti,
        parallel_cti_err=p_err,
        signal_median=median,
        signal_noise=sigma,
        signal_ratio=ratio,
        saturated_pixels=n_sat,
        bright_pixels=b_pix,
        bright_columns=b_col,
        dark_pixels=d_pix,
        dark_columns=d_col,
        defect_fraction=defect,
        divisadero_tearing=tearing,
        dead=dead.astype(np.int8),
    )
    return out


ADC_MAX = 2**18 - 1


def amp_constants(detector, placements: Sequence[AmpPlacement]) -> dict[str, np.ndarray]:
    """Gain (e-/ADU), saturation (ADU) and expected read noise (e-) of a CCD's amps in segment
    order, from the camera table (``core.camera.Detector``), implausible entries replaced (the
    real tables hold a few: a saturation of 27 ADU, a read noise of 123 e-): gain outside
    0.5-3 by 1.5, saturation outside 7e4 ADU-ADC maximum by the ADC maximum, read noise
    outside 2-25 e- by NaN."""
    amps = [detector.amp(p.name) for p in placements]
    gain = np.array([a.gain for a in amps], dtype=np.float64)
    sat = np.array([a.saturation for a in amps], dtype=np.float64)
    rn = np.array([a.read_noise for a in amps], dtype=np.float64)
    gain[~((gain >= 0.5) & (gain <= 3.0))] = 1.5
    sat[~((sat >= 7.0e4) & (sat <= ADC_MAX))] = ADC_MAX
    rn[~((rn >= 2.0) & (rn <= 25.0))] = np.nan
    return {"gain": gain, "saturation": sat, "read_noise_expected_e": rn}


def ccd_summary(
    amps: dict[str, np.ndarray], n_sources: int = 0, psf: dict | None = None
) -> dict[str, float]:
    """Per-CCD values: the sky (signal) level (median ADU of the live amps' medians), the number
    of detected sources, the PSF FWHM (arcsec) and ellipticity (``core.detect.psf_summary``;
    NaN without)."""
    live = amps["dead"] == 0
    sky = float(np.median(amps["signal_median"][live])) if live.any() else float("nan")
    psf = psf or {}
    return {
        "ccd_sky_level": sky,
        "ccd_sources": float(n_sources),
        "ccd_psf_fwhm": float(psf.get("fwhm", np.nan)) * PIXEL_SCALE_ARCSEC,
        "ccd_ellipticity": float(psf.get("ellipticity", np.nan)),
    }


def level0_to_ccd(row, col, ccd_shape: tuple[int, int], quarter_turns: int):
    """Level-0 array (row, col) to CCD pixel (x, y) for a detector not yet written."""
    return array_to_ccd(np.asarray(row), np.asarray(col), ccd_shape, quarter_turns)


def source_table(
    sources: np.ndarray,
    detector: str,
    origin: tuple[float, float],
    ccd_shape: tuple[int, int],
    quarter_turns: int,
) -> dict[str, np.ndarray]:
    """``core.detect`` sources found on level 0 as catalog columns: ``x, y`` in CCD pixels,
    ``fp_x, fp_y`` in focal-plane pixels (level-0 pixel (row, col) has its centre at
    ``origin + (col + 0.5, row + 0.5)``), the rest as measured (second moments and angle in the
    level-0, i.e. focal-plane, axes). Detection runs on the gain-corrected image, so ``flux``,
    ``flux_err``, ``peak`` and ``background`` are in electrons."""
    col, row = sources["x"], sources["y"]
    x, y = level0_to_ccd(row, col, ccd_shape, quarter_turns)
    out: dict[str, np.ndarray] = {
        "detector": np.full(len(sources), detector),
        "x": np.asarray(x, dtype=np.float64),
        "y": np.asarray(y, dtype=np.float64),
        "fp_x": origin[0] + col + 0.5,
        "fp_y": origin[1] + row + 0.5,
    }
    for name in sources.dtype.names:
        if name not in ("x", "y"):
            out[name] = sources[name]
    return out


def amp_array_boxes(amps: Sequence[dict], ccd_shape: tuple[int, int], quarter_turns: int):
    """Each amp's ``(r0, r1, c0, c1)`` in the turned level-0 array (``core.layout.amp_array_box``)."""
    return [amp_array_box(a, ccd_shape, quarter_turns) for a in amps]


def measure_ccd(raw, product, detector, isr_config: IsrConfig = IsrConfig(), detect: bool = True):
    """The ingest's metrics of one CCD: ``(metrics columns, source columns or None, timings)``.

    ``raw`` is the ``RawCCD``, ``product`` its ``core.exposure.DetectorProduct`` (row bias,
    level 0, placement), ``detector`` the camera's ``Detector``. Sources are detected on level 0
    of science images when ``core.detect`` is available.
    """
    t0 = time.perf_counter()
    const = amp_constants(detector, raw.placements)
    info = raw.info
    table = amp_metrics(
        raw, product.row_bias, const["gain"], const["saturation"], info.image_type,
        info.exposure_time, isr_config=isr_config, serial=product.serial_overscan,
    )  # fmt: skip
    n_amp = len(raw.placements)
    columns: dict[str, np.ndarray] = {
        "detector": np.full(n_amp, detector.name),
        "amp": table.pop("amp"),
        "kind": np.full(n_amp, detector.kind),
        "gain": const["gain"],
        "saturation": const["saturation"],
        "read_noise_expected_e": const["read_noise_expected_e"],
    }
    with np.errstate(divide="ignore", invalid="ignore"):
        columns["read_noise_ratio"] = table["read_noise_e"] / const["read_noise_expected_e"]
    columns.update(table)
    t1 = time.perf_counter()
    sources = None
    n_sources, psf = 0, None
    if detect and has_sources(info.image_type):
        try:
            from core import detect as det_mod
        except ImportError:
            det_mod = None
        if det_mod is not None:
            # in electrons: each amp times its gain, so the sky has no step where two amps of
            # different gains meet (in ADU the step made a row of false, huge, slow-to-measure
            # "sources" along a CCD's midline, wherever the background mesh straddled it)
            gain = const["gain"]
            sat = float(np.min((const["saturation"] - table["bias_level"]) * gain))
            boxes = amp_array_boxes(product.amps, product.ccd_shape, product.quarter_turns)
            level0 = product.levels[0]
            # on level 1 (2 x 2 means): a quarter of the cost of level 0, the catalogue still in
            # level-0 pixels (core.detect.detect_binned says what that costs in accuracy)
            if len(product.levels) > 1:
                binned = product.electrons_level1
                if binned is None:
                    binned = downsample_scaled(level0, boxes, gain)
                found = det_mod.detect_binned(binned, saturation=sat)
            else:
                electrons = level0.astype(np.float32)
                for (r0, r1, c0, c1), g in zip(boxes, gain):
                    electrons[r0:r1, c0:c1] *= g
                found = det_mod.detect_sources(electrons, saturation=sat)
            n_sources, psf = len(found), det_mod.psf_summary(found)
            sources = source_table(
                found, detector.name, product.origin, product.ccd_shape, product.quarter_turns
            )
    for key, value in ccd_summary(table, n_sources, psf).items():
        columns[key] = np.full(n_amp, value)
    timings = {"metrics": t1 - t0, "detect": time.perf_counter() - t1}
    return columns, sources, timings


def concat_tables(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Columns of several tables with the same columns, one after the other."""
    parts = [p for p in parts if p]
    if not parts:
        return {}
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
