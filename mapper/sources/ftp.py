"""One download attempt over FTP (``ftp://``), for :func:`mapper.sources.http.download`.

Some archives are still served only by anonymous FTP: NSIDC's ``fgdc`` datasets (the
circum-Arctic permafrost map, GGD318) at ``ftp://sidads.colorado.edu/pub/DATASETS/fgdc/``.
:func:`mapper.sources.http.download` does everything around an attempt (retries with backoff,
the ``.part`` file, the sha256 and size checks, the rename) for both schemes; this module is the
FTP attempt, with Python's :mod:`ftplib`:

- login from the URL (``ftp://user:password@host/...``), else from ``~/.netrc`` (the host's
  ``machine`` entry), else anonymous;
- binary mode, passive data connections; the size from ``SIZE`` when the server offers it;
- a ``.part`` left by a cut transfer is resumed with ``REST <offset>``, unless the file's
  modification time (``MDTM``) changed since the attempt that wrote it, as ``If-Range`` guards an
  HTTP resume (a ``.part`` left by an earlier run is kept by the caller when the MDTM time
  recorded beside it, ``<dest>.part.validator``, or a sha256 can tell a changed file); a server
  that refuses ``REST`` is read whole;
- replies 4xx (``421`` too many users, ``425``/``426`` data connection failed or aborted, ``450``
  file busy), timeouts and cut connections are retried; ``550`` (no such file) is final and
  reported as missing, ``530`` (login refused) is final with the fix.
"""

from __future__ import annotations

import ftplib
import logging
import netrc
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from mapper.files import file_sha256
from mapper.sources.part_record import remember_validator
from mapper.sources.transfer import (
    CHUNK_BYTES,
    FIX_URL,
    FatalError,
    RetryableError,
    write_body,
)

logger = logging.getLogger(__name__)

ANONYMOUS = ("anonymous", "anonymous@")
_FIX_LOGIN = (
    "put the server's login in ~/.netrc (machine <host> login <user> password <password>) or in "
    "the URL (ftp://user:password@host/...)"
)


def credentials(url: str) -> tuple[str, str]:
    """(user, password) for ``url``: from the URL, else ``~/.netrc``, else anonymous."""
    parts = urlsplit(url)
    if parts.username:
        return unquote(parts.username), unquote(parts.password or "")
    try:
        entry = netrc.netrc().authenticators(parts.hostname or "")
    except (FileNotFoundError, netrc.NetrcParseError):
        entry = None
    if entry and entry[0]:
        return entry[0], entry[2] or ""
    return ANONYMOUS


def _reply_error(exc: ftplib.Error, what: str) -> Exception:
    """The retry class of an FTP error reply (``str(exc)`` starts with the code)."""
    text = str(exc).strip()
    code = text[:3]
    if isinstance(exc, ftplib.error_temp) or code.startswith("4"):
        return RetryableError(f"FTP {what}: {text}")
    if code == "530":
        return FatalError(f"FTP login refused ({text})", _FIX_LOGIN)
    if code == "550":
        return FatalError(f"FTP {what}: {text}", FIX_URL, missing=True)
    return FatalError(f"FTP {what}: {text}", FIX_URL)


def attempt(
    url: str,
    part: Path,
    size: int | None,
    timeout: float,
    state: dict[str, Any],
    origin: tuple[str, str],
) -> tuple[str, int, None, bool]:
    """One RETR of ``url`` into ``part`` (appended from its current length when the server takes
    ``REST``); returns (sha256 of the whole file, bytes, None, resumed). ``state["mdtm"]``
    carries the file's modification time from the attempt that wrote ``part`` to the next."""
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not parts.hostname or not path.strip("/"):
        raise FatalError(f"not an FTP file URL ({url})", FIX_URL)
    ftp = ftplib.FTP(timeout=timeout)
    try:
        try:
            ftp.connect(parts.hostname, parts.port or 21)
            ftp.login(*credentials(url))
            ftp.voidcmd("TYPE I")
        except ftplib.Error as exc:
            raise _reply_error(exc, "login") from None
        except (OSError, EOFError) as exc:
            raise RetryableError(f"connection failed ({exc.__class__.__name__}: {exc})") from None
        return _retrieve(ftp, url, path, part, size, state, origin)
    finally:
        if ftp.sock is not None:  # None when the connection itself failed: nothing to close
            try:
                ftp.quit()
            except (ftplib.Error, OSError, EOFError):
                ftp.close()


def _size(ftp: ftplib.FTP, path: str) -> int | None:
    """The file's ``SIZE``, or None if the server does not offer the command (the transfer's
    end then decides); ``550`` (no such file) is raised."""
    try:
        return ftp.size(path)
    except ftplib.error_perm as exc:
        if str(exc).startswith("550"):
            raise
        return None


def _modified(ftp: ftplib.FTP, path: str) -> str | None:
    """The file's ``MDTM`` reply (``213 YYYYMMDDHHMMSS``), or None if the server has none."""
    try:
        return ftp.sendcmd(f"MDTM {path}")
    except ftplib.error_perm:
        return None


def _retrieve(
    ftp: ftplib.FTP,
    url: str,
    path: str,
    part: Path,
    size: int | None,
    state: dict[str, Any],
    origin: tuple[str, str],
) -> tuple[str, int, None, bool]:
    try:
        total = _size(ftp, path)
        modified = _modified(ftp, path)
    except ftplib.Error as exc:
        raise _reply_error(exc, f"SIZE {path}") from None
    except (OSError, EOFError) as exc:
        raise RetryableError(f"connection lost ({exc.__class__.__name__})") from None
    if size is not None and total is not None and total != size:
        raise FatalError(f"the server reports {total} bytes, {origin[0]} {size}", origin[1],
                          changed=True)
    offset = part.stat().st_size if part.exists() else 0
    changed = "mdtm" in state and state["mdtm"] != modified
    # without a modification time (no MDTM) only a known checksum would reveal a mix of versions
    blind = modified is None and not state.get("checked")
    if offset and (total is None or offset > total or changed or blind):
        if changed:
            logger.info("%s: changed on the server since the cut transfer; downloading it whole",
                        url)
        elif blind:
            logger.info("%s: no modification time (MDTM) to resume against; downloading it "
                        "whole", url)
        part.unlink()
        offset = 0
    state["mdtm"] = modified
    if offset and offset == total:  # complete already: nothing left to transfer
        return file_sha256(part), offset, None, True
    try:
        conn = ftp.transfercmd(f"RETR {path}", rest=offset or None)
    except ftplib.error_perm as exc:
        if offset and str(exc)[:3] in ("500", "501", "502", "504"):
            logger.info("%s: the server refused REST; downloading it whole", url)
            part.unlink()
            raise RetryableError("REST refused; restarting from byte 0", wait=0.0) from None
        raise _reply_error(exc, f"RETR {path}") from None
    except ftplib.Error as exc:
        raise _reply_error(exc, f"RETR {path}") from None
    except (OSError, EOFError) as exc:
        raise RetryableError(f"data connection failed ({exc.__class__.__name__})") from None

    # the record vouches only for bytes written from byte 0 here, or vouched for already
    state["vouched"] = offset == 0 or bool(state.get("vouched"))
    remember_validator(part, url, modified if state["vouched"] else None)
    with conn:
        digest, received = write_body(url, part, offset, total, size, origin,
                                      lambda: conn.recv(CHUNK_BYTES), (OSError,))
    try:
        ftp.voidresp()  # 226 Transfer complete
    except ftplib.Error as exc:
        raise _reply_error(exc, f"RETR {path}") from None
    except (OSError, EOFError) as exc:
        raise RetryableError(f"no end-of-transfer reply ({exc.__class__.__name__})") from None
    return digest, received, None, bool(offset)
