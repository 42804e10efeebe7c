"""Source detection benchmark: ``core.detect`` against SEP on simulated CCD frames with truth.

Both run single-threaded on the same frames, with the same threshold (in sigmas of the
*filtered* noise) and the same Gaussian filter, and are scored against the injected stars:
speed (Mpix/s of CPU time), completeness in bins of true S/N and false detections per Mpix
(detections with no injected star within 1.5 px), on the star frames and on a pure-noise frame.

SEP is run as one would for speed: ``sep.Background`` (same mesh, 3 x 3 filter), ``subfrom`` and
``sep.extract`` with ``filter_type="conv"`` and the equivalent absolute threshold
``thresh * globalrms * sqrt(sum k^2) / sum k`` (its matched mode with an rms map gives the same
threshold on a flat background but runs about five times slower).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from core.detect import FWHM_PER_SIGMA, detect_sources, gaussian_kernel

TRUTH_DTYPE = np.dtype([("x", "f8"), ("y", "f8"), ("flux", "f8"), ("snr", "f8"), ("usable", "?")])
SNR_BINS = (5.0, 7.0, 10.0, 20.0, 50.0, 200.0, np.inf)
MATCH_RADIUS = 1.5


class MissingDependency(RuntimeError):
    """An optional benchmark dependency is not installed."""


def import_sep():
    """SEP, imported only when a benchmark needs it."""
    try:
        import sep
    except ImportError as exc:
        raise MissingDependency(
            "the detection benchmark compares against SEP, which is not installed: "
            "pip install sep  (an optional benchmark dependency, not needed by cvt itself)"
        ) from exc
    return sep


@dataclass
class SimFrame:
    image: np.ndarray  # float32, NaN in the dead patches
    truth: np.ndarray  # TRUTH_DTYPE
    noise: float  # background noise, ADU
    saturation: float


def _moffat_alpha(fwhm: float, beta: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def psf_stamp(dx: float, dy: float, radius: int, fwhm: float, psf: str, beta: float = 3.0):
    """Unit-flux PSF integrated over the pixels of a (2 radius + 1)^2 stamp whose centre pixel
    is at offset (-dx, -dy) from the star: Gaussian exactly (erf), Moffat by 5 x 5 subsampling."""
    edges = np.arange(-radius, radius + 2) - 0.5
    if psf == "gaussian":
        s = fwhm / FWHM_PER_SIGMA * math.sqrt(2.0)
        erf = np.vectorize(math.erf)
        gx = np.diff(erf((edges - dx) / s)) * 0.5
        gy = np.diff(erf((edges - dy) / s)) * 0.5
        return np.outer(gy, gx)
    if psf == "moffat":
        alpha = _moffat_alpha(fwhm, beta)
        sub = (np.arange(5) + 0.5) / 5.0 - 0.5
        c = np.arange(-radius, radius + 1)
        xs = (c[:, None] + sub[None, :]).ravel() - dx
        ys = (c[:, None] + sub[None, :]).ravel() - dy
        r2 = ys[:, None] ** 2 + xs[None, :] ** 2
        prof = (beta - 1.0) / (math.pi * alpha**2) * (1.0 + r2 / alpha**2) ** (-beta)
        n = 2 * radius + 1
        return prof.reshape(n, 5, n, 5).mean(axis=(1, 3))
    raise ValueError(f"unknown psf {psf!r}: gaussian or moffat")


def simulate_frame(
    rng: np.random.Generator,
    shape: tuple[int, int] = (4000, 4072),
    *,
    n_stars: int = 3000,
    fwhm: float = 4.0,
    psf: str = "gaussian",
    sky: float = 1000.0,
    read_noise: float = 5.0,
    gain: float = 1.0,
    saturation: float = 60000.0,
    snr_range: tuple[float, float] = (2.0, 5000.0),
    nan_patches: int = 2,
) -> SimFrame:
    """A sky-limited CCD frame: a gentle gradient, stars of log-uniform S/N at random sub-pixel
    positions (Poisson noise included), clipped at ``saturation``, and NaN patches.

    A star's S/N is its matched-filter S/N against the background noise alone:
    flux * sqrt(sum p^2) / noise for the pixelised unit PSF p.
    """
    ny, nx = shape
    noise = math.sqrt(sky / gain + read_noise**2)
    radius = int(math.ceil(3.0 * fwhm)) + (8 if psf == "moffat" else 2)
    norm = math.sqrt(float((psf_stamp(0.0, 0.0, radius, fwhm, psf) ** 2).sum()))
    x = rng.uniform(0, nx - 1, n_stars)
    y = rng.uniform(0, ny - 1, n_stars)
    snr = np.exp(rng.uniform(math.log(snr_range[0]), math.log(snr_range[1]), n_stars))
    flux = snr * noise / norm
    signal = np.zeros(shape, dtype=np.float32)
    for i in range(n_stars):
        cx = int(round(x[i]))
        cy = int(round(y[i]))
        stamp = flux[i] * psf_stamp(x[i] - cx, y[i] - cy, radius, fwhm, psf)
        x0 = cx - radius
        y0 = cy - radius
        sx = slice(max(x0, 0), min(x0 + 2 * radius + 1, nx))
        sy = slice(max(y0, 0), min(y0 + 2 * radius + 1, ny))
        signal[sy, sx] += stamp[sy.start - y0 : sy.stop - y0, sx.start - x0 : sx.stop - x0]
    yy = np.arange(ny, dtype=np.float32)[:, None]
    xx = np.arange(nx, dtype=np.float32)[None, :]
    background = sky + 0.02 * (xx - nx / 2) + 0.015 * (yy - ny / 2)
    sigma = np.sqrt(noise**2 + signal / gain)
    image = background + signal + sigma * rng.standard_normal(shape, dtype=np.float32)
    np.minimum(image, saturation, out=image)
    usable = (x >= 3) & (x <= nx - 4) & (y >= 3) & (y <= ny - 4)
    for _ in range(nan_patches):
        h = int(rng.integers(20, 80))
        w = int(rng.integers(20, 80))
        py = int(rng.integers(0, ny - h))
        px = int(rng.integers(0, nx - w))
        image[py : py + h, px : px + w] = np.nan
        near = (
            (x > px - 3 - fwhm)
            & (x < px + w + 2 + fwhm)
            & (y > py - 3 - fwhm)
            & (y < py + h + 2 + fwhm)
        )
        usable &= ~near
    truth = np.zeros(n_stars, dtype=TRUTH_DTYPE)
    truth["x"] = x
    truth["y"] = y
    truth["flux"] = flux
    truth["snr"] = snr
    truth["usable"] = usable
    return SimFrame(image.astype(np.float32, copy=False), truth, noise, saturation)


def match(dx, dy, tx, ty, radius: float = MATCH_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """(detection has a truth within radius, truth has a detection within radius)."""
    dx = np.asarray(dx, dtype=np.float64)
    dy = np.asarray(dy, dtype=np.float64)
    det_ok = np.zeros(dx.size, dtype=bool)
    tru_ok = np.zeros(np.size(tx), dtype=bool)
    if dx.size == 0 or np.size(tx) == 0:
        return det_ok, tru_ok
    r2 = radius * radius
    for s in range(0, dx.size, 512):
        d2 = (dx[s : s + 512, None] - tx[None, :]) ** 2 + (dy[s : s + 512, None] - ty[None, :]) ** 2
        close = d2 <= r2
        det_ok[s : s + 512] = close.any(axis=1)
        tru_ok |= close.any(axis=0)
    return det_ok, tru_ok


def run_ours(image, *, thresh, fwhm, mesh, saturation):
    """(x, y, cpu seconds) of ``core.detect.detect_sources``."""
    t = time.process_time()
    src = detect_sources(image, thresh=thresh, mesh=mesh, saturation=saturation, fwhm_guess=fwhm)
    return src["x"], src["y"], time.process_time() - t, src


def run_sep(image, *, thresh, fwhm, mesh, deblend: bool = True):
    """(x, y, cpu seconds) of SEP with the same mesh, filter and threshold (module docstring)."""
    sep = import_sep()
    g = gaussian_kernel(fwhm)
    kernel = np.outer(g, g).astype(np.float32)
    mask = np.isnan(image)
    work = np.ascontiguousarray(image, dtype=np.float32).copy()  # SEP subtracts in place
    t = time.process_time()
    bkg = sep.Background(work, mask=mask, bw=mesh, bh=mesh, fw=3, fh=3)
    bkg.subfrom(work)
    level = thresh * bkg.globalrms * math.sqrt(float((kernel**2).sum())) / float(kernel.sum())
    objects = sep.extract(
        work, level, mask=mask, minarea=5, filter_kernel=kernel, filter_type="conv",
        deblend_cont=0.005 if deblend else 1.0,
    )  # fmt: skip
    return objects["x"], objects["y"], time.process_time() - t, objects


@dataclass
class MethodScore:
    name: str
    seconds: float = 0.0
    pixels: int = 0
    found: np.ndarray = field(default_factory=lambda: np.zeros(len(SNR_BINS) - 1))
    total: np.ndarray = field(default_factory=lambda: np.zeros(len(SNR_BINS) - 1))
    false: int = 0
    false_noise: int = 0
    noise_pixels: int = 0
    pos_err2: list = field(default_factory=list)

    def add(self, det_x, det_y, truth, seconds, pixels):
        self.seconds += seconds
        self.pixels += pixels
        det_ok, tru_ok = match(det_x, det_y, truth["x"], truth["y"])
        self.false += int((~det_ok).sum())
        use = truth["usable"]
        for b in range(len(SNR_BINS) - 1):
            sel = use & (truth["snr"] >= SNR_BINS[b]) & (truth["snr"] < SNR_BINS[b + 1])
            self.total[b] += sel.sum()
            self.found[b] += (sel & tru_ok).sum()
        # position errors of bright usable stars, nearest detection
        bright = np.flatnonzero(use & (truth["snr"] >= 100) & (truth["snr"] < 2000))
        for i in bright:
            d2 = (det_x - truth["x"][i]) ** 2 + (det_y - truth["y"][i]) ** 2
            if d2.size and d2.min() <= MATCH_RADIUS**2:
                self.pos_err2.append(float(d2.min()))

    @property
    def mpix_per_s(self) -> float:
        return self.pixels / 1e6 / self.seconds if self.seconds > 0 else float("nan")


def benchmark(
    frames: int = 2,
    shape: tuple[int, int] = (4000, 4072),
    seed: int = 0,
    *,
    thresh: float = 5.0,
    fwhm: float = 4.0,
    psf: str = "gaussian",
    n_stars: int = 3000,
    mesh: int = 128,
    progress=None,
) -> tuple[MethodScore, MethodScore, MethodScore, dict]:
    """Run ours, SEP and SEP without deblending on ``frames`` simulated frames and one noise
    frame; compile and warm-up are excluded. Returns the three scores and a small info dict."""
    import_sep()
    rng = np.random.default_rng(seed)
    ours = MethodScore("core.detect")
    sep_d = MethodScore("sep")
    sep_n = MethodScore("sep, no deblend")
    warm = simulate_frame(np.random.default_rng(seed + 10_000), (256, 256), n_stars=20)
    run_ours(warm.image, thresh=thresh, fwhm=fwhm, mesh=mesh, saturation=warm.saturation)
    run_sep(warm.image, thresh=thresh, fwhm=fwhm, mesh=mesh)
    fwhms = []
    for f in range(frames):
        frame = simulate_frame(rng, shape, n_stars=n_stars, fwhm=fwhm, psf=psf)
        x, y, sec, src = run_ours(
            frame.image, thresh=thresh, fwhm=fwhm, mesh=mesh, saturation=frame.saturation
        )
        ours.add(x, y, frame.truth, sec, frame.image.size)
        from core.detect import psf_summary

        fwhms.append(psf_summary(src)["fwhm"])
        x, y, sec, _ = run_sep(frame.image, thresh=thresh, fwhm=fwhm, mesh=mesh)
        sep_d.add(x, y, frame.truth, sec, frame.image.size)
        x, y, sec, _ = run_sep(frame.image, thresh=thresh, fwhm=fwhm, mesh=mesh, deblend=False)
        sep_n.add(x, y, frame.truth, sec, frame.image.size)
        if progress:
            progress(f"frame {f + 1}/{frames} done")
    noise = simulate_frame(rng, shape, n_stars=0, nan_patches=0)
    for score, run in (
        (ours, lambda im: run_ours(im, thresh=thresh, fwhm=fwhm, mesh=mesh, saturation=None)),
        (sep_d, lambda im: run_sep(im, thresh=thresh, fwhm=fwhm, mesh=mesh)),
        (sep_n, lambda im: run_sep(im, thresh=thresh, fwhm=fwhm, mesh=mesh, deblend=False)),
    ):
        x, _, _, _ = run(noise.image)
        score.false_noise += len(x)
        score.noise_pixels += noise.image.size
    info = {
        "frames": frames,
        "shape": shape,
        "seed": seed,
        "thresh": thresh,
        "fwhm": fwhm,
        "psf": psf,
        "n_stars": n_stars,
        "psf_fwhm_measured": float(np.nanmedian(fwhms)),
    }
    return ours, sep_d, sep_n, info


def _per_mpix(count: int, pixels: int) -> float:
    return count / (pixels / 1e6) if pixels else float("nan")


def format_table(ours: MethodScore, *others: MethodScore, info: dict | None = None) -> str:
    """The plain-text report."""
    rows = [ours, *others]
    lines = []
    if info:
        ny, nx = info["shape"]
        lines.append(
            f"{info['frames']} frame(s) {ny} x {nx}, {info['n_stars']} {info['psf']} stars of "
            f"FWHM {info['fwhm']:g} px each, thresh {info['thresh']:g} sigma (filtered), "
            f"seed {info['seed']}; CPU time, single thread"
        )
    w = max(len(r.name) for r in rows)
    head = f"{'':{w}}  {'Mpix/s':>7} {'x ours':>6}"
    for b in range(len(SNR_BINS) - 1):
        lo, hi = SNR_BINS[b], SNR_BINS[b + 1]
        head += f" {f'S/N {lo:g}-{hi:g}' if np.isfinite(hi) else f'S/N>{lo:g}':>10}"
    head += f" {'false/Mpix':>10} {'noise/Mpix':>10} {'pos rms':>7}"
    lines.append(head)
    for r in rows:
        ratio = ours.mpix_per_s / r.mpix_per_s if r.mpix_per_s > 0 else float("nan")
        line = f"{r.name:{w}}  {r.mpix_per_s:7.1f} {ratio:6.2f}"
        for b in range(len(SNR_BINS) - 1):
            frac = r.found[b] / r.total[b] if r.total[b] else float("nan")
            line += f" {100 * frac:9.1f}%"
        pos = math.sqrt(np.mean(r.pos_err2) / 2) if r.pos_err2 else float("nan")
        line += (
            f" {_per_mpix(r.false, r.pixels):10.2f} {_per_mpix(r.false_noise, r.noise_pixels):10.2f}"
            f" {pos:7.3f}"
        )
        lines.append(line)
    lines.append(
        f"(completeness per bin of true S/N over {int(ours.total.sum())} usable stars; false: "
        f"detections with no star within {MATCH_RADIUS} px; pos rms: per axis, S/N 100-2000)"
    )
    if info and np.isfinite(info.get("psf_fwhm_measured", np.nan)):
        lines.append(
            f"core.detect psf_summary FWHM: {info['psf_fwhm_measured']:.3f} px "
            f"(injected {info['fwhm']:g})"
        )
    return "\n".join(lines)
