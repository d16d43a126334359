"""Writing and checking files: atomic writes with shared permissions, and SHA-256 checksums.

Every output of the package (rasters, VRTs, tables, JSON, figures, checkpoints) is written through
:func:`atomic_path`: to a temporary name beside the target, renamed over it when the writer
finishes. A reader therefore sees the old file or the whole new one, never a partial file, even
when a job is killed mid-write; what a killed writer left behind is removed the next time the
same output is written (:func:`remove_stale_temporaries`). The file's bytes reach the disk
(``fsync``) before the rename, and the folder's entry after it, so a machine that loses power or a
cluster node that fails just after a job finished cannot leave an empty or truncated file under
the output's name, which Snakemake would take as made. Outputs get the permissions of any
file the user creates (``0o666`` less the umask: 0644 under the usual umask 022), so a
group-shared project can read every product, model included.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mapper.errors import InputError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Bytes read at a time when hashing a file."""


def remove_stale_temporaries(path: str | Path, directories: bool = False) -> list[Path]:
    """Delete the temporary files :func:`atomic_path` left beside ``path`` when its writer was
    killed (SIGKILL, power loss, a cluster job past its time limit): ``.<name>.XXXXXXXX.tmp``;
    with ``directories``, also the work folders ``.<name>.XXXXXXXX`` of
    ``tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")``.

    Called when ``path`` is about to be written again. One writer per output at a time (as
    Snakemake runs jobs) makes them garbage; the patterns (``mkstemp``'s 8 random characters)
    never match another output's temporaries (e.g. ``.<name>.aux.xml.XXXXXXXX.tmp``).
    """
    path = Path(path)
    name = re.escape(path.name)
    file_pattern = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.tmp")
    dir_pattern = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}")
    removed = []
    if path.parent.is_dir():
        for p in path.parent.glob(f".{glob.escape(path.name)}.*"):
            if file_pattern.fullmatch(p.name) and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
                removed.append(p)
            elif directories and dir_pattern.fullmatch(p.name) and p.is_dir() \
                    and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    if removed:
        logger.info("removed %d temporary file(s) of an interrupted write of %s", len(removed),
                    path)
    return removed


def _sync(path: Path) -> None:
    """Flush a written file's bytes to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename into it) to the disk, where the file system can; some
    (network file systems among them) refuse ``fsync`` on a folder, and are left to their own."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    umask = os.umask(0)
    os.umask(umask)
    return umask


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""The errors of a write that did not fit: no space left, a quota, a file-size limit."""


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success flush it to the disk and rename it to
    ``path``, else delete it.

    The caller writes the temporary path by name (GDAL, matplotlib, ``Path.write_text``) or opens
    it. Parent folders are created. The file has the mode of an ordinary new file (``0o666`` less
    the umask), not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    with _creating_in(path.parent):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        if tmp_path.is_file():
            _sync(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        _raise_if_disk_full(exc, path)
        raise
    _sync_folder(path.parent)


UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENOENT)
"""The errors of creating a file or folder where this user cannot: permissions, a read-only file
system, a file where a folder should be, a folder that cannot be made."""


@contextmanager
def _creating_in(folder: Path) -> Iterator[None]:
    """Creating an output's folder and its temporary file: one InputError naming the folder and
    the fix where this user cannot write (:data:`UNWRITABLE`) or the disk is full, not a
    traceback."""
    try:
        yield
    except OSError as exc:
        if exc.errno in UNWRITABLE:
            raise InputError(
                f"{folder}: cannot write there ({os.strerror(exc.errno)}); make the folder "
                "writable by this user (or run in a project folder of your own) and run the same "
                "target again"
            ) from None
        _raise_if_disk_full(exc, folder / "*")
        raise


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """A write of ``path`` that did not fit (:data:`DISK_FULL`) as one InputError naming it and
    the fix, not a traceback."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        raise InputError(
            f"{path}: write failed ({os.strerror(exc.errno)}); free disk space in {path.parent} "
            "and run the same target again"
        ) from None


@contextmanager
def staged_paths(paths: Sequence[str | Path]) -> Iterator[list[Path]]:
    """Yield a staging path for each of ``paths`` (the files of one product, in one folder), in a
    work folder beside the first; when the block finishes, move each staged file over its output,
    the first output last; if it raises, delete them all and leave every output as it was.

    So a product of several files (a map, its quick-look, style and STAC Item) is written whole
    or not at all, also when run by hand: a failure in a later file leaves no new earlier one
    beside old ones. The work folder (``.<first name>.XXXXXXXX``) may also hold the writer's own
    intermediate files; what a killed writer left there is removed the next time (see
    :func:`remove_stale_temporaries`). Each output is replaced by a rename, as
    :func:`atomic_path` does; a reader may see the new files appear one after the other, the
    first one (the main file) last.
    """
    targets = [Path(p) for p in paths]
    if not targets or len({t.parent.resolve() for t in targets}) != 1 \
            or len({t.name for t in targets}) != len(targets):
        raise ValueError(f"staged_paths needs distinct files in one folder, not {targets}")
    first = targets[0]
    with _creating_in(first.parent):
        first.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(first, directories=True)
        for t in targets[1:]:
            remove_stale_temporaries(t)
        work = tempfile.mkdtemp(dir=first.parent, prefix=f".{first.name}.")
    try:
        staged = [Path(work) / "out" / t.name for t in targets]
        staged[0].parent.mkdir()
        yield staged
        missing = [str(t) for t, s in zip(targets, staged, strict=True) if not s.is_file()]
        if missing:
            raise RuntimeError(f"staged_paths: nothing was written for {', '.join(missing)}")
        for s in staged:
            _sync(s)
        for t, s in reversed(list(zip(targets, staged, strict=True))):
            os.replace(s, t)
        _sync_folder(first.parent)
    except OSError as exc:
        _raise_if_disk_full(exc, first)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read :data:`CHUNK_BYTES` at a time (any size in bounded
    memory). A missing file raises ``FileNotFoundError``; callers that expect one say which."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
