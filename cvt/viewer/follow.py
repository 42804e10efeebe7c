"""Follow a repository: switch to each newly published exposure as it arrives.

``Follower`` watches one repository (a folder or a ``cvt serve`` URL) and tells the window
which exposure to open. Nothing here runs on the GUI thread but decisions:

- **local folder**: a single-shot timer on the GUI thread hands a poll to the runner's
  ``follow`` pool every ``interval`` seconds: the folder's listing (the names of the published
  exposures, filling ones included: hidden ``.partial`` folders are not published) and the
  signature (inode, mtime, size) of the shown exposure's root ``zarr.json`` while it is not
  complete; ``cvt watch`` replaces that file atomically after each batch of CCDs.
- **server URL**: a thread of the same pool holds the server's event stream (``/api/events``,
  server-sent events) open and reports each new exposure; each (re)connection lists the
  repository once, so that nothing published while disconnected is missed. A server without
  the stream (404) is polled instead (``/api/latest``). Failures back off exponentially (up to
  ``backoff_max``). The shown exposure, while filling, is probed with ``HEAD zarr.json`` (its
  ETag) by the timer.

Every request has a timeout and is made on a worker; ``stop`` shuts the open socket, so a dead
or stalled server never holds the window (nor its closing) for longer than one short request.
Paused, the follower keeps watching and counts what arrived; un-paused, it jumps to the newest.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
from urllib.parse import urlsplit

from PySide6.QtCore import QObject, QTimer, Signal

from cvt.viewer import qtfix  # noqa: F401  (before any signal is emitted)

REQUEST_TIMEOUT = 5.0  # seconds for one listing or probe
STREAM_TIMEOUT = 40.0  # the server sends a keep-alive every 15 s: silence this long is a dead link


class Follower(QObject):
    """Which exposure to show while following a repository (GUI-thread state, worker I/O)."""

    switch = Signal(str)  # open this exposure (URL or path): the newest arrival
    refresh = Signal(str)  # the shown exposure changed in place (it is filling): open it again
    changed = Signal()  # following, paused, pending or link state changed (for the UI)
    _event = Signal(object)  # from the stream thread

    def __init__(
        self,
        runner,
        parent: QObject | None = None,
        interval: float = 0.5,
        backoff_max: float = 10.0,
    ):
        super().__init__(parent)
        self.runner = runner
        self.interval = interval
        self.backoff_max = backoff_max
        self.repo: str | None = None
        self.active = False
        self.paused = False
        self.known: set[str] | None = None  # names published, as last seen
        self.newest: str | None = None  # the most recent arrival (what un-pausing opens)
        self.pending: list[str] = []  # arrivals while paused (newer than the shown one)
        self.current: str | None = None  # name of the exposure shown
        self.current_complete = True
        self._signature = None  # of the shown exposure's root document, while it fills
        self.failures = 0
        self.link = ""  # what the follower knows of its source, for the status bar
        self.switched_at: float | None = None  # perf_counter of the last switch (tests)
        self._busy = False
        self._link = Link()
        self._stream_running = False
        self._timer = QTimer(self, singleShot=True)
        self._timer.timeout.connect(self._poll)
        self._event.connect(self._on_event)

    # ------------------------------------------------------------------ control (GUI thread)

    @property
    def remote(self) -> bool:
        return self.repo is not None and _is_http(self.repo)

    def start(self, repo: str) -> None:
        """Follow ``repo`` (a folder or ``http(s)://`` URL of ``cvt serve``)."""
        self.stop()
        self.repo = repo.rstrip("/") if _is_http(repo) else os.fspath(repo)
        self.active, self.paused = True, False
        self.known, self.newest, self.pending = None, None, []
        self.failures, self.link = 0, "starting"
        self._link = Link()
        if self.remote:
            self._stream_running = True
            self.runner.submit(
                "follow",
                _stream_loop,
                self.repo,
                self._link,
                self._event.emit,
                self.interval,
                self.backoff_max,
                on_done=self._stream_ended,
                on_error=self._stream_ended,
            )
        self._timer.start(0)
        self.changed.emit()

    def stop(self) -> None:
        """Stop following; a request in flight is cut (its socket shut)."""
        self.active = False
        self._timer.stop()
        self._link.cut()
        self.changed.emit()

    def set_paused(self, paused: bool) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self.pending = []
            if self.newest and self.newest != self.current:
                self._switch(self.newest)
        self.changed.emit()

    def set_current(self, name: str, complete: bool) -> None:
        """The window shows exposure ``name`` now (after every open)."""
        if name != self.current:
            self._signature = None
        self.current, self.current_complete = name, complete
        if self.known is not None:
            self.known.add(name)
        if self.pending and name in self.pending:
            self.pending = self.pending[self.pending.index(name) + 1 :]
            self.changed.emit()

    def url_of(self, name: str) -> str:
        return f"{self.repo.rstrip('/')}/{name}.zarr"

    # ------------------------------------------------------------------ arrivals

    def _arrived(self, names: list[str], full: bool) -> None:
        """A listing (``full``) or announced names: the new ones are arrivals."""
        if not self.active:
            return
        if self.known is None:
            # the first look: what is there already is not news; show the newest of it
            self.known = set(names)
            if names and (self.current is None or not self.paused):
                newest = sorted(names)[-1]
                self.newest = newest
                if newest != self.current:
                    self._switch(newest)
            return
        new = sorted(set(names) - self.known)
        self.known |= set(names)
        if not new:
            return
        self.newest = new[-1]
        if self.paused:
            self.pending.extend(n for n in new if n not in self.pending and n != self.current)
            self.changed.emit()
            return
        self._switch(self.newest)

    def _switch(self, name: str) -> None:
        self.switched_at = time.perf_counter()
        self.switch.emit(self.url_of(name))

    # ------------------------------------------------------------------ polls (timer)

    def _poll(self) -> None:
        if not self.active or self._busy:
            return
        probe = None
        if self.current and not self.current_complete and not self.paused:
            probe = self.current
        if self.remote and probe is None:
            self._timer.start(int(self.interval * 1000))  # the stream brings the news
            return
        self._busy = True
        self.runner.submit(
            "follow",
            _poll_remote if self.remote else _poll_local,
            self.repo,
            probe,
            self._link,
            on_done=lambda res, repo=self.repo: self._on_polled(repo, res),
            on_error=lambda exc, repo=self.repo: self._on_poll_error(repo, exc),
        )

    def _on_polled(self, repo: str, result) -> None:
        self._busy = False
        if not self.active or repo != self.repo:
            return
        names, probed, signature = result
        if not self.remote and (self.failures or self.link != "watching the folder"):
            self.failures, self.link = 0, "watching the folder"
            self.changed.emit()
        if names is not None:
            self._arrived(names, full=True)
        if probed is not None and probed == self.current and signature is not None:
            if self._signature is not None and signature != self._signature and not self.paused:
                self.refresh.emit(self.url_of(probed))
            self._signature = signature
        self._timer.start(int(self.interval * 1000))

    def _on_poll_error(self, repo: str, exc: BaseException) -> None:
        self._busy = False
        if not self.active or repo != self.repo:
            return
        self.failures += 1
        what = "probe the exposure" if self.remote else "list"
        self.link = f"cannot {what} ({exc}); retrying"
        self.changed.emit()
        self._timer.start(int(_backoff(self.interval, self.backoff_max, self.failures) * 1000))

    # ------------------------------------------------------------------ the stream thread

    def _on_event(self, item) -> None:
        kind, payload = item
        if not self.active:
            return
        if kind == "names":
            self._arrived(payload, full=True)
        elif kind == "arrived":
            self._arrived([payload], full=False)
        elif kind == "link":
            ok, text = payload
            self.failures = 0 if ok else self.failures + 1
            self.link = text
            self.changed.emit()

    def _stream_ended(self, _result=None) -> None:
        self._stream_running = False

    @property
    def idle(self) -> bool:
        """No worker of the follower is running (the window may close)."""
        return not self._busy and not self._stream_running


# ---------------------------------------------------------------------- workers (no Qt)


def _is_http(url: str) -> bool:
    return os.fspath(url).lower().startswith(("http://", "https://"))


def _backoff(interval: float, most: float, failures: int) -> float:
    return min(most, interval * 2 ** max(0, failures))


class Link:
    """What a worker of one follow session needs to stop at once: the stop flag and the
    sockets open now (``cut`` shuts them: a blocked read returns)."""

    def __init__(self):
        self.stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def register(self, sock: socket.socket) -> None:
        with self._lock:
            if self.stop.is_set():
                raise OSError("stopped")
            self._sockets.add(sock)

    def unregister(self, sock) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def cut(self) -> None:
        self.stop.set()
        with self._lock:
            for s in list(self._sockets):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def _poll_local(repo: str, probe: str | None, link: Link | None = None):
    """Worker: the published exposures of a folder, and the root signature of ``probe``."""
    from core.exposure import list_exposures

    names = list_exposures(repo)
    signature = None
    if probe is not None:
        try:
            st = os.stat(os.path.join(repo, f"{probe}.zarr", "zarr.json"))
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            signature = None
    return names, probe, signature


def _poll_remote(repo: str, probe: str | None, link: Link | None = None):
    """Worker: the ETag of ``probe``'s root document (it changes as the exposure fills)."""
    status, headers, _ = http_request(f"{repo}/{probe}.zarr/zarr.json", "HEAD", link=link)
    if status != 200:
        raise OSError(f"HEAD {probe}.zarr/zarr.json: HTTP {status}")
    return None, probe, headers.get("ETag") or headers.get("Last-Modified")


def _headers() -> dict:
    token = os.environ.get("CVT_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _connection(url: str, timeout: float):
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return conn, target


def http_request(
    url: str,
    method: str = "GET",
    timeout: float = REQUEST_TIMEOUT,
    link: Link | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One request, one attempt, a timeout: (status, headers, body). The caller retries."""
    conn, target = _connection(url, timeout)
    try:
        conn.connect()
        if link is not None:
            link.register(conn.sock)
        conn.request(method, target, headers={"Accept-Encoding": "identity", **_headers()})
        r = conn.getresponse()
        body = r.read()
        return r.status, r.headers, body
    finally:
        if link is not None:
            link.unregister(conn.sock)
        conn.close()


def remote_names(repo: str, link: Link | None = None) -> list[str]:
    """The published exposures of a ``cvt serve`` repository (``/api/exposures``)."""
    status, _, body = http_request(f"{repo}/api/exposures", link=link)
    if status != 200:
        raise OSError(f"{repo}/api/exposures: HTTP {status}")
    return sorted(e["obsid"] for e in json.loads(body)["exposures"])


def sse_events(lines):
    """(event, id, data) of each complete server-sent event in an iterator of byte lines."""
    event, ident, data = "message", None, []
    for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data or ident is not None:
                yield event, ident, "\n".join(data)
            event, ident, data = "message", None, []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            event = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            ident = value


def _stream_loop(repo: str, link: Link, emit, interval: float, backoff_max: float) -> None:
    """Worker: hold the server's event stream open; list on each connection; poll
    ``/api/latest`` when the server has no stream; back off on failures until ``stop``."""
    stop = link.stop
    failures = 0
    polling = False
    while not stop.is_set():
        try:
            if polling:
                status, _, body = http_request(f"{repo}/api/latest", link=link)
                if status == 200:
                    emit(("arrived", json.loads(body)["obsid"]))
                elif status != 404:  # 404: no exposure yet
                    raise OSError(f"{repo}/api/latest: HTTP {status}")
                if failures:
                    emit(("link", (True, "polling the server (no event stream)")))
                failures = 0
                stop.wait(interval)
                continue
            emit(("names", remote_names(repo, link)))
            conn, target = _connection(f"{repo}/api/events", REQUEST_TIMEOUT)
            try:
                conn.connect()
                link.register(conn.sock)
                conn.request("GET", target, headers={"Accept": "text/event-stream", **_headers()})
                r = conn.getresponse()
                if r.status in (404, 405, 501):
                    polling = True
                    emit(("link", (True, "polling the server (no event stream)")))
                    continue
                if r.status != 200:
                    raise OSError(f"{repo}/api/events: HTTP {r.status}")
                conn.sock.settimeout(STREAM_TIMEOUT)
                failures = 0
                emit(("link", (True, "connected: waiting for new exposures")))
                for event, ident, data in sse_events(iter(r.fp.readline, b"")):
                    if stop.is_set():
                        break
                    if event == "exposure":
                        name = ident
                        with contextlib.suppress(ValueError, KeyError, TypeError):
                            name = json.loads(data)["obsid"]
                        if name:
                            emit(("arrived", name))
            finally:
                link.unregister(conn.sock)
                conn.close()
            if stop.is_set():
                break
            raise OSError("the event stream ended")
        except Exception as exc:  # a dead, slow or failing server: say so, wait, try again
            if stop.is_set():
                break
            failures += 1
            wait = _backoff(interval, backoff_max, failures)
            emit(("link", (False, f"server unreachable ({exc}); retrying in {wait:.1f} s")))
            stop.wait(wait)


# ---------------------------------------------------------------------- the window's controls


class FollowControls(QObject):
    """The toolbar toggle (``Ctrl+F``), the status-bar note, and the wiring between a
    ``Follower`` and the window: the first press follows the shown exposure's repository,
    the next ones pause and resume (resuming jumps to the newest exposure)."""

    def __init__(self, window, toolbar, interval: float = 0.5):
        super().__init__(window)
        from PySide6.QtGui import QAction, QKeySequence
        from PySide6.QtWidgets import QLabel

        self.window = window
        self.follower = Follower(window.runner, self, interval=interval)
        self.action = QAction("follow", window)
        self.action.setCheckable(True)
        self.action.setShortcut(QKeySequence("Ctrl+F"))
        self.action.setToolTip(
            "follow the repository: show each new exposure as it is published (Ctrl+F pauses "
            "and resumes)"
        )
        self.action.triggered.connect(self._toggled)
        toolbar.addAction(self.action)
        self.label = QLabel("", window)
        window.statusBar().addPermanentWidget(self.label)
        self.follower.switch.connect(lambda url: window.open(url))
        self.follower.refresh.connect(self._refresh)
        self.follower.changed.connect(self._show_state)

    def follow(self, repo: str | None = None) -> bool:
        """Follow ``repo`` (default: the shown exposure's repository); False if there is none."""
        from cvt.viewer.window import split_repository

        if repo is None:
            if not self.window.url:
                return False
            repo = split_repository(self.window.url)[0]
        self.follower.start(os.fspath(repo))
        if self.window.exposure is not None and self.window.url:
            self.opened(self.window.url, self.window.exposure)
        return True

    def set_paused(self, paused: bool) -> None:
        if not self.follower.active:
            if not paused:
                self.follow()
            return
        self.follower.set_paused(paused)

    def _toggled(self, checked: bool) -> None:
        if not self.follower.active:
            if not self.follow():
                self.action.setChecked(False)
            return
        self.follower.set_paused(not checked)

    def opened(self, url: str, exposure) -> None:
        """The window opened an exposure: tell the follower which, and whether it fills."""
        if not self.follower.active:
            return
        from cvt.viewer.window import split_repository

        repo, name = split_repository(url)
        if repo.rstrip("/") != self.follower.repo.rstrip("/"):
            return  # something opened from elsewhere: following goes on in the background
        self.follower.set_current(name, bool(exposure.attrs.get("complete", True)))

    def _refresh(self, url: str) -> None:
        w = self.window
        if w.url == url and not w._opening:
            w.open(url, keep_view=True)

    def _show_state(self) -> None:
        f = self.follower
        self.action.blockSignals(True)
        self.action.setChecked(f.active and not f.paused)
        self.action.blockSignals(False)
        if not f.active:
            self.action.setText("follow")
            self.label.setText("")
            return
        n = len(f.pending)
        if f.paused:
            self.action.setText(f"follow ({n} new)" if n else "follow (paused)")
            text = f"paused: {n} newer exposure{'s' if n != 1 else ''}" if n else "paused"
        else:
            self.action.setText("following")
            text = "following"
        if f.link and (f.failures or not f.paused):
            text += f" — {f.link}"
        self.label.setText(text)
