"""Atomic writes appear whole or not at all, with an ordinary file's mode; checksums of files."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path

import pytest

from mapper.errors import InputError
from mapper.files import (
    CHUNK_BYTES,
    atomic_path,
    file_sha256,
    remove_stale_temporaries,
    staged_paths,
)


def test_atomic_path_renames_on_success(tmp_path: Path) -> None:
    out = tmp_path / "deeper" / "table.csv"  # parent folders are made
    with atomic_path(out) as tmp:
        assert tmp.parent == out.parent and tmp != out
        tmp.write_text("a,b\n")
        assert not out.exists()  # nothing at the target until the writer finishes
    assert out.read_text() == "a,b\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["table.csv"]


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    out = tmp_path / "table.csv"
    out.write_text("old\n")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_path(out) as tmp:
        tmp.write_text("half of the ne")
        raise RuntimeError("disk on fire")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_path_gives_the_mode_of_any_new_file(tmp_path: Path, umask: int) -> None:
    before = os.umask(umask)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(before)
    mode = stat.S_IMODE((tmp_path / "out.json").stat().st_mode)
    assert mode == 0o666 & ~umask == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def _record_syncs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Record, in order, each ``fsync`` (the path its descriptor is open on) and each rename."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", f"{src} -> {dst}"))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")
def test_written_bytes_reach_the_disk_before_the_file_takes_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that fails just after a job finished must not leave an empty file under the
    output's name (Snakemake would take it as made): the file is flushed before its rename, and
    the folder's entry after it; the same for every file of a staged product."""
    events = _record_syncs(monkeypatch)
    out = tmp_path / "table.csv"
    with atomic_path(out) as tmp:
        tmp.write_text("a,b\n")
    assert events == [("fsync", str(tmp)), ("rename", f"{tmp} -> {out}"),
                      ("fsync", str(tmp_path))]
    events.clear()
    targets = [tmp_path / "map.tif", tmp_path / "map.png"]
    with staged_paths(targets) as staged:
        for s in staged:
            s.write_text("new")
    assert events[:2] == [("fsync", str(s)) for s in staged]
    assert [kind for kind, _ in events[2:]] == ["rename", "rename", "fsync"]
    assert events[-1] == ("fsync", str(tmp_path))


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "map.tif"
    stale = tmp_path / ".map.tif.k2x9q0ab.tmp"  # mkstemp's name, as a killed job left it
    stale.write_bytes(b"half a raster")
    stale_dir = tmp_path / ".map.tif.7fcttrmq"  # mkdtemp's
    stale_dir.mkdir()
    other = tmp_path / ".map.tif.aux.xml.k2x9q0ab.tmp"  # another output's temporary
    other.write_bytes(b"")
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"whole")
    assert not stale.exists() and stale_dir.is_dir() and other.exists()
    assert remove_stale_temporaries(out, directories=True) == [stale_dir]
    assert not stale_dir.exists() and other.exists() and out.read_bytes() == b"whole"


def test_staged_paths_move_every_file_into_place_the_first_last(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    targets = [tmp_path / "out" / name for name in ("map.tif", "map.png", "map.json")]
    moved = []
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        moved.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with staged_paths(targets) as staged:
        assert [s.name for s in staged] == [t.name for t in targets]
        for s in staged:
            s.write_text(f"new {s.name}")
        assert not any(t.exists() for t in targets), "nothing is in place before the block ends"
    assert [t.read_text() for t in targets] == [f"new {t.name}" for t in targets]
    assert moved == ["map.json", "map.png", "map.tif"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(t.name for t in targets)


def test_staged_paths_leave_the_old_files_when_a_later_one_fails(tmp_path: Path) -> None:
    targets = [tmp_path / name for name in ("map.tif", "map.png", "map.json")]
    for t in targets:
        t.write_text(f"old {t.name}")
    with pytest.raises(OSError, match="disk full"), staged_paths(targets) as staged:
        staged[0].write_text("new map")
        staged[1].write_text("new quick-look")
        raise OSError("disk full")
    assert [t.read_text() for t in targets] == [f"old {t.name}" for t in targets]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(t.name for t in targets)


@pytest.mark.parametrize("writer", ["atomic_path", "staged_paths"])
def test_an_output_folder_that_cannot_be_made_is_one_error_naming_it(tmp_path: Path,
                                                                     writer: str) -> None:
    """A file where the output's folder should be (a path typo, a name taken): one error naming
    the folder and the fix, not a traceback, and the file left as it was."""
    (tmp_path / "maps").write_text("a file")
    out = tmp_path / "maps" / "sub" / "nsp.tif"
    with pytest.raises(InputError) as caught:
        _write_one(writer, out)
    assert str(caught.value) == (
        f"{out.parent}: cannot write there (Not a directory); make the folder writable by this "
        "user (or run in a project folder of your own) and run the same target again")
    assert (tmp_path / "maps").read_text() == "a file"


@pytest.mark.parametrize("writer", ["atomic_path", "staged_paths"])
def test_an_output_folder_this_user_cannot_write_is_one_error_naming_it(
    tmp_path: Path, writer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared folder owned by another user (EACCES; the tests run as root, which may write
    anywhere, so the refusal is the operating system's answer replayed): one error naming it."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    out = tmp_path / "maps" / "nsp.tif"
    with pytest.raises(InputError, match=rf"^{tmp_path / 'maps'}: cannot write there "
                       r"\(Permission denied\); make the folder writable"):
        _write_one(writer, out)
    assert not out.exists()


def _write_one(writer: str, out: Path) -> None:
    if writer == "atomic_path":
        with atomic_path(out) as tmp:
            tmp.write_text("map")
    else:
        with staged_paths([out]) as staged:
            staged[0].write_text("map")


def test_staged_paths_refuse_to_move_a_file_never_written(tmp_path: Path) -> None:
    targets = [tmp_path / "map.tif", tmp_path / "map.png"]
    with pytest.raises(RuntimeError, match="map.png"), staged_paths(targets) as staged:
        staged[0].write_text("new map")
    assert list(tmp_path.iterdir()) == []


def test_staged_paths_remove_what_a_killed_writer_staged(tmp_path: Path) -> None:
    left = tmp_path / ".map.tif.abcd1234"
    (left / "out").mkdir(parents=True)
    (left / "out" / "map.tif").write_text("half")
    with staged_paths([tmp_path / "map.tif"]) as (staged,):
        staged.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


def test_file_sha256_across_chunks(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_BYTES + 12345)  # three reads, the last one short
    path = tmp_path / "bytes.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
    with pytest.raises(FileNotFoundError):
        file_sha256(tmp_path / "missing.bin")


FILL_TO = """
import resource, signal, sys
from pathlib import Path
from mapper.errors import InputError
from mapper.files import atomic_path, staged_paths
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit, how, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    if how == "atomic":
        with atomic_path(out) as tmp:
            tmp.write_bytes(bytes(10_000))
    else:
        with staged_paths([out, out.with_suffix(".png")]) as (main, look):
            main.write_bytes(b"small")
            look.write_bytes(bytes(10_000))
except InputError as exc:
    print(exc)
"""


@pytest.mark.parametrize("how", ["atomic", "staged"])
def test_a_file_that_does_not_fit_is_one_error_and_nothing_written(tmp_path: Path,
                                                                   how: str) -> None:
    """No file may grow beyond 2 kB (RLIMIT_FSIZE: the write fails with EFBIG, as with ENOSPC on
    a full disk): one error naming the output and the fix, no output, no temporary file."""
    import subprocess
    import sys

    out = tmp_path / "out" / "map.tif"
    run = subprocess.run([sys.executable, "-c", FILL_TO, "2000", how, str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip() == (f"{out}: write failed (File too large); free disk space in "
                                  f"{out.parent} and run the same target again"), run.stdout
    assert list(out.parent.iterdir()) == []
