"""A loopback FTP server for tests: pyftpdlib (a complete RFC 959 server: passive data
connections, ``SIZE``, ``REST``, binary mode, anonymous and password logins, the usual
``550``/``530`` replies), serving a folder on 127.0.0.1 on a free port from a thread.

Files are added at the paths a real server has them (e.g. NSIDC's
``/pub/DATASETS/fgdc/ggd318_map_circumarctic/permaice.shp``). Faults for the retry paths:
``cut(path, n)`` makes the next ``RETR`` of ``path`` end after byte ``n`` of the file (the
server closes the data connection early, as a dropped transfer looks to the client; ``SIZE``
and ``MDTM`` still give the whole file's), and
``busy(path)`` answers the next ``RETR`` with ``450``. ``commands`` records every command line
received (``PASS`` included), so a test can check ``REST`` was sent.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer


class _Truncated:
    """A file object that ends at byte ``end`` of the file, whatever its size; ``then()`` runs
    when the server closes it (the transfer is over)."""

    def __init__(self, fd: Any, end: int, then: Callable[[], None] | None) -> None:
        self._fd, self._end, self._then = fd, end, then

    def close(self) -> None:
        self._fd.close()
        if self._then is not None:
            self._then()

    def read(self, n: int = -1) -> bytes:
        left = max(0, self._end - self._fd.tell())
        return self._fd.read(left if n < 0 else min(n, left))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fd, name)


class LoopbackFTP:
    """``with LoopbackFTP(root) as ftp: url = ftp.add_file("/pub/a.shp", data)``; ``users``
    maps user names to passwords (read-only), ``anonymous`` allows the anonymous login, and the
    commands in ``without`` (e.g. ``SIZE``, ``MDTM``: optional, RFC 3659) are answered ``500``
    as by a server that lacks them."""

    def __init__(self, root: Path, users: dict[str, str] | None = None,
                 anonymous: bool = True, without: tuple[str, ...] = ()) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.commands: list[str] = []
        self._cuts: dict[str, list[tuple[int, Callable[[], None] | None]]] = {}
        self._busy: set[str] = set()
        auth = DummyAuthorizer()
        if anonymous:
            auth.add_anonymous(str(self.root))
        for user, password in (users or {}).items():
            auth.add_user(user, password, str(self.root), perm="elr")
        state = self

        class FS(AbstractedFS):
            def open(self, filename: str, mode: str) -> Any:
                fd = super().open(filename, mode)
                cuts = state._cuts.get(state._rel(filename))
                return _Truncated(fd, *cuts.pop(0)) if cuts else fd

        class Handler(FTPHandler):
            authorizer = auth
            abstracted_fs = FS
            use_sendfile = False  # so that the truncated file object is what is sent
            banner = "loopback FTP (pyftpdlib) ready."
            proto_cmds = {k: v for k, v in FTPHandler.proto_cmds.items() if k not in without}

            def pre_process_command(self, line: str, cmd: str, arg: str) -> None:
                state.commands.append(line)
                if cmd == "RETR" and arg:
                    path = state._rel(self.fs.ftp2fs(self.fs.ftpnorm(arg)))
                    if path in state._busy:
                        state._busy.discard(path)
                        self.respond("450 File busy, try again later.")
                        return
                super().pre_process_command(line, cmd, arg)

        self.server = FTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.address[1]
        self._running = False
        self._thread: threading.Thread | None = None

    def _rel(self, fs_path: str) -> str:
        return "/" + os.path.relpath(os.path.realpath(fs_path), os.path.realpath(self.root))

    def url(self, path: str, login: str = "") -> str:
        return f"ftp://{login + '@' if login else ''}127.0.0.1:{self.port}{path}"

    def add_file(self, path: str, data: bytes) -> str:
        dest = self.root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        return self.url(path)

    def cut(self, path: str, end: int, then: Callable[[], None] | None = None) -> None:
        """The next ``RETR`` of ``path`` ends after byte ``end``; then ``then()`` runs (e.g. the
        file changes before the client retries)."""
        self._cuts.setdefault(path, []).append((end, then))

    def busy(self, path: str) -> None:
        self._busy.add(path)

    def _serve(self) -> None:
        while self._running:
            self.server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self.server.close_all()

    def __enter__(self) -> LoopbackFTP:
        self._running = True
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=10)
