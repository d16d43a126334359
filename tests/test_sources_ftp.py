"""Downloads over FTP against a loopback FTP server (pyftpdlib) laid out as NSIDC's anonymous
archive: login (anonymous, ~/.netrc, the URL), resume with REST after a cut transfer, retries of
4xx replies, 550 as a missing file, and an http-kind source whose files are ftp:// URLs."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import FETCH_BOUNDS
from ftpserver import LoopbackFTP

from mapper.config import load_config, load_region
from mapper.errors import NotFoundError, SourceError
from mapper.sources.http import download
from mapper.sources.manifest import read_manifest

FAST = {"backoff": 0.001, "timeout": 5.0}
FOLDER = "/pub/DATASETS/fgdc/ggd318_map_circumarctic"
SHP = f"{FOLDER}/permaice.shp"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(dest.name + "*"))


@pytest.fixture()
def payload() -> bytes:
    return np.random.default_rng(11).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


@pytest.fixture()
def ftp(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc unless a test writes one
    with LoopbackFTP(tmp_path / "ftproot") as server:
        yield server


def test_anonymous_download_is_verified_and_leaves_only_the_file(ftp, payload, tmp_path):
    url = ftp.add_file(SHP, payload)
    dest = tmp_path / "out" / "permaice.shp"
    entry = download(url, dest, sha256=sha(payload), size=len(payload), **FAST)
    assert dest.read_bytes() == payload and leftovers(dest) == [dest]
    assert entry == {"url": url, "path": str(dest), "size": len(payload), "sha256": sha(payload)}
    assert "USER anonymous" in ftp.commands and "TYPE I" in ftp.commands
    assert [c for c in ftp.commands if c.startswith("RETR")] == [f"RETR {SHP}"]


def test_a_cut_transfer_is_resumed_with_rest(ftp, payload, tmp_path):
    url = ftp.add_file(SHP, payload)
    ftp.cut(SHP, 100_000)
    dest = tmp_path / "permaice.shp"
    entry = download(url, dest, sha256=sha(payload), **FAST)
    assert dest.read_bytes() == payload and entry["sha256"] == sha(payload)
    assert [c for c in ftp.commands if c.startswith(("REST", "RETR"))] == [
        f"RETR {SHP}", "REST 100000", f"RETR {SHP}"]


def test_without_a_checksum_a_file_changed_between_attempts_is_fetched_whole(
    ftp, payload, tmp_path
):
    """The file's modification time (MDTM) guards the resume, as If-Range does over HTTP: an
    unchanged file is resumed, a changed one read again from byte 0 (no mix of two versions)."""
    url = ftp.add_file(SHP, payload)
    ftp.cut(SHP, 100_000)
    download(url, tmp_path / "a.shp", **FAST)
    assert (tmp_path / "a.shp").read_bytes() == payload
    assert "REST 100000" in ftp.commands

    def replace() -> None:
        path = ftp.root / SHP.lstrip("/")
        path.write_bytes(payload[::-1])
        os.utime(path, (1_700_000_000, 1_700_000_000))

    ftp.commands.clear()
    ftp.cut(SHP, 100_000, then=replace)
    entry = download(url, tmp_path / "b.shp", **FAST)
    assert (tmp_path / "b.shp").read_bytes() == payload[::-1]
    assert entry["sha256"] == sha(payload[::-1])
    assert not any(c.startswith("REST") for c in ftp.commands)
    assert len([c for c in ftp.commands if c.startswith("RETR")]) == 2


def test_a_part_file_of_a_killed_job_is_resumed_against_its_mdtm(ftp, payload, tmp_path):
    """A job killed after a cut transfer of a file without a known sha256 leaves its bytes and
    the file's MDTM time: the next job resumes with REST while the time is unchanged, and reads
    the file whole once it changed."""
    url = ftp.add_file(SHP, payload)
    dest = tmp_path / "permaice.shp"
    part = dest.with_name("permaice.shp.part")
    for changed in (False, True):
        ftp.cut(SHP, 100_000)  # then the job waits 60 s to retry, and is killed meanwhile
        code = ("import sys; from mapper.sources.http import download; "
                "download(sys.argv[1], sys.argv[2], backoff=60, timeout=5)")
        proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest)])
        try:
            deadline = time.monotonic() + 60
            while not (part.exists() and part.stat().st_size == 100_000):
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.02)
            time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait()
        assert sorted(p.name for p in leftovers(dest)) == ["permaice.shp.part",
                                                           "permaice.shp.part.validator"]
        data = payload
        if changed:
            data = payload[::-1]
            path = ftp.root / SHP.lstrip("/")
            path.write_bytes(data)
            os.utime(path, (1_700_000_000, 1_700_000_000))
        ftp.commands.clear()
        entry = download(url, dest, **FAST)
        assert dest.read_bytes() == data and entry["sha256"] == sha(data)
        assert ("REST 100000" in ftp.commands) is not changed
        assert leftovers(dest) == [dest]
        dest.unlink()


def test_a_server_without_size_and_mdtm(tmp_path, payload, monkeypatch):
    """SIZE and MDTM are optional (RFC 3659): without them the transfer's end decides the
    length, and a .part left by an earlier run is read again whole (nothing to resume against)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with LoopbackFTP(tmp_path / "root", without=("SIZE", "MDTM")) as ftp:
        url = ftp.add_file(SHP, payload)
        dest = tmp_path / "permaice.shp"
        dest.with_name("permaice.shp.part").write_bytes(payload[:5000])
        entry = download(url, dest, sha256=sha(payload), **FAST)
        assert dest.read_bytes() == payload and entry["size"] == len(payload)
        assert not any(c.startswith("REST") for c in ftp.commands)
        assert leftovers(dest) == [dest]


def test_a_busy_reply_is_retried(ftp, payload, tmp_path):
    url = ftp.add_file(SHP, payload)
    ftp.busy(SHP)
    download(url, tmp_path / "permaice.shp", sha256=sha(payload), **FAST)
    assert len([c for c in ftp.commands if c.startswith("RETR")]) == 2


def test_a_server_that_refuses_the_connection_is_retried_then_one_error(tmp_path):
    with socket.socket() as s:  # a loopback port with nobody listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ftp://127.0.0.1:{port}{SHP}"
    dest = tmp_path / "permaice.shp"
    with pytest.raises(SourceError) as exc:
        download(url, dest, retries=2, **FAST)
    message = str(exc.value)
    assert message.startswith(f"{url} -> {dest}: connection failed (ConnectionRefusedError")
    assert "gave up after 3 attempts" in message and "\n" not in message
    assert leftovers(dest) == []


def test_a_missing_file_is_one_error_and_not_retried(ftp, tmp_path):
    dest = tmp_path / "permaice.dbf"
    url = ftp.url(f"{FOLDER}/permaice.dbf")
    with pytest.raises(NotFoundError) as exc:
        download(url, dest, retries=3, **FAST)
    message = str(exc.value)
    assert url in message and "550" in message and "check the URL" in message
    assert "\n" not in message
    assert len([c for c in ftp.commands if c.startswith("SIZE")]) == 1
    assert leftovers(dest) == []


def test_the_login_comes_from_the_url_or_netrc(tmp_path, payload, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    with LoopbackFTP(tmp_path / "root", users={"mapper": "s3cret"}, anonymous=False) as ftp:
        ftp.add_file(SHP, payload)
        with pytest.raises(SourceError) as exc:  # anonymous, refused
            download(ftp.url(SHP), tmp_path / "a.shp", **FAST)
        assert "login refused" in str(exc.value) and "~/.netrc" in str(exc.value)
        assert leftovers(tmp_path / "a.shp") == []

        download(ftp.url(SHP, login="mapper:s3cret"), tmp_path / "b.shp", **FAST)
        assert (tmp_path / "b.shp").read_bytes() == payload

        netrc = home / ".netrc"
        netrc.write_text("machine 127.0.0.1 login mapper password s3cret\n")
        netrc.chmod(0o600)
        download(ftp.url(SHP), tmp_path / "c.shp", sha256=sha(payload), **FAST)
        assert (tmp_path / "c.shp").read_bytes() == payload
        assert ftp.commands.count("USER mapper") == 2


def _permaice(folder: Path) -> dict[str, bytes]:
    """A SYNTHETIC two-polygon permaice shapefile in EASE-Grid North (EPSG:3408) over the
    fetch region: EXTENT C west of its middle, D east of it; its parts' bytes by extension."""
    import pyogrio.raw
    import shapely
    from pyproj import Transformer

    left, bottom, right, top = FETCH_BOUNDS
    mid = (left + right) / 2
    to_ease = Transformer.from_crs(3338, 3408, always_xy=True)
    boxes = [shapely.box(left - 500, bottom - 500, mid, top + 500),
             shapely.box(mid, bottom - 500, right + 500, top + 500)]
    ease = [shapely.transform(shapely.segmentize(b, 50.0),
                              lambda xy: np.column_stack(to_ease.transform(xy[:, 0], xy[:, 1])))
            for b in boxes]
    folder.mkdir(parents=True)
    pyogrio.raw.write(folder / "permaice.shp", shapely.to_wkb(ease), [np.array(["C", "D"])],
                      ["EXTENT"], geometry_type="Polygon", crs="EPSG:3408", driver="ESRI Shapefile")
    return {ext: (folder / f"permaice.{ext}").read_bytes() for ext in ("shp", "shx", "dbf", "prj")}


def test_a_zone_layer_of_loose_shapefile_parts_over_anonymous_ftp(ftp, tmp_path):
    """As NSIDC serves GGD318: permaice.shp, .shx, .dbf and .prj in one FTP folder, fetched one
    by one without a sha256 (pinned by the region's lock file at the first download), then read
    as the region's zone layer (EXTENT codes)."""
    from tiny_region import write_tiny_region

    from mapper.sources.lock import lock_path
    from mapper.zones import fetch_zone_file, prepare_zone_layer

    parts = _permaice(tmp_path / "made")
    urls = {ext: ftp.add_file(f"{FOLDER}/permaice.{ext}", data) for ext, data in parts.items()}
    settings = {"name": "permafrost_zone", "kind": "http", "field": "EXTENT",
                "layer": "permaice.shp", "files": [{"url": url} for url in urls.values()]}
    config = write_tiny_region(tmp_path / "r", FETCH_BOUNDS, 64, name="r", zones=[settings])
    region = load_region(load_config(config), "r")
    out = tmp_path / "resources" / "r" / "zones" / "permafrost_zone"
    paths = [fetch_zone_file(region, "permafrost_zone", f"permaice.{ext}", out / f"permaice.{ext}")
             for ext in parts]
    assert [p.read_bytes() for p in paths] == list(parts.values())
    manifest = read_manifest(out / "permaice.shp.json")
    assert manifest["items"][0]["url"] == urls["shp"]
    pinned = json.loads(lock_path(region.path).read_text())["files"]
    assert pinned == {urls[ext]: {"sha256": sha(data), "size": len(data)}
                      for ext, data in parts.items()}
    assert prepare_zone_layer(region, "permafrost_zone", paths, tmp_path / "zones.geojson") == {
        "C": 1, "D": 1}


def test_without_mdtm_a_cut_transfer_is_resumed_only_with_a_checksum(tmp_path, payload,
                                                                      monkeypatch):
    """No modification time to guard a resume (SIZE only): without a checksum the rest could be
    another version's bytes, so the file is read again from byte 0; with one, it is resumed."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with LoopbackFTP(tmp_path / "root", without=("MDTM",)) as ftp:
        url = ftp.add_file(SHP, payload)

        def replace() -> None:
            (ftp.root / SHP.lstrip("/")).write_bytes(payload[::-1])

        ftp.cut(SHP, 100_000, then=replace)
        download(url, tmp_path / "a.shp", **FAST)
        assert (tmp_path / "a.shp").read_bytes() == payload[::-1]
        assert not any(c.startswith("REST") for c in ftp.commands)

        ftp.commands.clear()
        ftp.cut(SHP, 100_000)
        download(url, tmp_path / "b.shp", sha256=sha(payload[::-1]), **FAST)
        assert "REST 100000" in ftp.commands
