"""The exposure format: one zarr v3 group per exposure. The one place that knows the layout.

Writer side (used by ``core.ingest``) and reader side (``open_exposure``, used by the viewer,
``cvt check`` and anyone's scripts) live together so they cannot disagree. The layout is
documented for other implementers in the README ("The exposure format"); in short::

    <OBSID>.zarr/                zarr.json: attributes["cvt"] (exposure), consolidated metadata
      overview/                  OME-NGFF multiscales: the whole focal plane, 1/16 .. 1/128
      detectors/<R22_S11>/       OME-NGFF multiscales: levels 0 .. n of one CCD, focal-plane frame
        isr/row_bias, isr/col_bias, isr/prescan, isr/serial_overscan, isr/parallel_overscan
        header                   uint8: JSON of the raw file's primary and segment headers
      metrics/<column>           per-amp metrics, a columnar table (rows: detector-major amps)
      sources/<column>           detected sources, a columnar catalog
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import fsspec
import numpy as np

from core import __version__, layout
from core.paths import is_url, local_path
from core.zarrio import DEFAULT_CODEC, ZARR_JSON, Writer, array_metadata

if TYPE_CHECKING:
    import zarr

FORMAT_VERSION = 1
LEVEL_CHUNK = 512
OVERVIEW_FACTORS = (16, 32, 64, 128)
PIXEL_UM = 10.0  # focal-plane pixel size in micrometres (NGFF unit)


class ExposureError(Exception):
    """A problem with an exposure store; the message names the store and the problem."""


# ---------------------------------------------------------------------------------------------
# What the ingest makes of one CCD


@dataclass
class DetectorProduct:
    """One CCD after ISR: the pyramid, the overscan kept for display and for exact raw recovery,
    and the facts needed to place it. Produced in a worker, written by ``write_detector``."""

    name: str
    id: int
    kind: str
    vendor: str
    physical_type: str
    raw_file: str
    origin: tuple[float, float]  # focal-plane pixel edge of level-0 pixel (0, 0): (x, y)
    quarter_turns: int
    ccd_shape: tuple[int, int]  # (ny, nx) before rotation
    datasec: tuple[int, int, int, int]  # zero-based half-open x0, x1, y0, y1 of the raw segments
    raw_shape: tuple[int, int]  # (ny, nx) of a raw segment
    amps: list[dict]  # name, x0, y0, nx, ny, flip_x, flip_y in the CCD frame
    levels: list[np.ndarray]
    row_bias: np.ndarray
    col_bias: np.ndarray
    prescan: np.ndarray
    serial_overscan: np.ndarray
    parallel_overscan: np.ndarray
    headers: dict  # {"primary": text, "segments": {EXTNAME: text}}
    timings: dict = field(default_factory=dict)
    # level 1 in electrons (each amp times its gain), made with level 1 for source detection
    # when asked (``core.ingest.process_ccd``); not written
    electrons_level1: np.ndarray | None = None

    @property
    def attrs(self) -> dict:
        return {
            "name": self.name,
            "id": self.id,
            "kind": self.kind,
            "vendor": self.vendor,
            "physical_type": self.physical_type,
            "raw_file": self.raw_file,
            "origin": list(self.origin),
            "quarter_turns": self.quarter_turns,
            "ccd_shape": list(self.ccd_shape),
            "datasec": list(self.datasec),
            "raw_shape": list(self.raw_shape),
            "amps": self.amps,
            "level_shapes": [list(lv.shape) for lv in self.levels],
        }


def ngff_multiscales(
    name: str, origin: tuple[float, float], n_levels: int, base_scale: float = 1.0
) -> dict:
    """OME-NGFF 0.5 ``ome`` attributes placing a pyramid in focal-plane micrometres.

    Level ``l`` pixel ``(row, col)`` covers focal-plane pixels ``origin + s * (col, row)`` to
    ``+ s`` with ``s = base_scale * 2**l``; NGFF maps indices to pixel centres, hence the ``s/2``.
    """
    datasets = []
    for level in range(n_levels):
        s = base_scale * 2**level
        datasets.append(
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [s * PIXEL_UM, s * PIXEL_UM]},
                    {
                        "type": "translation",
                        "translation": [
                            (origin[1] + s / 2) * PIXEL_UM,
                            (origin[0] + s / 2) * PIXEL_UM,
                        ],
                    },
                ],
            }
        )
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [
                    {"name": "y", "type": "space", "unit": "micrometer"},
                    {"name": "x", "type": "space", "unit": "micrometer"},
                ],
                "datasets": datasets,
                "type": "mean",
            }
        ],
    }


def write_detector(writer: Writer, p: DetectorProduct) -> None:
    """Write one detector's group (safe to call from worker processes: disjoint paths)."""
    base = f"detectors/{p.name}"
    writer.group(base, {"ome": ngff_multiscales(p.name, p.origin, len(p.levels)), "cvt": p.attrs})
    for level, data in enumerate(p.levels):
        writer.array(
            f"{base}/{level}", data, (LEVEL_CHUNK, LEVEL_CHUNK), dimension_names=["y", "x"]
        )
    writer.group(f"{base}/isr", {"description": "overscan kept for display and exact raw recovery"})
    writer.array(f"{base}/isr/row_bias", p.row_bias)
    writer.array(f"{base}/isr/col_bias", p.col_bias)
    writer.array(f"{base}/isr/prescan", p.prescan)
    writer.array(f"{base}/isr/serial_overscan", p.serial_overscan)
    writer.array(f"{base}/isr/parallel_overscan", p.parallel_overscan)
    text = json.dumps(p.headers).encode()
    writer.array(f"{base}/header", np.frombuffer(text, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# The overview: the whole focal plane in single arrays


def _zero_mapped(shape: tuple[int, int], dtype) -> np.ndarray:
    """A zeroed array in its own anonymous mapping, faulted in page by page as CCDs land on it.

    numpy asks for huge pages for large arrays; on a machine whose memory is full of page cache
    (raws just read, stores just written) the kernel compacts memory to find them, and LSSTCam's
    256 MB grid then took 0.04-1.0 s of the ingest's parent up front, while its workers start.
    Small pages, zeroed by the kernel as CCDs first touch them, cost ~0.25 s in all, spread over
    the ingest."""
    n = math.prod(shape) * np.dtype(dtype).itemsize
    buf = mmap.mmap(-1, max(n, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(buf, dtype=dtype, count=math.prod(shape)).reshape(shape)


@dataclass
class OverviewGrid:
    """A focal-plane grid of ``OVERVIEW_FACTORS[0]``-pixel bins, anchored on a multiple of the
    coarsest factor so that every overview level lines up with the others."""

    x0: int
    y0: int
    nx: int
    ny: int
    sums: np.ndarray = field(repr=False, default=None)
    counts: np.ndarray = field(repr=False, default=None)

    @classmethod
    def for_bounds(
        cls, bounds: tuple[float, float, float, float], reuse: OverviewGrid | None = None
    ) -> OverviewGrid:
        """The empty grid of a focal plane; ``reuse``: a grid no longer needed whose arrays, if
        they have the size, are emptied and taken (already in memory: 40 ms for LSSTCam's,
        where new ones, ``_zero_mapped``, cost ~0.25 s of page faults as CCDs land)."""
        coarse, fine = OVERVIEW_FACTORS[-1], OVERVIEW_FACTORS[0]
        x0 = math.floor(bounds[0] / coarse) * coarse
        y0 = math.floor(bounds[1] / coarse) * coarse
        nx = math.ceil((math.ceil(bounds[2]) - x0) / coarse) * coarse // fine
        ny = math.ceil((math.ceil(bounds[3]) - y0) / coarse) * coarse // fine
        if reuse is not None and reuse.sums is not None and reuse.sums.shape == (ny, nx):
            sums, counts = reuse.sums, reuse.counts
            reuse.sums = reuse.counts = None  # the old grid cannot write into the new one
            sums.fill(0.0)
            counts.fill(0)
        else:
            sums = _zero_mapped((ny, nx), np.float64)
            counts = _zero_mapped((ny, nx), np.int64)
        return cls(x0, y0, nx, ny, sums, counts)

    def bin_detector(self, levels: list[np.ndarray], origin: tuple[float, float]):
        """(bin x, bin y, sums, counts) of one detector on this grid, from its level 1 (a quarter
        of the pixels of level 0): each bin is the mean of the level-1 pixels whose lower-left
        corner falls in it, placed to within one level-0 pixel."""
        from core.isr import bin_onto_grid

        f = OVERVIEW_FACTORS[0]
        ox = round(origin[0]) - self.x0
        oy = round(origin[1]) - self.y0
        level, scale = (levels[1], 2) if len(levels) > 1 else (levels[0], 1)
        sums, counts = bin_onto_grid(level, (ox % f) // scale, (oy % f) // scale, f // scale)
        return ox // f, oy // f, sums, counts

    def add(self, bx: int, by: int, sums: np.ndarray, counts: np.ndarray) -> None:
        h, w = sums.shape
        self.sums[by : by + h, bx : bx + w] += sums
        self.counts[by : by + h, bx : bx + w] += counts

    def levels(self) -> list[np.ndarray]:
        sums, counts = self.sums, self.counts
        out = []
        for i, _ in enumerate(OVERVIEW_FACTORS):
            if i:
                sums, counts = _coarsen(sums), _coarsen(counts)
            out.append(_bin_means(sums, counts))
        return out


@cache
def load_overview_kernels() -> None:
    """Load the kernels of ``OverviewGrid.levels`` (a process's first numba call costs ~1 s):
    the ingest calls this once its first CCDs are submitted, not after its last. Once.

    Ctrl-C meanwhile takes effect once they are loaded: numba loads through llvmlite's ctypes
    callbacks, which swallow an exception raised in them, and the interrupt was lost."""
    from core.distributed import interrupts_held

    with interrupts_held():
        _bin_means(_coarsen(np.zeros((2, 2))), _coarsen(np.zeros((2, 2), dtype=np.int64)))


def _coarsen(a: np.ndarray) -> np.ndarray:
    """2 x 2 sums, always added in the same order (a block gives what the whole grid gives).
    In numba: numpy's four strided views and their temporaries took 0.9 s of the ingest's end
    for a full camera's 256 MB grid."""
    from core import _isr_kernels as k

    out = np.empty((a.shape[0] // 2, a.shape[1] // 2), dtype=a.dtype)
    k.coarsen2_sum(a, out)
    return out


def _bin_means(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The means of the bins, float32; NaN where no pixel fell."""
    from core import _isr_kernels as k

    out = np.empty(sums.shape, dtype=np.float32)
    k.bin_means(sums, counts, out)
    return out


def _overview_attributes(grid: OverviewGrid) -> dict:
    origin = (float(grid.x0), float(grid.y0))
    shapes = [[grid.ny // 2**i, grid.nx // 2**i] for i in range(len(OVERVIEW_FACTORS))]
    return {
        "ome": ngff_multiscales("focal plane", origin, len(shapes), base_scale=OVERVIEW_FACTORS[0]),
        "cvt": {"origin": list(origin), "factors": list(OVERVIEW_FACTORS), "level_shapes": shapes},
    }


def write_overview(writer: Writer, grid: OverviewGrid) -> None:
    levels = grid.levels()
    writer.group("overview", _overview_attributes(grid))
    for i, data in enumerate(levels):
        writer.array(f"overview/{i}", data, (LEVEL_CHUNK, LEVEL_CHUNK), dimension_names=["y", "x"])


def write_table(
    writer: Writer, name: str, columns: dict[str, np.ndarray], attributes: dict | None = None
) -> None:
    """A columnar table: one 1-D array per column, all the same length. Strings are stored as
    fixed-width UTF-32 arrays would not read everywhere, so they go in as int codes with the
    names in the group's ``categories`` attribute."""
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"table {name}: columns of different lengths {lengths}")
    categories = {}
    writer_cols = {}
    for col, values in columns.items():
        values = np.asarray(values)
        if values.dtype.kind in "US":
            names, codes = np.unique(values, return_inverse=True)
            categories[col] = names.tolist()
            values = codes.astype(np.int32)
        writer_cols[col] = values
    attrs = dict(attributes or {})
    attrs.update(
        {
            "columns": list(columns),
            "categories": categories,
            "n_rows": lengths.pop() if lengths else 0,
        }
    )
    writer.group(name, {"cvt": attrs})
    for col, values in writer_cols.items():
        writer.array(f"{name}/{col}", values, (1 << 20,))


# ---------------------------------------------------------------------------------------------
# Publication


PARTIAL = ".zarr.partial-"  # a hidden exposure being written: .<OBSID>.zarr.partial-<owner>


def partial_path(repo: Path, obsid: str) -> Path:
    """Where an exposure is written before it is published: a hidden folder named after its
    owner (host and process), so that one left by a killed ingest can be told from one that is
    still being written (``remove_abandoned``)."""
    owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return repo / f".{obsid}{PARTIAL}{owner}"


def remove_abandoned(repo: str | os.PathLike) -> list[Path]:
    """Remove the unpublished exposures in ``repo`` whose writer was a process of this host that
    has ended (killed, or the machine restarted): a killed ingest leaves its partial folder,
    ~30 MB a CCD, and nothing else would ever remove it. Partial folders of other hosts, of
    living processes or of unknown owners are left alone. Returns what was removed."""
    repo = Path(repo)
    host = socket.gethostname()
    removed = []
    for path in repo.glob(f".*{PARTIAL}*"):
        owner = path.name.split(PARTIAL, 1)[1]
        owner_host, _, pid = owner.rsplit("-", 1)[0].rpartition("-")
        if owner_host != host or not pid.isdigit() or _process_alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class ExposureBuilder:
    """Writes one exposure into a hidden folder of the repository and publishes it atomically
    by a rename: a reader sees either nothing or the whole, complete exposure."""

    def __init__(self, repo: str | os.PathLike, obsid: str, replace: bool = False):
        self.repo = Path(repo)
        self.obsid = obsid
        self.final = self.repo / f"{obsid}.zarr"
        if self.final.exists() and not replace:
            raise ExposureError(
                f"{self.final}: exposure {obsid} is already in the repository "
                "(exposures are written once; pass --replace to write it again)"
            )
        self.repo.mkdir(parents=True, exist_ok=True)
        self.replace = replace
        self.tmp = partial_path(self.repo, obsid)
        self.writer = Writer(str(self.tmp))
        self.writer.group("", {"cvt": {"obsid": obsid, "complete": False}})
        self.writer.group("detectors")

    def publish(self, attributes: dict, nodes: dict[str, dict]) -> Path:
        """Write the root and rename the exposure into place. Without ``replace`` the rename
        itself is the check (it fails onto an existing store), so an exposure that another
        ingest or a watcher published meanwhile is never overwritten."""
        self.writer.consolidate({"cvt": attributes}, nodes)
        if self.replace and self.final.exists():
            trash = self.repo / f".{self.obsid}.zarr.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(self.final, trash)
            os.rename(self.tmp, self.final)
            shutil.rmtree(trash, ignore_errors=True)
            return self.final
        try:
            os.rename(self.tmp, self.final)
        except OSError as exc:
            if not self.final.exists():
                raise
            raise ExposureError(
                f"{self.final}: exposure {self.obsid} was published by someone else while "
                "this ingest ran (exposures are written once; pass --replace to write it again)"
            ) from exc
        return self.final

    def abandon(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def check_writable(url: str) -> None:
    """Refuse, saying why, a repository URL that exposures cannot be written into: HTTP (a
    server such as ``cvt serve`` serves a repository for reading; there is no listing,
    replacing or removing of files to rely on), a protocol fsspec does not know or lacks the
    package for, or a store that refuses a small object (no such bucket, no credentials, no
    permission). The object is removed again."""
    protocol = url.split("://", 1)[0].lower()
    if protocol in ("http", "https"):
        raise ExposureError(
            f"{url}: cannot write exposures over {protocol}: an HTTP server (such as cvt serve) "
            "serves a repository for reading only. Write into the folder it serves, or into an "
            "object store (s3://bucket/repo, gs://..., az://...)"
        )
    try:
        fs, root = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package missing
        raise ExposureError(f"{url}: cannot write there: {exc}") from exc
    probe = f"{root.rstrip('/')}/.cvt-write-check-{uuid.uuid4().hex[:8]}"
    try:
        fs.pipe_file(probe, b"")
    except Exception as exc:  # fsspec's and the store's own: no bucket, denied, read-only
        hint = (
            "; the store's credentials come from its usual environment (for S3: "
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL ...)"
            if isinstance(exc, PermissionError)
            else ""
        )
        raise ExposureError(
            f"{url}: cannot write there ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    with contextlib.suppress(Exception):
        fs.rm_file(probe)


class ObjectStoreExposureBuilder:
    """``ExposureBuilder`` for a repository in an object store (any writable fsspec URL: S3,
    GCS, Azure...), which has no rename. The exposure is written at its final name from the
    start, as ``cvt watch`` fills one: its root says ``complete: false`` until ``publish``
    replaces it (one PUT, atomic) with the full one, so a reader sees a filling exposure, never
    a half-written one as complete. ``abandon`` removes it. ``replace`` removes the old one
    first: it is gone while the new one is written."""

    def __init__(self, repo: str, obsid: str, replace: bool = False):
        self.fs, root = fsspec.core.url_to_fs(repo)
        self.obsid = obsid
        self.final = f"{repo.rstrip('/')}/{obsid}.zarr"
        self._prefix = f"{root.rstrip('/')}/{obsid}.zarr"
        if self.fs.exists(f"{self._prefix}/{ZARR_JSON}"):
            if not replace:
                raise ExposureError(
                    f"{self.final}: exposure {obsid} is already in the repository "
                    "(exposures are written once; pass --replace to write it again)"
                )
            self.fs.rm(self._prefix, recursive=True)
        self.tmp = self.final  # where the CCD tasks write
        self.writer = Writer(self._prefix, self.fs)
        self.writer.group("detectors")
        self.writer.consolidate({"cvt": {"obsid": obsid, "complete": False}})

    def publish(self, attributes: dict, nodes: dict[str, dict]) -> str:
        self.writer.consolidate({"cvt": attributes}, nodes)
        return self.final

    def abandon(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self._prefix, recursive=True)


def exposure_builder(repo: str | os.PathLike, obsid: str, replace: bool = False):
    """The builder of one exposure in ``repo``: a folder (``ExposureBuilder``, published by a
    rename) or an object store (``ObjectStoreExposureBuilder``)."""
    if is_url(repo):
        return ObjectStoreExposureBuilder(os.fspath(repo), obsid, replace)
    return ExposureBuilder(local_path(repo), obsid, replace)


class _ReplacingWriter(Writer):
    """A Writer whose files replace the old ones atomically (a temporary file, then a rename;
    an object store's put already is): a reader never sees half a file."""

    def _put(self, path: str, data: bytes) -> None:
        if not self._local:
            super()._put(path, data)
            return
        parent, name = path.rsplit("/", 1)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)


class PartialExposure:
    """An exposure that fills in CCD by CCD, in place (``cvt watch``), in a folder or an object
    store (any writable fsspec URL). What a reader sees:

    - the store at its final name ``<OBSID>.zarr`` from the first CCD on, whose root
      ``zarr.json`` always exists and says ``complete: false`` until the end;
    - ``detectors`` (attributes) and the consolidated metadata list only CCDs whose arrays are
      all written: a task writes its CCD's arrays first, ``refresh`` lists them after;
    - ``refresh`` rewrites the overview chunks the new CCDs touched, then the root, each file
      atomically (in a folder a temporary file renamed over the old one; in an object store
      a PUT replaces an object whole), so a chunk or the root is always a whole old or a whole
      new one;
    - the tables (``metrics``, ``sources``) appear with ``publish``, which writes them and the
      whole overview, then the root with ``complete: true``. After that nothing changes.
    """

    def __init__(self, repo: str | os.PathLike, obsid: str):
        self.obsid = obsid
        self.local = not is_url(repo)
        self._coarse: list[tuple[np.ndarray, np.ndarray]] | None = None  # overview sums, counts
        if self.local:
            self.repo: Path | str = local_path(repo)
            self.path: Path | str = self.repo / f"{obsid}.zarr"
            self.writer = _ReplacingWriter(str(self.path))
        else:
            self.repo = os.fspath(repo).rstrip("/")
            self.path = f"{self.repo}/{obsid}.zarr"
            fs, root = fsspec.core.url_to_fs(self.path)
            self.writer = _ReplacingWriter(root, fs)

    @classmethod
    def create(cls, repo: str | os.PathLike, obsid: str, attributes: dict) -> PartialExposure:
        """The empty exposure, its root never missing: in a folder, made in a hidden folder and
        renamed into place; in an object store, its root is one PUT. Refused when the exposure
        is already in the repository (in an object store, which has no create-if-absent, as
        the batch ingest: one writer to a repository)."""
        part = cls(repo, obsid)
        if not part.local:
            if part.writer.fs.exists(part.writer._path(ZARR_JSON)):
                raise ExposureError(f"{part.path}: exposure {obsid} is already in the repository")
            part.writer.group("detectors")
            part.writer.consolidate({"cvt": attributes}, part.writer.nodes)
            return part
        if part.path.exists():  # type: ignore[union-attr]
            raise ExposureError(f"{part.path}: exposure {obsid} is already in the repository")
        part.repo.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        tmp = partial_path(part.repo, obsid)  # type: ignore[arg-type]
        w = Writer(str(tmp))
        w.group("detectors")
        w.consolidate({"cvt": attributes}, w.nodes)
        try:
            os.rename(tmp, part.path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        part.writer.nodes.update(w.nodes)
        return part

    @classmethod
    def resume(cls, repo: str | os.PathLike, obsid: str) -> PartialExposure:
        """A partial exposure already in the repository, to be filled on (its exposure-wide
        nodes known again; the detectors are the caller's to list)."""
        part = cls(repo, obsid)
        nodes = part.root_document()["consolidated_metadata"]["metadata"]
        part.writer.nodes.update({k: v for k, v in nodes.items() if not k.startswith("detectors/")})
        return part

    def root_document(self) -> dict:
        """The root ``zarr.json`` as it is now (attributes and consolidated metadata);
        ``FileNotFoundError`` when the exposure is not in the repository."""
        return json.loads(self.writer.fs.cat_file(self.writer._path(ZARR_JSON)))

    def open_group(self, name: str) -> zarr.Group:
        """A group of the exposure as it is now, read with zarr-python (folder or URL)."""
        import zarr

        return zarr.open_group(f"{self.path}/{name}", mode="r")

    def update_overview(self, grid: OverviewGrid, boxes) -> None:
        """Rewrite the chunks of every overview level under any of ``boxes`` (row0, row1, col0,
        col1 in bins of the finest level), each once; the first call writes the group and the
        arrays' metadata (a chunk never written reads as NaN: no detector there yet)."""
        w = self.writer
        if "overview" not in w.nodes:
            w.group("overview", _overview_attributes(grid))
            for i in range(len(OVERVIEW_FACTORS)):
                shape = (grid.ny // 2**i, grid.nx // 2**i)
                chunks = tuple(min(LEVEL_CHUNK, s) for s in shape)
                doc = array_metadata(shape, chunks, np.float32, None, ["y", "x"], None)
                w._put(w._path(f"overview/{i}", ZARR_JSON), json.dumps(doc).encode())
                w.nodes[f"overview/{i}"] = doc
        levels = self._coarse_levels(grid, boxes)
        enc = DEFAULT_CODEC.encoder(np.float32)
        for i, (sums, counts) in enumerate(levels):
            ny, nx = w.nodes[f"overview/{i}"]["shape"]
            ch, cw = w.nodes[f"overview/{i}"]["chunk_grid"]["configuration"]["chunk_shape"]
            s = 2**i
            touched = set()
            for r0, r1, c0, c1 in boxes:
                for cy in range(r0 // s // ch, (min(-(-r1 // s), ny) - 1) // ch + 1):
                    for cx in range(c0 // s // cw, (min(-(-c1 // s), nx) - 1) // cw + 1):
                        touched.add((cy, cx))
            for cy, cx in sorted(touched):
                y0, x0 = cy * ch, cx * cw
                block = np.full((ch, cw), np.nan, dtype=np.float32)
                y1, x1 = min(y0 + ch, ny), min(x0 + cw, nx)
                data = _bin_means(sums[y0:y1, x0:x1], counts[y0:y1, x0:x1])
                block[: data.shape[0], : data.shape[1]] = data
                w._put(w._path(f"overview/{i}", f"c/{cy}/{cx}"), enc.encode(block))

    def _coarse_levels(self, grid: OverviewGrid, boxes) -> list[tuple[np.ndarray, np.ndarray]]:
        """Sums and counts of every overview level, kept up to date under ``boxes`` only (the
        same 2 x 2 sums as ``OverviewGrid.levels``, so the same means to the bit).

        The coarse levels start empty (zeros, as the grid outside its CCDs): every CCD added to
        the grid is under a box, and a resumed exposure's first box is the whole grid. Coarsening
        the whole grid at the first refresh instead cost the watcher ~0.4 s an exposure."""
        if self._coarse is None:
            self._coarse = [(grid.sums, grid.counts)]
            for _ in OVERVIEW_FACTORS[1:]:
                s, c = self._coarse[-1]
                shape = (s.shape[0] // 2, s.shape[1] // 2)
                self._coarse.append((np.zeros(shape, s.dtype), np.zeros(shape, c.dtype)))
        for r0, r1, c0, c1 in boxes:
            for i in range(1, len(self._coarse)):
                r0, r1, c0, c1 = r0 // 2, -(-r1 // 2), c0 // 2, -(-c1 // 2)
                fine_s, fine_c = self._coarse[i - 1]
                sums, counts = self._coarse[i]
                sl = (slice(r0, r1), slice(c0, c1))
                fine = (slice(2 * r0, 2 * r1), slice(2 * c0, 2 * c1))
                sums[sl] = _coarsen(fine_s[fine])
                counts[sl] = _coarsen(fine_c[fine])
        return self._coarse

    def refresh(self, attributes: dict, nodes: dict[str, dict]) -> None:
        """The root again: attributes (``complete: false``) and the metadata of every node
        written so far (``nodes``: the detectors' and this writer's)."""
        self.writer.consolidate({"cvt": attributes}, {**nodes, **self.writer.nodes})

    def publish(self, attributes: dict, nodes: dict[str, dict]) -> Path | str:
        """The last root (``attributes`` say ``complete: true``); the tables and the overview
        must be written with ``self.writer`` before."""
        self.refresh(attributes, nodes)
        return self.path


def exposure_attributes(**kw) -> dict:
    """The exposure's group attributes, with the format and software versions stamped in."""
    out = {
        "format": "cvt-exposure",
        "format_version": FORMAT_VERSION,
        "software_version": __version__,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.update(kw)
    return out


# ---------------------------------------------------------------------------------------------
# Reading


def _store_for(url: str | os.PathLike, storage_options: dict | None = None):
    """A local folder, or any fsspec URL through ``core.remote`` (retries, checked responses,
    the disk chunk cache)."""
    url = os.fspath(url)
    if is_url(url):
        from core import remote

        return remote.open_store(url, storage_options)
    import zarr  # here: the ingest and its workers write without zarr-python (0.2 s to import)

    return zarr.storage.LocalStore(local_path(url), read_only=True)


class DetectorImage:
    """One detector of an exposure: pyramid levels (zarr arrays), placement, ISR arrays."""

    def __init__(self, group: zarr.Group):
        self.group = group
        a = group.attrs["cvt"]
        self.attrs = a
        self.name: str = a["name"]
        self.id: int = a["id"]
        self.origin: tuple[float, float] = tuple(a["origin"])
        self.quarter_turns: int = a["quarter_turns"]
        self.ccd_shape: tuple[int, int] = tuple(a["ccd_shape"])
        self.level_shapes: list[tuple[int, int]] = [tuple(s) for s in a["level_shapes"]]
        self.amps: list[dict] = a["amps"]

    def __repr__(self) -> str:
        return f"DetectorImage({self.name}, levels={len(self.level_shapes)})"

    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    def level(self, i: int) -> zarr.Array:
        return self.group[str(i)]

    def ccd_to_array(self, x, y):
        """CCD pixel (x, y) to level-0 array (row, col), through the quarter turns."""
        return layout.ccd_to_array(np.asarray(x), np.asarray(y), self.ccd_shape, self.quarter_turns)

    def array_to_ccd(self, row, col):
        """Level-0 array (row, col) to CCD pixel (x, y)."""
        return layout.array_to_ccd(
            np.asarray(row), np.asarray(col), self.ccd_shape, self.quarter_turns
        )

    def locate_amp(self, x: int, y: int) -> tuple[int, int, int] | None:
        """(amp index, u, v) of CCD pixel (x, y); u, v count in readout order."""
        for i, a in enumerate(self.amps):
            if a["x0"] <= x < a["x0"] + a["nx"] and a["y0"] <= y < a["y0"] + a["ny"]:
                u = x - a["x0"]
                v = y - a["y0"]
                return (
                    i,
                    (a["nx"] - 1 - u if a["flip_x"] else u),
                    (a["ny"] - 1 - v if a["flip_y"] else v),
                )
        return None

    @cached_property
    def row_bias(self) -> np.ndarray:
        return self.group["isr/row_bias"][:]

    @cached_property
    def col_bias(self) -> np.ndarray:
        return self.group["isr/col_bias"][:]

    def pixel(self, row: int, col: int) -> dict:
        """Exact values of one level-0 pixel: corrected (as stored) and raw ADU. Where the
        store lacks the pixel's chunk, ``corrected`` and ``raw`` are None and ``missing`` says
        so: zarr would give the fill value, a value the CCD never had."""
        from core.lazyzarr import read_chunk

        arr = self.level(0)
        ny, nx = arr.shape
        if not (0 <= row < ny and 0 <= col < nx):
            raise IndexError(f"pixel ({row}, {col}) is outside {self.name}'s {ny} x {nx}")
        cy, cx = arr.chunks
        chunk = read_chunk(arr, (row // cy, col // cx))
        x, y = self.array_to_ccd(row, col)
        loc = self.locate_amp(int(x), int(y))
        out = {"corrected": None, "ccd_x": int(x), "ccd_y": int(y), "raw": None, "amp": None}
        out["missing"] = "missing chunk" if chunk is None else None
        if chunk is not None:
            out["corrected"] = int(chunk[row % cy, col % cx])
        if loc is not None:
            a, u, v = loc
            out.update(amp=self.amps[a]["name"], amp_u=int(u), amp_v=int(v))
            if chunk is not None:
                y0 = self.attrs["datasec"][2]
                bias = int(np.rint(self.row_bias[a, y0 + v])) + int(np.rint(self.col_bias[a, u]))
                out["raw"] = out["corrected"] + bias
        return out

    def bias_image(self) -> np.ndarray:
        """The rounded biases that level 0 had removed, in the level-0 frame: raw = level0 + this."""
        ny, nx = self.ccd_shape
        x0, x1, y0, y1 = self.attrs["datasec"]
        ccd = np.zeros((ny, nx), dtype=np.int32)
        for i, a in enumerate(self.amps):
            block = (
                np.rint(self.row_bias[i, y0:y1])[:, None] + np.rint(self.col_bias[i])[None, :]
            ).astype(np.int32)
            if a["flip_x"]:
                block = block[:, ::-1]
            if a["flip_y"]:
                block = block[::-1, :]
            ccd[a["y0"] : a["y0"] + a["ny"], a["x0"] : a["x0"] + a["nx"]] = block
        return np.rot90(ccd, self.quarter_turns, axes=(1, 0))

    def raw_segments(self) -> np.ndarray:
        """The raw file's segments, rebuilt exactly from level 0, the biases and the overscan."""
        x0, x1, y0, y1 = self.attrs["datasec"]
        ny_raw, nx_raw = self.attrs["raw_shape"]
        level0 = self.level(0)[:]
        # back to the unrotated CCD frame
        ccd = np.rot90(level0, -self.quarter_turns, axes=(1, 0))
        n = len(self.amps)
        out = np.empty((n, ny_raw, nx_raw), dtype=np.int32)
        out[:, :y1, :x0] = self.group["isr/prescan"][:]
        out[:, :, x1:] = self.group["isr/serial_overscan"][:]
        out[:, y1:, :x1] = self.group["isr/parallel_overscan"][:]
        for i, a in enumerate(self.amps):
            data = ccd[a["y0"] : a["y0"] + a["ny"], a["x0"] : a["x0"] + a["nx"]]
            if a["flip_x"]:
                data = data[:, ::-1]
            if a["flip_y"]:
                data = data[::-1, :]
            bias = np.rint(self.row_bias[i, y0:y1])[:, None] + np.rint(self.col_bias[i])[None, :]
            out[i, y0:y1, x0:x1] = data + bias.astype(np.int32)
        return out

    def headers(self) -> dict:
        return json.loads(bytes(self.group["header"][:]).decode())


class Exposure:
    """An exposure store opened for reading, from a path or any fsspec URL (one request)."""

    def __init__(self, url: str | os.PathLike, storage_options: dict | None = None):
        self.url = os.fspath(url)
        try:
            from core import lazyzarr

            self.root = lazyzarr.open_group(_store_for(self.url, storage_options))
            attrs = self.root.attrs.asdict()
        except Exception as exc:  # zarr raises several types for a missing or broken store
            raise ExposureError(f"{self.url}: not a readable exposure store ({exc})") from exc
        if "cvt" not in attrs:
            raise ExposureError(f"{self.url}: a zarr group, but not a CVT exposure")
        self.attrs: dict = attrs["cvt"]
        if self.attrs.get("format_version", 0) > FORMAT_VERSION:
            raise ExposureError(
                f"{self.url}: written by a newer CVT (format "
                f"{self.attrs['format_version']} > {FORMAT_VERSION})"
            )

    def __repr__(self) -> str:
        return f"Exposure({self.obsid}, {len(self.detector_names)} detectors)"

    @property
    def obsid(self) -> str:
        return self.attrs["obsid"]

    @property
    def complete(self) -> bool:
        return bool(self.attrs.get("complete"))

    @property
    def detector_names(self) -> list[str]:
        return list(self.attrs.get("detectors", []))

    def detector(self, name: str) -> DetectorImage:
        if name not in self.detector_names:
            raise KeyError(f"{self.obsid} has no detector {name!r}")
        return DetectorImage(self.root[f"detectors/{name}"])

    def overview_level(self, i: int) -> zarr.Array:
        return self.root[f"overview/{i}"]

    @property
    def overview_attrs(self) -> dict:
        return self.root["overview"].attrs["cvt"]

    def table(self, name: str) -> dict[str, np.ndarray]:
        """A columnar table (``metrics`` or ``sources``) as a dict of numpy columns; category
        columns come back as string arrays."""
        if name not in self.root:
            return {}
        g = self.root[name]
        attrs = g.attrs["cvt"]
        out = {}
        for col in attrs["columns"]:
            try:
                values = g[col][:]
            except Exception as exc:  # say which column: zarr's own message does not
                raise ExposureError(
                    f"{name}/{col} cannot be read ({type(exc).__name__}: {exc})"
                ) from exc
            if col in attrs["categories"]:
                values = (
                    np.asarray(attrs["categories"][col], dtype=object)[values]
                    if len(values)
                    else values.astype(object)
                )
            out[col] = values
        return out


def open_exposure(url: str | os.PathLike, storage_options: dict | None = None) -> Exposure:
    """An exposure from a folder or any fsspec URL (``http://host:port/OBSID.zarr``,
    ``s3://bucket/OBSID.zarr``); ``storage_options`` go to fsspec (S3 ``endpoint_url``, ``key``,
    ``secret``; HTTP ``token`` for ``cvt serve --token-file``)."""
    return Exposure(url, storage_options)


def list_exposures(repo: str | os.PathLike, storage_options: dict | None = None) -> list[str]:
    """The published exposures of a repository (folder or fsspec URL), sorted by name."""
    if is_url(repo):
        from core import remote

        return remote.list_exposures(os.fspath(repo), storage_options)
    fs, root = fsspec.core.url_to_fs(os.fspath(repo))
    names = []
    for entry in fs.ls(root, detail=False):
        base = entry.rstrip("/").rsplit("/", 1)[-1]
        if base.endswith(".zarr") and not base.startswith("."):
            names.append(base[: -len(".zarr")])
    return sorted(names)
