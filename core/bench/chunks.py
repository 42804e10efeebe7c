"""How the level arrays are encoded and chunked, chosen by measurement (``cvt bench store``).

The data are one simulated science CCD (an E2V CCD of the simulator: sky, stars, cosmic rays,
read noise) after the ingest's own ISR: its level 0 (int32) and level 1 (float32).

- Codecs: each blosc setting encodes and decodes the 512 x 512 chunks of both levels on one
  thread (as the ingest's workers and the viewer's tile readers do): time per CCD and size
  against the raw data.
- Chunk sizes: the levels written with our writer at each size, then read three ways: a whole
  level 0 from local disk (what ``cvt check`` does), and a viewer's zoomed viewport (1600 x 1000
  screen pixels at level 0 and at level 2) over HTTP from a loopback server that adds a fixed
  delay to every request, with the concurrency the viewer uses.
"""

from __future__ import annotations

import http.server
import math
import os
import shutil
import socketserver
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.zarrio import BLOSC_SHUFFLES, Writer


class _Handler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections kept alive, as a real server's are
    delay = 0.0
    requests = 0
    bytes_sent = 0

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        time.sleep(type(self).delay)
        type(self).requests += 1
        super().do_GET()


class LatencyServer:
    """A loopback HTTP server of a folder that sleeps ``delay`` seconds before each response."""

    def __init__(self, root: str, delay: float):
        handler = type("H", (_Handler,), {"delay": delay, "requests": 0})
        self.handler = handler

        def factory(*a, **kw):
            return handler(*a, directory=root, **kw)

        server = type("S", (socketserver.ThreadingTCPServer,), {"request_queue_size": 128})
        self.httpd = server(("127.0.0.1", 0), factory)  # 16 connections at once: no SYN dropped
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LatencyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def simulated_levels(seed: int = 0) -> list[np.ndarray]:
    """The pyramid of one simulated science CCD, through the ingest's own ISR."""
    from core.camera import load_camera
    from core.ingest import process_ccd
    from core.rawfile import read_raw
    from core.simulate import simulate_exposure

    with tempfile.TemporaryDirectory(prefix="cvt-store-") as tmp:
        simulate_exposure(tmp, detectors=["R22_S11"], seed=seed, workers=1)
        (path,) = Path(tmp).glob("*R22_S11.fits")
        raw = read_raw(path)
        return process_ccd(raw, load_camera(raw.info.camera)).levels


# (label, cname, clevel, shuffle) for level 0 (int32) and level 1 (float32); the first of each
# is what the store uses (core.zarrio.Codec)
CODECS = {
    "int32": [
        ("lz4 5 byte-shuffle", "lz4", 5, "shuffle"),
        ("lz4 5 bit-shuffle", "lz4", 5, "bitshuffle"),
        ("lz4 1 byte-shuffle", "lz4", 1, "shuffle"),
        ("lz4 5 no shuffle", "lz4", 5, "noshuffle"),
        ("blosclz 5 byte-shuffle", "blosclz", 5, "shuffle"),
        ("zstd 1 byte-shuffle", "zstd", 1, "shuffle"),
        ("zstd 3 bit-shuffle", "zstd", 3, "bitshuffle"),
    ],
    "float32": [
        ("lz4 5 bit-shuffle", "lz4", 5, "bitshuffle"),
        ("lz4 5 byte-shuffle", "lz4", 5, "shuffle"),
        ("zstd 1 bit-shuffle", "zstd", 1, "bitshuffle"),
    ],
}


def codec_table(levels: list[np.ndarray], chunk: int = 512, repeat: int = 3) -> list[dict]:
    """Encode and decode every chunk of level 0 and level 1 with each codec, one thread; the
    best of ``repeat`` runs per CCD."""
    import numcodecs

    numcodecs.blosc.set_nthreads(1)
    rows = []
    for level in (0, 1):
        data = levels[level]
        blocks = [
            np.ascontiguousarray(data[y : y + chunk, x : x + chunk])
            for y in range(0, data.shape[0], chunk)
            for x in range(0, data.shape[1], chunk)
        ]
        for label, cname, clevel, shuffle in CODECS[data.dtype.name]:
            codec = numcodecs.Blosc(cname=cname, clevel=clevel, shuffle=BLOSC_SHUFFLES[shuffle])
            enc = dec = math.inf
            for _ in range(repeat):
                t = time.perf_counter()
                encoded = [codec.encode(b) for b in blocks]
                enc = min(enc, time.perf_counter() - t)
                t = time.perf_counter()
                for e in encoded:
                    codec.decode(e)
                dec = min(dec, time.perf_counter() - t)
            size = sum(len(e) for e in encoded)
            rows.append(
                {
                    "level": level,
                    "codec": label,
                    "encode_ms": enc * 1e3,
                    "decode_ms": dec * 1e3,
                    "ratio": size / data.nbytes,
                    "encode_gbs": data.nbytes / enc / 1e9,
                }
            )
    return rows


def format_codecs(rows: list[dict]) -> str:
    head = f"{'level':>5}  {'codec':<24} {'encode':>9} {'decode':>9} {'size/raw':>9}"
    return "\n".join(
        [head]
        + [
            f"{r['level']:>5}  {r['codec']:<24} {r['encode_ms']:6.1f} ms {r['decode_ms']:6.1f} ms "
            f"{r['ratio']:9.3f}"
            for r in rows
        ]
    )


def _read_viewport(url: str, level: int, shape, chunk: int, view=(1000, 1600), workers: int = 16):
    import fsspec

    fs = fsspec.filesystem("http")
    ny, nx = shape
    h, w = min(view[0], ny), min(view[1], nx)
    y0, x0 = (ny - h) // 2, (nx - w) // 2
    keys = [
        f"{url}/{level}/c/{i}/{j}"
        for i in range(y0 // chunk, math.ceil((y0 + h) / chunk))
        for j in range(x0 // chunk, math.ceil((x0 + w) / chunk))
    ]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: fs.cat_file(k), keys[:workers]))  # warm the connections
        t = time.perf_counter()
        sizes = list(pool.map(lambda k: len(fs.cat_file(k)), keys))
    return time.perf_counter() - t, len(keys), sum(sizes)


def run(sizes=(256, 512, 1024, 2048), delays=(0.0, 0.03), echo=print, levels=None) -> list[dict]:
    """The chunk-size table of ``levels`` (default: ``simulated_levels()``)."""
    tmp = Path(tempfile.mkdtemp(prefix="cvt-chunks-"))
    rows = []
    try:
        levels = simulated_levels() if levels is None else levels
        for chunk in sizes:
            root = tmp / f"c{chunk}"
            w = Writer(str(root))
            t = time.perf_counter()
            for i, lv in enumerate(levels):
                w.array(str(i), lv, (chunk, chunk))
            t_write = time.perf_counter() - t
            import zarr

            t = time.perf_counter()
            zarr.open_array(str(root / "0"), mode="r")[:]
            t_read = time.perf_counter() - t
            n_files = sum(len(f) for _, _, f in os.walk(root))
            row = {"chunk": chunk, "write_s": t_write, "read_level0_s": t_read, "files": n_files}
            for delay in delays:
                with LatencyServer(str(tmp), delay) as srv:
                    for level in (0, 2):
                        s, n, b = _read_viewport(
                            f"{srv.url}/c{chunk}", level, levels[level].shape, chunk
                        )
                        row[f"http{int(delay * 1e3)}ms_L{level}"] = (s, n, b)
            rows.append(row)
        echo(
            f"{'chunk':>6} {'write':>8} {'read L0':>8} {'files':>6} "
            + " ".join(f"{k:>22}" for k in rows[0] if k.startswith("http"))
        )
        for r in rows:
            cells = " ".join(
                f"{v[0] * 1e3:7.0f} ms {v[1]:3d} req {v[2] / 1e6:4.1f}MB"
                for k, v in r.items()
                if k.startswith("http")
            )
            echo(
                f"{r['chunk']:>6} {r['write_s'] * 1e3:6.0f}ms {r['read_level0_s'] * 1e3:6.0f}ms {r['files']:>6} {cells}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


