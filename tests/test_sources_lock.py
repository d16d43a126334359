"""The lock file of checksums (mapper.sources.lock) against the loopback server: recorded at the
first download, verified after; a truncated download, a 5xx, a changed upstream file and a
missing non-sea file each give one line naming the URL and the fix and leave no partial file;
many processes record at once without losing an entry."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import pytest
from httpserver import LoopbackServer, cut, status

from mapper.errors import ConfigError, InputError, NotFoundError, SourceError
from mapper.sources.lock import LockFile, fetch_locked, lock_path

FAST = {"retries": 1, "backoff": 0.0, "timeout": 5}


@pytest.fixture()
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture()
def lock(tmp_path: Path) -> LockFile:
    return LockFile(tmp_path / "config" / "regions" / "tiny.lock.json")


def payload(seed: int, n: int = 200_000) -> bytes:
    return hashlib.shake_256(str(seed).encode()).digest(n)


def leftovers(dest: Path) -> list[Path]:
    return sorted(p for p in dest.parent.glob(f"*{dest.name}*"))


def one_line_naming(exc: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)
    return text


def test_lock_path_is_beside_the_region_file() -> None:
    assert lock_path("config/regions/alaska.yaml") == Path("config/regions/alaska.lock.json")
    origin = "config/regions/alaska.yaml + region_overrides.alaska of config/config.yaml"
    assert lock_path(origin) == Path("config/regions/alaska.lock.json")
    with pytest.raises(ConfigError, match="beside the region file"):
        lock_path("inline settings")


def test_first_download_records_then_later_ones_verify(server, lock, tmp_path) -> None:
    data = payload(1)
    url = server.add_file("/cells/a.tif", data)
    dest = tmp_path / "out" / "a.tif"
    entry = fetch_locked(url, dest, lock, **FAST)
    assert dest.read_bytes() == data and entry["size"] == len(data)
    text = lock.path.read_text()
    stored = json.loads(text)
    assert stored["files"] == {
        url: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    }
    assert text == json.dumps(stored, indent=1, sort_keys=True) + "\n"  # sorted keys
    # present and matching the lock: not downloaded again
    gets = len(server.requests_for("/cells/a.tif", "GET"))
    assert fetch_locked(url, dest, lock, **FAST)["sha256"] == stored["files"][url]["sha256"]
    assert len(server.requests_for("/cells/a.tif", "GET")) == gets
    # deleted locally: downloaded again and verified against the lock
    dest.unlink()
    fetch_locked(url, dest, lock, **FAST)
    assert dest.read_bytes() == data and lock.path.read_text() == text


def test_a_changed_upstream_file_is_one_error_and_leaves_nothing(server, lock, tmp_path) -> None:
    url = server.add_file("/cells/a.tif", payload(1))
    dest = tmp_path / "out" / "a.tif"
    fetch_locked(url, dest, lock, **FAST)
    dest.unlink()
    server.add_file("/cells/a.tif", payload(2))  # same size, other bytes
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, **FAST)
    text = one_line_naming(exc, url, str(lock.path), "changed upstream", "delete the entry")
    assert "differs" in text
    assert leftovers(dest) == []
    # another size: refused from the Content-Length, before the body is read
    server.add_file("/cells/a.tif", payload(2, 1000))
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, **FAST)
    one_line_naming(exc, url, str(lock.path), "delete the entry")
    assert leftovers(dest) == []
    # refreshing on purpose: delete the entry, the new version is recorded
    lock.path.write_text(json.dumps({"files": {}}))
    fetch_locked(url, dest, lock, **FAST)
    assert lock.get(url)["size"] == 1000


def test_a_truncated_download_is_one_error_and_leaves_nothing(server, lock, tmp_path) -> None:
    data = payload(3)
    url = server.add_file("/cells/t.tif", data)
    server.add_faults("/cells/t.tif", cut(0), cut(0))  # no attempt gets a byte (1 retry)
    dest = tmp_path / "out" / "t.tif"
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, **FAST)
    one_line_naming(exc, url, "gave up after 2 attempts", "retry later")
    assert leftovers(dest) == [] and lock.entries() == {}
    # also when the lock already knows the file (a rerun after the cell was deleted)
    fetch_locked(url, dest, lock, **FAST)
    dest.unlink()
    server.add_faults("/cells/t.tif", cut(0), cut(0))
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, **FAST)
    one_line_naming(exc, url, "retry later")
    assert leftovers(dest) == []


def test_a_5xx_is_one_error_and_leaves_nothing(server, lock, tmp_path) -> None:
    url = server.add_file("/cells/s.tif", payload(4))
    server.add_faults("/cells/s.tif", status(503), status(502))
    dest = tmp_path / "out" / "s.tif"
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, absent_ok=True, **FAST)
    text = one_line_naming(exc, url, "HTTP 502", "retry later")
    assert not isinstance(exc.value, NotFoundError), text
    assert leftovers(dest) == [] and lock.entries() == {}  # not taken for sea


def test_404_is_sea_only_where_the_lock_does_not_know_a_file(server, lock, tmp_path) -> None:
    sea = server.url("/cells/sea.tif")
    dest = tmp_path / "out" / "sea.tif"
    assert fetch_locked(sea, dest, lock, absent_ok=True, **FAST) is None
    assert lock.get(sea) == {"absent": True} and leftovers(dest) == []
    assert fetch_locked(sea, dest, lock, absent_ok=True, **FAST) is None  # still sea
    # where a 404 is not expected, it is an error of its own type
    with pytest.raises(NotFoundError) as exc:
        fetch_locked(server.url("/weights/x.pth"), tmp_path / "x.pth", lock, **FAST)
    one_line_naming(exc, "/weights/x.pth", "HTTP 404")
    # a file appearing where the lock records sea is a change upstream
    server.add_file("/cells/sea.tif", payload(5))
    with pytest.raises(SourceError) as exc:
        fetch_locked(sea, dest, lock, absent_ok=True, **FAST)
    one_line_naming(exc, sea, str(lock.path), "no file (HTTP 404)", "delete the entry")
    assert leftovers(dest) == []


def test_a_missing_non_sea_file_is_an_error_not_sea(server, lock, tmp_path) -> None:
    url = server.add_file("/cells/land.tif", payload(6))
    dest = tmp_path / "out" / "land.tif"
    fetch_locked(url, dest, lock, absent_ok=True, **FAST)
    dest.unlink()
    del server.files["/cells/land.tif"]
    with pytest.raises(SourceError) as exc:
        fetch_locked(url, dest, lock, absent_ok=True, **FAST)
    one_line_naming(exc, url, "HTTP 404", str(lock.path), "not sea", "retry later")
    assert leftovers(dest) == []
    assert lock.get(url)["size"] == 200_000  # the entry stays


def test_a_file_refused_by_its_check_is_neither_kept_nor_recorded(server, lock, tmp_path) -> None:
    url = server.add_file("/cells/html.tif", b"<html>maintenance</html>")
    dest = tmp_path / "out" / "html.tif"

    def not_a_raster(path: Path) -> None:
        raise InputError(f"{path}: not a raster")

    with pytest.raises(InputError):
        fetch_locked(url, dest, lock, check=not_a_raster, **FAST)
    assert leftovers(dest) == [] and lock.entries() == {}
    # the check sees the download before it takes its name: a job killed meanwhile leaves no
    # unvetted file at dest
    seen = []
    fetch_locked(url, dest, lock, check=lambda path: seen.append((path.name, dest.exists())),
                 **FAST)  # fmt: skip
    assert seen == [("html.tif.part", False)] and dest.exists() and url in lock.entries()


def test_an_unreadable_lock_file_names_itself(lock) -> None:
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text("{not json")
    with pytest.raises(SourceError, match="unreadable lock file"):
        lock.get("http://x")


@pytest.mark.parametrize(("entry", "damage"), [
    ({"sha256": "a" * 64}, "no size in bytes"),  # a hand edit, a merge
    ({"absent": False}, "no sha256 of 64 hex digits"),
    ({"sha256": "a" * 63, "size": 3}, "no sha256 of 64 hex digits"),
    ("a" * 64, "str, not an object"),
])
def test_a_damaged_lock_entry_is_one_error_naming_it(server, lock, tmp_path, entry,
                                                     damage) -> None:
    url = server.add_file("/a.bin", payload(1))
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps({"files": {url: entry}}))
    with pytest.raises(SourceError) as caught:
        fetch_locked(url, tmp_path / "a.bin", lock, backoff=0.001)
    assert str(caught.value) == (
        f"{lock.path}: the entry of {url} is damaged ({damage}); restore the file from version "
        "control, or delete that entry to record it again at the next download")
    assert leftovers(tmp_path / "a.bin") == []


def test_a_lock_file_that_cannot_be_written_is_one_error(server, tmp_path) -> None:
    lock = LockFile(tmp_path / "regions" / "tiny.lock.json")
    (tmp_path / "regions" / ".tiny.lock.json.lck").mkdir(parents=True)  # its guard cannot open
    url = server.add_file("/a.bin", payload(1))
    with pytest.raises(SourceError) as caught:
        fetch_locked(url, tmp_path / "a.bin", lock, backoff=0.001)
    one_line_naming(caught, f"{lock.path}: cannot record checksums beside the region file",
                    f"make {lock.path.parent} writable")
    assert leftovers(tmp_path / "a.bin") == []


def test_a_file_system_without_locks_is_one_error(server, lock, tmp_path, monkeypatch) -> None:
    """NFS without lockd or Lustre mounted noflock answer a POSIX lock with ENOLCK: one line
    naming the lock file and the fix, the download not kept (its checksum could not be
    recorded)."""
    import errno
    import fcntl

    def no_locks(fh, operation):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "lockf", no_locks)
    url = server.add_file("/a.bin", payload(1))
    with pytest.raises(SourceError) as caught:
        fetch_locked(url, tmp_path / "a.bin", lock, backoff=0.001)
    one_line_naming(caught, f"{lock.path}: cannot lock it to record a checksum (No locks "
                    "available", "keep the project on a file system that does")
    assert leftovers(tmp_path / "a.bin") == []


def _record_many(path: str, worker: int, n: int) -> None:
    lock = LockFile(path)
    for i in range(n):
        lock.record(f"http://h/{worker}/{i}", {"sha256": f"{worker:032x}{i:032x}", "size": i})


def test_concurrent_writers_lose_no_entry(lock) -> None:
    workers, n = 6, 15
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(str(lock.path), w, n)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    assert len(lock.entries()) == workers * n
    # the same entry again is no change; a different one for a known URL is refused
    lock.record("http://h/0/0", {"sha256": f"{0:032x}{0:032x}", "size": 0})
    with pytest.raises(SourceError, match="changed upstream"):
        lock.record("http://h/0/0", {"absent": True})


def test_the_snap_climate_archives_are_pinned_by_the_lock_file(server, tmp_path) -> None:
    """``python -m mapper fetch`` of a SNAP archive without a sha256 in the region file records
    it in the region's lock file; a rerun downloads nothing; an archive changed upstream is then
    one error naming the URL and the lock file, with nothing left behind."""
    from test_sources_climate import archive_bytes, serve_archives, snap_region, snap_source

    from mapper.sources.fetch import fetch_source

    urls = serve_archives(server)
    region = snap_region(tmp_path, snap_source(urls))
    out = tmp_path / "sources"
    fetch_source(region, "climate", out, file="pr")
    lock = LockFile(lock_path(region.path))
    data = archive_bytes("pr")
    recorded = {urls["pr"]: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}
    assert lock.entries() == recorded
    path = urls["pr"].removeprefix(server.base_url)
    fetch_source(region, "climate", out, file="pr")  # a rerun: the archive matches the lock
    assert len(server.requests_for(path, "GET")) == 1
    for leftover in (out / "climate").glob("snap_pr.zip*"):
        leftover.unlink()  # a fresh machine, say
    server.add_file(path, archive_bytes("pr", skip=(2000, 1)))  # SNAP re-issued the archive
    with pytest.raises(SourceError) as exc:
        fetch_source(region, "climate", out, file="pr")
    one_line_naming(exc, urls["pr"], str(lock.path), "changed upstream", "delete the entry")
    assert not list((out / "climate").glob("snap_pr.zip*"))
    assert lock.entries() == recorded


@pytest.mark.parametrize("served", ["truncated", "html"])
def test_a_snap_archive_that_is_no_zip_is_not_recorded(server, tmp_path, served) -> None:
    """A cut copy of the archive served whole, or an HTML page at the archive's URL: one error
    naming the URL, no file left, and the lock file records nothing (the next download, of the
    right file, is recorded)."""
    from test_sources_climate import archive_bytes, serve_archives, snap_region, snap_source

    from mapper.sources.fetch import fetch_source

    good = archive_bytes("tas")
    bad = good[: len(good) // 2] if served == "truncated" else b"<html>maintenance</html>"
    urls = serve_archives(server, tas=bad)
    region = snap_region(tmp_path, snap_source(urls))
    out = tmp_path / "sources"
    with pytest.raises(SourceError) as exc:
        fetch_source(region, "climate", out, file="tas")
    one_line_naming(exc, urls["tas"], "not a readable zip archive", "check the URL")
    assert not list((out / "climate").glob("snap_tas.zip*"))
    lock = LockFile(lock_path(region.path))
    assert lock.entries() == {}
    server.add_file(urls["tas"].removeprefix(server.base_url), good)
    fetch_source(region, "climate", out, file="tas")
    assert lock.get(urls["tas"]) == {"sha256": hashlib.sha256(good).hexdigest(), "size": len(good)}
