"""A loopback HTTP/1.1 server for tests: in-memory files with Range/HEAD, scripted faults, routes.

Files are served like a static object store: ``HEAD`` and ``GET``, single byte ranges
(``bytes=a-b``, ``a-``, ``-n``) answered ``206`` with ``Content-Range``, ``If-Range`` against
the file's ETag, ``Accept-Ranges``, ``Last-Modified`` (both left out for a file added with
``validators=False``), keep-alive (GDAL's ``/vsicurl`` needs
ranges and HEAD).
Faults are queued per path and consumed one per GET, in order, before normal service resumes:

- ``status(code, retry_after=None)``: answer ``code`` with a short body;
- ``cut(nbytes)``: send the headers of the normal answer, ``nbytes`` of its body, then close;
- ``stall(nbytes, seconds)``: like ``cut`` but wait ``seconds`` before closing (the fault's
  ``over`` event is set when that wait ends, so a test can tell whether the client gave up
  first);
- ``ignore_range()``: answer ``200`` with the whole body even when a range was asked for;
- ``ignore_if_range()``: answer a range ``206`` even when its ``If-Range`` does not match (as
  some S3 clones and proxies do).

Routes map a path to ``fn(method, query, body) -> (status, headers, bytes)`` (for JSON APIs).
Every request is logged in ``server.log`` as ``{"method", "path", "headers", "status"}``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Route = Callable[[str, dict[str, list[str]], bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class Fault:
    kind: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    nbytes: int = 0
    seconds: float = 0.0
    over: threading.Event = field(default_factory=threading.Event)


def status(code: int, retry_after: str | None = None) -> Fault:
    return Fault("status", status=code, headers={"Retry-After": retry_after} if retry_after else {})


def cut(nbytes: int) -> Fault:
    return Fault("cut", nbytes=nbytes)


def stall(nbytes: int, seconds: float) -> Fault:
    return Fault("stall", nbytes=nbytes, seconds=seconds)


def trickle(nbytes: int, seconds: float) -> Fault:
    """``nbytes``, then one more byte every ``seconds`` (always within a client's timeout), for
    at most 60 such bytes, then the connection closes."""
    return Fault("trickle", nbytes=nbytes, seconds=seconds)


def ignore_range() -> Fault:
    return Fault("ignore_range")


def ignore_if_range() -> Fault:
    return Fault("ignore_if_range")


class LoopbackServer:
    """A threaded server on 127.0.0.1 (a free port); use as a context manager."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.etags: dict[str, str] = {}
        self.bare: set[str] = set()
        self.faults: dict[str, list[Fault]] = defaultdict(list)
        self.routes: dict[str, Route] = {}
        self.fallback: Route | None = None
        """Answers a path that is neither a route nor a file (None: 404 ``not found``)."""
        self.log: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- set-up ---------------------------------------------------------------------------------
    def add_file(self, path: str, data: bytes, validators: bool = True) -> str:
        """Serve ``data`` at ``path``; return its URL. ``validators=False`` serves it without
        ``ETag`` and ``Last-Modified`` (as a server that generates its answers may), so an
        ``If-Range`` never matches."""
        self.files[path] = data
        self.etags[path] = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
        if validators:
            self.bare.discard(path)
        else:
            self.bare.add(path)
        return self.url(path)

    def add_faults(self, path: str, *faults: Fault) -> None:
        self.faults[path].extend(faults)

    def add_route(self, path: str, fn: Route) -> str:
        self.routes[path] = fn
        return self.url(path)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def requests_for(self, path: str, method: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for r in self.log
                if r["path"] == path and (method is None or r["method"] == method)
            ]

    # -- life cycle -----------------------------------------------------------------------------
    def start(self) -> LoopbackServer:
        handler = type("Handler", (_Handler,), {"server_state": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    """A connection the client resets (a download that gives up mid-body, a cut it asked for)
    ends that request quietly; any other error in a handler is printed as socketserver does."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_state: LoopbackServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def _record(self, code: int) -> None:
        path = urlsplit(self.path).path
        with self.server_state.lock:
            self.server_state.log.append(
                {
                    "method": self.command,
                    "path": path,
                    "headers": dict(self.headers),
                    "status": code,
                }
            )

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def do_POST(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _send(self, code: int, headers: dict[str, str], body: bytes, head: bool = False) -> None:
        self._record(code)
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        state = self.server_state
        split = urlsplit(self.path)
        path = split.path
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length) if length else b""

        if path in state.routes:
            code, headers, body = state.routes[path](self.command, parse_qs(split.query), body_in)
            self._send(code, headers, body, head)
            return

        fault = None
        if not head:
            with state.lock:
                if state.faults[path]:
                    fault = state.faults[path].pop(0)
        if fault is not None and fault.kind == "status":
            body = json.dumps({"error": fault.status}).encode()
            headers = {"Content-Type": "application/json", **fault.headers}
            self._send(fault.status, headers, body)
            return
        if path not in state.files:
            if state.fallback is not None:
                code, headers, body = state.fallback(self.command, {"path": [path]}, body_in)
                self._send(code, headers, body, head)
                return
            self._send(404, {"Content-Type": "text/plain"}, b"not found", head)
            return

        data = state.files[path]
        etag = state.etags[path]
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": etag,
            "Last-Modified": formatdate(0, usegmt=True),
        }
        if path in state.bare:
            del headers["ETag"], headers["Last-Modified"]
        code, start, end = 200, 0, len(data) - 1
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        # A multi-range request may be answered whole, as many object stores do.
        honour = wanted and "," not in wanted and not (fault and fault.kind == "ignore_range")
        blind = fault is not None and fault.kind == "ignore_if_range"
        if honour and (if_range is None or blind
                       or (if_range == etag and path not in state.bare)):
            parsed = _parse_range(wanted, len(data))
            if parsed is None:
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", head)
                return
            start, end = parsed
            code = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]

        if fault is not None and fault.kind in ("cut", "stall", "trickle"):
            self._record(code)
            self.send_response(code)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body[: fault.nbytes])
                self.wfile.flush()
                if fault.kind == "stall":
                    state.stopping.wait(fault.seconds)
                for k in range(fault.nbytes, min(len(body), fault.nbytes + 60)):
                    if fault.kind != "trickle" or state.stopping.wait(fault.seconds):
                        break
                    self.wfile.write(body[k : k + 1])
                    self.wfile.flush()
            except OSError:
                pass
            fault.over.set()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(code, headers, body, head)


def _parse_range(value: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range -> inclusive (start, end) within ``size``; None if unsatisfiable."""
    if not value.startswith("bytes="):
        return None
    first, _, last = value[len("bytes=") :].partition("-")
    if first == "":
        n = int(last)
        start, end = max(size - n, 0), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        return None
    return start, end
