"""How the level arrays are chunked, chosen by measurement: local disk and HTTP with latency.

For each candidate chunk size, one simulated CCD is written with our writer, then read three
ways: a whole level 0 from local disk (what the ingest and ``cvt check`` do), and a viewer's
zoomed viewport (1600 x 1000 screen pixels at level 0 and at level 2) over HTTP from a loopback
server that adds a fixed delay to every request, with the concurrency the viewer uses.
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

from core.zarrio import Writer


class _Handler(http.server.SimpleHTTPRequestHandler):
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

        self.httpd = socketserver.ThreadingTCPServer(("127.0.0.1", 0), factory)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> LatencyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _fake_ccd(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(800, 30, (4000, 4072)).astype(np.int32)
    return img


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


def run(sizes=(256, 512, 1024, 2048), delays=(0.0, 0.03), echo=print) -> list[dict]:
    from core.isr import pyramid

    tmp = Path(tempfile.mkdtemp(prefix="cvt-chunks-"))
    rows = []
    try:
        img = _fake_ccd()
        levels = pyramid(img)
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


if __name__ == "__main__":
    run()
