"""Raw CCD files to exposure stores: group by exposure, one task per CCD, publish atomically.

A bad CCD file never stops an exposure: its failure is recorded in the exposure's attributes
(file and reason) and the other CCDs go on. Memory is bounded: at most ``in_flight_limit`` CCD
tasks are submitted at a time whatever the size of the exposure. An ingest that is interrupted
publishes nothing of the exposure it was writing: the CCDs running finish, then the partial
folder goes (one left by a killed ingest is removed by the next, ``remove_abandoned``).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field
from pathlib import Path

import numcodecs
import numpy as np

from core import assembly, isr, metrics
from core.camera import Camera, load_camera
from core.distributed import interrupts_held, make_executor
from core.exposure import (
    DetectorProduct,
    ExposureError,
    OverviewGrid,
    exposure_attributes,
    exposure_builder,
    load_overview_kernels,
    remove_abandoned,
    write_detector,
    write_overview,
    write_table,
)
from core.paths import is_url, local_path
from core.rawfile import RawCCD, RawFileError, RawInfo, header_text, read_raw, read_raw_header
from core.zarrio import Writer

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fits.gz", ".fit", ".fz", ".fits.fz")


@dataclass
class CcdResult:
    """What a worker sends back: small things only (the pixels are already on disk)."""

    path: str
    detector: str | None = None
    error: str | None = None
    nodes: dict = field(default_factory=dict)
    overview: tuple | None = None  # (bx, by, sums, counts)
    timings: dict = field(default_factory=dict)
    raw_bytes: int = 0
    metrics: dict | None = None  # per-amp metric columns (core.metrics)
    sources: dict | None = None  # detected sources (science images)
    warnings: list[str] = field(default_factory=list)  # the CCD is in, but something failed


@dataclass
class ExposureReport:
    obsid: str
    path: Path | None
    detectors: list[str]
    failures: list[dict]
    seconds: float
    raw_bytes: int = 0
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.path is not None


def detector_placement(raw_shape_fp: tuple[int, int], det, quarter_turns: int):
    """Lower-left focal-plane pixel edge of a CCD image of ``raw_shape_fp`` (rows, cols, already
    turned into the focal-plane frame). A file whose CCD has the camera's size sits exactly on
    the camera geometry; one that differs (an ITL CCD in a test bench slot of an E2V raft) is
    centred on the slot."""
    xmin, ymin, xmax, ymax = det.fp_bounds
    h, w = raw_shape_fp
    if math.isclose(xmax - xmin, w) and math.isclose(ymax - ymin, h):
        return (xmin, ymin)
    cx, cy = 0.5 * (xmin + xmax), 0.5 * (ymin + ymax)
    return (cx - w / 2, cy - h / 2)


def process_ccd(
    raw: RawCCD, camera: Camera, config: isr.IsrConfig = isr.IsrConfig(), electrons: bool = False
) -> DetectorProduct:
    """ISR, assembly into the focal-plane frame, and the pyramid of one CCD (pure compute);
    with ``electrons``, level 1 in electrons too (``DetectorProduct.electrons_level1``, the
    image sources are detected on), from the same pass over level 0."""
    t0 = time.perf_counter()
    det = camera.detector(raw.info.detector)
    seg = raw.segments
    x0, x1, y0, y1 = raw.datasec
    if y0 != 0:
        raise RawFileError(raw.path, f"data section starts at row {y0 + 1}, not 1; not supported")
    serial = isr.serial_overscan(seg, raw.datasec)  # for the ISR, the metrics and the store
    row_bias, col_bias = isr.overscan_bias(seg, raw.datasec, config, serial)
    t1 = time.perf_counter()
    level0 = isr.assemble_to_focal_plane(
        seg, raw.datasec, raw.placements, row_bias, col_bias, det.quarter_turns
    )
    t2 = time.perf_counter()
    ccd_shape = assembly.ccd_shape(raw.datasec, raw.placements)
    w, h = x1 - x0, y1 - y0
    amps = [
        {
            "name": p.name,
            "x0": p.x_index * w,
            "y0": p.row * h,
            "nx": w,
            "ny": h,
            "flip_x": p.flip_x,
            "flip_y": p.flip_y,
        }
        for p in raw.placements
    ]
    electrons_level1 = None
    if electrons:
        gains = metrics.amp_constants(det, raw.placements)["gain"]
        boxes = metrics.amp_array_boxes(amps, ccd_shape, det.quarter_turns)
        levels, electrons_level1 = isr.pyramid_and_scaled(level0, boxes, gains)
    else:
        levels = isr.pyramid(level0)
    t3 = time.perf_counter()
    headers = {
        "primary": header_text(raw.info.primary_header),
        "segments": {p.extname: text for p, text in zip(raw.placements, raw.segment_header_texts)},
    }
    product = DetectorProduct(
        name=det.name,
        id=det.id,
        kind=det.kind,
        vendor=raw.info.vendor,
        physical_type=det.physical_type,
        raw_file=os.path.basename(raw.path),
        origin=detector_placement(level0.shape, det, det.quarter_turns),
        quarter_turns=det.quarter_turns,
        ccd_shape=ccd_shape,
        datasec=raw.datasec,
        raw_shape=(seg.shape[1], seg.shape[2]),
        amps=amps,
        levels=levels,
        row_bias=row_bias,
        col_bias=col_bias,
        prescan=seg[:, :y1, :x0],
        serial_overscan=serial,
        parallel_overscan=seg[:, y1:, :x1],
        headers=headers,
        electrons_level1=electrons_level1,
    )
    product.timings = {"overscan": t1 - t0, "assemble": t2 - t1, "pyramid": t3 - t2}
    return product


def drop_from_page_cache(path: str) -> None:
    """Let the kernel drop a local file's cached pages now (those written back; nothing for a
    URL or where the call does not exist). The ingest reads each raw once: dropping it lets the
    store's writes find free memory instead of reclaiming it under pressure (a full camera is
    15 GB of raws)."""
    if not hasattr(os, "posix_fadvise"):
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except (OSError, TypeError):
        return  # not a local file
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def ingest_ccd_here(*args) -> CcdResult:
    """``_ingest_ccd`` in this process, the pool's task run without a pool: a Ctrl-C meanwhile
    takes effect when the CCD is done, as it does for the CCDs a pool is running. (Its kernels'
    first calls load them through llvmlite's ctypes callbacks, which swallowed an interrupt.)"""
    with interrupts_held():
        return _ingest_ccd(*args)


def _ingest_ccd(
    path: str,
    camera_name: str,
    tmp_root: str,
    grid_origin: tuple[int, int],
    config: isr.IsrConfig,
    measure: bool = True,
) -> CcdResult:
    """One task: read, process, write this CCD's arrays into the partial exposure (with its
    health metrics and sources unless ``measure`` is False)."""
    result = CcdResult(path=path)
    numcodecs.blosc.set_nthreads(1)  # one process per core already
    try:
        t0 = time.perf_counter()
        raw = read_raw(path)
        drop_from_page_cache(path)
        t1 = time.perf_counter()
        result.raw_bytes = raw.segments.nbytes
        camera = load_camera(camera_name)
        electrons = measure and metrics.has_sources(raw.info.image_type)  # for detection
        product = process_ccd(raw, camera, config, electrons=electrons)
        if measure:
            try:  # health metrics and sources are worth having, the pixels more so
                result.metrics, result.sources, t_metrics = metrics.measure_ccd(
                    raw, product, camera.detector(raw.info.detector), config
                )
                product.timings.update(t_metrics)
            except Exception as exc:
                log.exception("%s: metrics/sources failed", path)
                result.warnings.append(
                    f"{path}: metrics and sources failed: {type(exc).__name__}: {exc}"
                )
        t2 = time.perf_counter()
        writer = Writer(tmp_root)
        write_detector(writer, product)
        t3 = time.perf_counter()
        grid = OverviewGrid(grid_origin[0], grid_origin[1], 0, 0)
        result.overview = grid.bin_detector(product.levels, product.origin)
        result.detector = product.name
        result.nodes = writer.nodes
        result.timings = {
            "read": t1 - t0,
            **product.timings,
            "process": t2 - t1,
            "write": t3 - t2,
            "overview": time.perf_counter() - t3,
        }
    except RawFileError as exc:
        result.error = str(exc)
    except Exception as exc:  # whatever one CCD does, the exposure goes on without it
        log.exception("%s: ingest failed", path)
        result.error = f"{path}: {type(exc).__name__}: {exc}"
    return result


def find_raw_files(inputs: Iterable[str | os.PathLike]) -> list[str]:
    """Files named like FITS under the given files and folders (recursively), sorted."""
    out = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(
                str(f)
                for f in sorted(p.rglob("*"))
                if f.is_file() and f.name.lower().endswith(FITS_SUFFIXES)
            )
        else:
            out.append(str(p))
    return out


def group_by_exposure(paths: Iterable[str]) -> tuple[dict[str, list[RawInfo]], list[dict]]:
    """{OBSID: [RawInfo, ...]} from headers alone, and the files that could not be identified."""
    groups: dict[str, list[RawInfo]] = {}
    failures = []
    for path in paths:
        try:
            info = read_raw_header(path)
        except RawFileError as exc:
            failures.append({"file": str(path), "reason": exc.reason})
            continue
        groups.setdefault(info.obsid, []).append(info)
    return groups, failures


def _airmass(primary) -> float | None:
    el = primary.get("ELSTART")
    try:
        el = float(el)
    except (TypeError, ValueError):
        return None
    if not 5.0 < el <= 90.0:
        return None
    # Pickering (2002): good to the horizon, unlike the plain secant
    h = el
    return float(1.0 / math.sin(math.radians(h + 244.0 / (165.0 + 47.0 * h**1.1))))


def exposure_summary(infos: list[RawInfo]) -> dict:
    first = infos[0]
    return {
        "obsid": first.obsid,
        "instrument": first.instrument,
        "camera": first.camera,
        "dayobs": first.dayobs,
        "seqnum": first.seqnum,
        "image_type": first.image_type,
        "exposure_time": first.exposure_time,
        "mjd": first.mjd,
        "filter": first.filter,
        "airmass": _airmass(first.primary_header),
        "date_obs": first.primary_header.get("DATE-OBS"),
    }


class CcdCollector:
    """The results of one exposure's CCD tasks, gathered where they were submitted: node
    metadata, overview bins, metrics and sources, failures, timings. The batch ingest and the
    watcher (``core.watch``) both fill one and finish with ``write_products`` and ``attributes``,
    so the same CCDs make the same exposure whichever wrote it."""

    def __init__(self, camera: Camera, reuse: OverviewGrid | None = None):
        self.camera = camera
        self.grid = OverviewGrid.for_bounds(camera.fp_bounds, reuse)
        self.nodes: dict[str, dict] = {}
        self.detectors: list[str] = []
        self.failures: list[dict] = []
        self.timings: dict[str, float] = {}
        self.raw_bytes = 0
        self.tables: dict[str, list] = {"metrics": [], "sources": []}
        # the tables as ``write_products`` wrote them (for the catalog)
        self.written_tables: dict[str, dict[str, np.ndarray]] = {}

    def add(self, res: CcdResult) -> None:
        if res.error:
            self.failures.append({"file": res.path, "reason": res.error})
            return
        self.detectors.append(res.detector)
        self.failures.extend(
            {"file": res.path, "reason": w, "detector_kept": True} for w in res.warnings
        )
        self.nodes.update(res.nodes)
        self.grid.add(*res.overview)
        for name, table in (("metrics", res.metrics), ("sources", res.sources)):
            if table is not None:
                self.tables[name].append((res.detector, table))
        self.raw_bytes += res.raw_bytes
        for key, value in res.timings.items():
            self.timings[key] = self.timings.get(key, 0.0) + value

    def write_products(self, writer: Writer, overview: bool = True) -> None:
        """The exposure-wide nodes: the overview (unless the caller kept it up to date) and the
        tables (in the camera's order)."""
        t0 = time.perf_counter()
        if overview:
            write_overview(writer, self.grid)
        for name, parts in self.tables.items():
            parts.sort(key=lambda p: self.camera.index(p[0]))
            columns = metrics.concat_tables([p[1] for p in parts])
            if columns:
                write_table(writer, name, columns)
                self.written_tables[name] = columns
        self.nodes.update(writer.nodes)
        self.timings["overview_write"] = time.perf_counter() - t0

    def attributes(
        self,
        summary: dict,
        *,
        complete: bool,
        seconds: float,
        n_expected: int | None = None,
        failed: Iterable[str] = (),
    ) -> dict:
        """The exposure's attributes (``exposure_summary`` of its files, and what came in).

        ``detectors_missing`` names the expected detectors not in the store. Expected are the
        camera's detectors, or, with ``n_expected`` (a test stand, a subset: ``cvt watch
        --expect N``), N detectors of which only those whose files came are known: then it names
        the ``failed`` ones (files that came but could not be ingested). How many are missing
        is ``detectors_expected - len(detectors)`` either way."""
        names = [d.name for d in self.camera.detectors]
        self.detectors.sort(key=self.camera.index)
        present = set(self.detectors)
        expected = set(names) if n_expected is None else set(failed)
        return exposure_attributes(
            **summary,
            complete=complete,
            detectors=list(self.detectors),
            detectors_expected=len(names) if n_expected is None else n_expected,
            detectors_missing=[n for n in names if n in expected and n not in present],
            failures=list(self.failures),
            ingest={
                "seconds": seconds,
                "ccds": len(self.detectors),
                "raw_bytes": self.raw_bytes,
                "cpu_seconds": {k: round(v, 4) for k, v in self.timings.items() if k != "wall"},
            },
        )


def record_in_catalog(
    repo: str | os.PathLike,
    path: str | os.PathLike,
    attrs: dict,
    tables: dict[str, dict[str, np.ndarray]],
) -> str | None:
    """Put the exposure just published at ``path`` in the repository's catalog
    (``core.catalog``) from the attributes it was published with and the tables written
    (``CcdCollector.written_tables``), not read back. A catalog that cannot be written never
    fails an ingest (it can be rebuilt from the stores): the reason is logged and returned."""
    from core import catalog

    try:
        catalog.record_exposure(repo, catalog.ExposureRecord(attrs, tables))
    except (sqlite3.Error, OSError) as exc:
        log.warning("%s: not recorded in the catalog: %s", path, exc)
        return str(exc)
    return None


# CCD tasks kept submitted per worker: the queue the workers draw on while the submitting thread
# does something else. The watcher's thread rewrites the overview for 0.1-0.6 s at a time
# (renames waiting behind the workers' writes); with two tasks a worker (one running, one
# waiting: ~0.3 s of work) its workers ran dry during the longer ones. Only a task's arguments
# wait in the pool: memory stays bounded.
IN_FLIGHT_PER_WORKER = 4


def in_flight_limit(executor) -> int:
    """How many CCD tasks to keep submitted to ``executor`` (None: run here, one at a time).
    Asks a Dask cluster its size (a round trip): once per round of submissions."""
    if executor is None:
        return 1
    return IN_FLIGHT_PER_WORKER * max(1, getattr(executor, "_max_workers", 2))


def _let_running_tasks_end(futures) -> None:
    """Cancel the tasks that have not started and wait for those that run (a CCD, < 1 s)."""
    for f in futures:
        f.cancel()
    wait(futures)


def ingest_exposure(
    obsid: str,
    infos: list[RawInfo],
    repo: str | os.PathLike,
    *,
    replace: bool = False,
    config: isr.IsrConfig = isr.IsrConfig(),
    progress: Callable[[str, int, int], None] | None = None,
    executor=None,
    measure: bool = True,
) -> ExposureReport:
    """Ingest the CCD files of one exposure and publish it (atomically) in ``repo``; without
    ``measure``, no per-amp metrics or sources (the pixels alone, e.g. to time them)."""
    t_start = time.perf_counter()
    camera = load_camera(infos[0].camera)
    builder = exposure_builder(repo, obsid, replace=replace)
    collected = CcdCollector(camera)
    grid = collected.grid
    seen: dict[str, str] = {}
    paths = []
    for info in infos:
        if info.detector in seen:
            collected.failures.append(
                {
                    "file": info.path,
                    "reason": f"duplicate of {seen[info.detector]} for {info.detector}",
                }
            )
        else:
            seen[info.detector] = info.path
            paths.append(info.path)
    args = (camera.name, str(builder.tmp), (grid.x0, grid.y0), config, measure)

    def collect(res: CcdResult) -> None:
        collected.add(res)
        if progress:
            progress(obsid, len(collected.detectors) + len(collected.failures), len(infos))

    in_flight: set = set()
    try:
        if executor is None:
            for path in paths:
                collect(ingest_ccd_here(path, *args))
        else:
            limit = in_flight_limit(executor)
            for path in paths:
                if len(in_flight) == limit:
                    load_overview_kernels()  # the workers have their first CCDs meanwhile
                while len(in_flight) >= limit:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for f in done:
                        collect(f.result())
                with interrupts_held():  # not while a worker is being started
                    in_flight.add(executor.submit(_ingest_ccd, path, *args))
            for f in in_flight:
                collect(f.result())
        if not collected.detectors:
            raise ExposureError(f"{obsid}: no CCD of the exposure could be read")
        collected.write_products(builder.writer)
        collected.timings["wall"] = time.perf_counter() - t_start
        attrs = collected.attributes(
            exposure_summary(infos), complete=True, seconds=collected.timings["wall"]
        )
        path = builder.publish(attrs, collected.nodes)
    except BaseException:
        _let_running_tasks_end(in_flight)  # they write into the partial folder until they end
        builder.abandon()
        raise
    record_in_catalog(repo, path, attrs, collected.written_tables)
    return ExposureReport(
        obsid,
        path,
        collected.detectors,
        collected.failures,
        time.perf_counter() - t_start,
        collected.raw_bytes,
        collected.timings,
    )


def ingest(
    inputs: Iterable[str | os.PathLike],
    repo: str | os.PathLike,
    *,
    replace: bool = False,
    workers: int | None = None,
    config: isr.IsrConfig = isr.IsrConfig(),
    progress: Callable[[str, int, int], None] | None = None,
    scheduler: str | None = None,
    measure: bool = True,
) -> tuple[list[ExposureReport], list[dict]]:
    """Ingest every exposure found in ``inputs`` (files and folders) into ``repo``.

    Returns the per-exposure reports and the files that could not even be identified.
    ``workers`` defaults to the number of cores; 1 runs in this process. ``scheduler``
    (``tcp://host:8786``) runs the CCD tasks on that Dask cluster instead (``core.distributed``).
    """
    files = find_raw_files(inputs)
    if not is_url(repo) and local_path(repo).is_dir():
        for path in remove_abandoned(local_path(repo)):
            log.warning("%s: removed, left unpublished by an ingest that was killed", path)
    # the workers start (and load their kernels) while the headers are read
    executor = make_executor(scheduler, workers, len(files))
    reports = []
    try:
        groups, unreadable = group_by_exposure(files)
        for obsid, infos in sorted(groups.items()):
            try:
                reports.append(
                    ingest_exposure(
                        obsid,
                        infos,
                        repo,
                        replace=replace,
                        config=config,
                        progress=progress,
                        executor=executor,
                        measure=measure,
                    )
                )
            except Exception as exc:  # one exposure's failure never stops the others
                if not isinstance(exc, ExposureError):
                    log.exception("%s: ingest failed", obsid)
                    exc = f"{obsid}: {type(exc).__name__}: {exc}"
                reports.append(
                    ExposureReport(obsid, None, [], [{"file": str(repo), "reason": str(exc)}], 0.0)
                )
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    return reports, unreadable
