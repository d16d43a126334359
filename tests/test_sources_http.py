"""Downloads against a loopback server: retries, Retry-After, resume, checksums, stalls; manifests;
fetching http and file sources."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from httpserver import (
    LoopbackServer,
    cut,
    ignore_if_range,
    ignore_range,
    stall,
    status,
    trickle,
)

from mapper.config import load_config, load_region
from mapper.errors import InputError, SourceError
from mapper.sources.fetch import fetch_source, http_file_name, manifest_path
from mapper.sources.http import (
    download,
    parse_content_range,
    remember_validator,
    retry_after_seconds,
)
from mapper.sources.manifest import make_manifest, read_manifest, write_manifest

FAST = {"backoff": 0.001, "timeout": 2.0}


@pytest.fixture()
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture()
def payload() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(dest: Path) -> list[Path]:
    return sorted(dest.parent.glob(dest.name + "*"))


def test_download_verifies_and_returns_the_manifest_entry(server, payload, tmp_path):
    url = server.add_file("/data/a.tif", payload)
    dest = tmp_path / "sub" / "a.tif"
    entry = download(url, dest, sha256=sha(payload), size=len(payload), **FAST)
    assert dest.read_bytes() == payload
    assert entry["url"] == url and entry["path"] == str(dest)
    assert entry["size"] == len(payload) and entry["sha256"] == sha(payload)
    assert entry["etag"] == server.etags["/data/a.tif"] and "last_modified" in entry
    assert leftovers(dest) == [dest]


def test_retries_after_503(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", status(503), status(502))
    entry = download(url, tmp_path / "a.bin", sha256=sha(payload), **FAST)
    assert entry["size"] == len(payload)
    assert [r["status"] for r in server.requests_for("/a.bin")] == [503, 502, 200]


def test_honours_retry_after_on_429(server, payload, tmp_path, monkeypatch):
    import mapper.sources.http as http_module

    waits = []
    monkeypatch.setattr(http_module.time, "sleep", waits.append)
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", status(429, retry_after="7"))
    download(url, tmp_path / "a.bin", sha256=sha(payload), **FAST)
    assert waits == [7.0]  # waited as asked, not the 1 ms backoff
    assert [r["status"] for r in server.requests_for("/a.bin")] == [429, 200]


def test_resumes_with_range_after_a_cut_connection(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    half = len(payload) // 2
    server.add_faults("/a.bin", cut(half))
    dest = tmp_path / "a.bin"
    download(url, dest, sha256=sha(payload), size=len(payload), **FAST)
    assert dest.read_bytes() == payload
    first, second = server.requests_for("/a.bin")
    assert "Range" not in first["headers"]
    assert second["headers"]["Range"] == f"bytes={half}-"
    assert second["headers"]["If-Range"] == server.etags["/a.bin"]
    assert second["status"] == 206
    assert leftovers(dest) == [dest]


def test_downloads_whole_when_the_server_ignores_range(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", cut(len(payload) // 3), ignore_range())
    dest = tmp_path / "a.bin"
    download(url, dest, sha256=sha(payload), **FAST)
    assert dest.read_bytes() == payload
    statuses = [r["status"] for r in server.requests_for("/a.bin")]
    assert statuses == [200, 200]  # the second asked for a range and got the whole file


def test_file_changed_upstream_between_attempts_is_fetched_whole(
    server, payload, tmp_path, monkeypatch
):
    import mapper.sources.http as http_module

    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", cut(1000))
    old_etag = server.etags["/a.bin"]
    real_sleep = time.sleep

    def replace_while_waiting(seconds: float) -> None:  # the object changes before the retry
        server.add_file("/a.bin", payload[::-1])
        real_sleep(seconds)

    monkeypatch.setattr(http_module.time, "sleep", replace_while_waiting)
    dest = tmp_path / "a.bin"
    download(url, dest, **FAST)
    assert dest.read_bytes() == payload[::-1]  # no mix of old and new bytes
    second = server.requests_for("/a.bin")[1]
    assert second["headers"]["If-Range"] == old_etag and second["status"] == 200


def test_refuses_a_checksum_mismatch_and_leaves_nothing(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    wrong = "0" * 64
    with pytest.raises(SourceError) as err:
        download(url, dest, sha256=wrong, **FAST)
    msg = str(err.value)
    assert url in msg and str(dest) in msg and wrong in msg and "sha256" in msg
    assert "region file" in msg
    assert leftovers(dest) == []
    assert len(server.requests_for("/a.bin")) == 1  # a mismatch is not retried


def test_refuses_a_wrong_size_and_leaves_nothing(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    with pytest.raises(SourceError, match=rf"{len(payload)} bytes.*{len(payload) + 10}"):
        download(url, dest, size=len(payload) + 10, **FAST)
    assert leftovers(dest) == []


def test_stalled_body_times_out_then_resumes(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    stalled = stall(50_000, seconds=60.0)
    server.add_faults("/a.bin", stalled)
    dest = tmp_path / "a.bin"
    download(url, dest, sha256=sha(payload), backoff=0.001, timeout=0.3)
    assert not stalled.over.is_set()  # the read timeout gave up before the server closed
    assert dest.read_bytes() == payload
    second = server.requests_for("/a.bin")[1]
    assert second["headers"]["Range"] == "bytes=50000-" and second["status"] == 206


def test_a_trickling_body_is_cut_at_the_low_speed_limit_then_resumes(
    server, payload, tmp_path, monkeypatch, caplog
):
    """A server that sends one byte within every read timeout never times out: below
    LOW_SPEED_BYTES_PER_S over LOW_SPEED_SECONDS the attempt is cut, its bytes kept, and the
    next one resumes with Range (here 0.5 s windows; a byte every 0.05 s, 60 at the most)."""
    import mapper.sources.transfer as transfer

    monkeypatch.setattr(transfer, "LOW_SPEED_SECONDS", 0.5)
    url = server.add_file("/a.bin", payload)
    slow = trickle(50_000, seconds=0.05)
    server.add_faults("/a.bin", slow)
    dest = tmp_path / "a.bin"
    with caplog.at_level(logging.WARNING, logger="mapper.sources.http"):
        download(url, dest, sha256=sha(payload), backoff=0.001, timeout=2.0)
    assert dest.read_bytes() == payload
    assert "transfer slower than 1024 B/s for 0.5 s, after 500" in caplog.text
    second = server.requests_for("/a.bin")[1]
    start = int(second["headers"]["Range"].removeprefix("bytes=").removesuffix("-"))
    assert 50_000 < start < 50_060 and second["status"] == 206  # some trickled bytes kept


def test_a_server_that_trickles_every_time_uses_up_the_retries(server, payload, tmp_path,
                                                               monkeypatch):
    """Each low-speed cut adds bytes yet counts as a failed attempt: a server that trickles on
    every attempt ends the download after its retries, not after the cap on all attempts."""
    import mapper.sources.transfer as transfer

    monkeypatch.setattr(transfer, "LOW_SPEED_SECONDS", 0.3)
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", *[trickle(1000 * (k + 1), seconds=0.05) for k in range(10)])
    dest = tmp_path / "a.bin"
    with pytest.raises(SourceError) as err:
        download(url, dest, sha256=sha(payload), retries=2, backoff=0.001, timeout=2.0)
    assert "transfer slower than 1024 B/s for 0.3 s" in str(err.value)
    assert "gave up after 3 attempts" in str(err.value)
    assert len(server.requests_for("/a.bin")) == 3
    part = tmp_path / "a.bin.part"  # resumable: the record vouches for it, the sha256 checks it
    assert f"bytes received are kept in {part} and the next run resumes from them" in str(
        err.value)
    assert leftovers(dest) == [part, tmp_path / "a.bin.part.validator"]


def test_a_body_whose_last_bytes_come_late_is_not_cut(tmp_path, monkeypatch) -> None:
    """The low-speed limit cuts a body that goes on too slowly, never one that has ended: the
    last chunk after a slow minute completes the file (here on a clock that the reads move)."""
    import mapper.sources.transfer as transfer

    clock = [0.0]
    monkeypatch.setattr(transfer.time, "monotonic", lambda: clock[0])
    chunks = iter([(1.0, b"a" * 500), (60.0, b"b" * 500), (0.0, b"")])

    def read() -> bytes:
        wait, chunk = next(chunks)  # the last 500 bytes a minute after the first: 16 B/s
        clock[0] += wait
        return chunk

    part = tmp_path / "x.part"
    digest, n = transfer.write_body("http://x", part, 0, 1000, 1000, ("the region file", "fix"),
                                    read, (OSError,))
    assert n == 1000 and part.read_bytes() == b"a" * 500 + b"b" * 500
    assert digest == hashlib.sha256(part.read_bytes()).hexdigest()


def test_bounded_retries_then_a_clear_error(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", *[status(503)] * 10)
    dest = tmp_path / "a.bin"
    with pytest.raises(SourceError) as err:
        download(url, dest, retries=2, **FAST)
    msg = str(err.value)
    assert url in msg and str(dest) in msg and "503" in msg and "3 attempts" in msg
    assert "check the URL" in msg
    assert len(server.requests_for("/a.bin")) == 3
    assert leftovers(dest) == []


def test_retries_run_out_then_the_next_run_resumes_from_the_bytes_kept(server, payload,
                                                                       tmp_path):
    """An outage longer than the retries (a 10 GB archive cut at 9 GB): the bytes received stay
    in the ``.part`` with their record, named in the error, and the next run asks for the rest
    under If-Range instead of starting again from byte 0."""
    url = server.add_file("/a.bin", payload)
    # the first attempt keeps 10 kB; the next two add nothing: retries=1 is spent
    server.add_faults("/a.bin", cut(10_000), cut(0), cut(0))
    dest = tmp_path / "a.bin"
    part = tmp_path / "a.bin.part"
    with pytest.raises(SourceError, match=r"(transfer cut|closed after).*gave up after 3 attempts"
                                          rf"; the 10000 bytes received are kept in {part} and "
                                          r"the next run resumes from them\); check the URL"):
        download(url, dest, retries=1, **FAST)
    assert leftovers(dest) == [part, tmp_path / "a.bin.part.validator"]
    assert [r["headers"].get("Range") for r in server.requests_for("/a.bin")] == [
        None, "bytes=10000-", "bytes=10000-"]
    download(url, dest, retries=1, **FAST)  # the next run, no sha256: the record vouches
    assert dest.read_bytes() == payload and leftovers(dest) == [dest]
    last = server.requests_for("/a.bin")[-1]
    assert last["headers"]["Range"] == "bytes=10000-" and last["status"] == 206
    assert last["headers"]["If-Range"] == server.etags["/a.bin"]


def test_retries_run_out_without_anything_to_resume_against_remove_the_part(server, payload,
                                                                            tmp_path):
    """No ETag or Last-Modified and no sha256: nothing would tell the kept bytes from another
    version's, so nothing is kept."""
    url = server.add_file("/a.bin", payload, validators=False)
    server.add_faults("/a.bin", cut(10_000), cut(0), cut(0), cut(0))
    dest = tmp_path / "a.bin"
    with pytest.raises(SourceError, match=r"gave up after \d attempts\); check the URL"):
        download(url, dest, retries=1, **FAST)
    assert leftovers(dest) == []


@pytest.mark.parametrize("stated_size", [False, True])
def test_a_present_file_with_another_sha256_is_not_left_when_its_download_fails(
    server, payload, tmp_path, stated_size: bool
) -> None:
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", *[status(404)])
    dest = tmp_path / "a.bin"
    dest.write_bytes(b"an older version")
    with pytest.raises(SourceError, match="404"):
        download(url, dest, sha256=sha(payload), size=len(payload) if stated_size else None,
                 **FAST)
    assert leftovers(dest) == []


def test_cuts_that_each_add_bytes_do_not_spend_the_retries(server, payload, tmp_path):
    """A long file on a link that drops now and then: every attempt resumes further on, so five
    cuts with retries=1 still end in the whole, verified file."""
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", *[cut(10_000)] * 5)
    dest = tmp_path / "a.bin"
    download(url, dest, sha256=sha(payload), retries=1, **FAST)
    assert dest.read_bytes() == payload and leftovers(dest) == [dest]
    ranges = [r["headers"].get("Range") for r in server.requests_for("/a.bin")]
    assert ranges == [None] + [f"bytes={10_000 * k}-" for k in range(1, 6)]


def test_404_is_not_retried(server, tmp_path):
    dest = tmp_path / "x.bin"
    with pytest.raises(SourceError, match="HTTP 404"):
        download(server.url("/missing.bin"), dest, retries=3, **FAST)
    assert len(server.requests_for("/missing.bin")) == 1
    assert leftovers(dest) == []


def test_connection_refused_is_retried_then_reported(tmp_path):
    with LoopbackServer() as srv:
        url = srv.url("/a.bin")  # the port is closed after this block
    with pytest.raises(SourceError, match="connection failed.*2 attempts"):
        download(url, tmp_path / "a.bin", retries=1, **FAST)


def test_a_verified_existing_file_is_not_downloaded_again(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    dest.write_bytes(payload)
    entry = download(url, dest, sha256=sha(payload), **FAST)
    assert entry["sha256"] == sha(payload)
    assert server.requests_for("/a.bin") == []


def test_a_download_is_vetted_before_it_takes_its_name(server, payload, tmp_path):
    url = server.add_file("/a.tif", payload)
    dest = tmp_path / "a.tif"
    seen = []

    def vet(path: Path) -> None:
        seen.append((path, path.read_bytes() == payload, dest.exists()))

    download(url, dest, vet=vet, **FAST)
    assert seen == [(tmp_path / "a.tif.part", True, False)]
    assert dest.read_bytes() == payload and leftovers(dest) == [dest]

    def refuse(path: Path) -> None:
        raise InputError(f"{path}: not a raster")

    other = tmp_path / "b.tif"
    with pytest.raises(InputError, match=r"b\.tif\.part: not a raster"):
        download(url, other, vet=refuse, **FAST)
    assert leftovers(other) == []
    # a present file that matches its checksum is vetted in place, and deleted when refused
    with pytest.raises(InputError, match=r"a\.tif: not a raster"):
        download(url, dest, sha256=sha(payload), vet=refuse, **FAST)
    assert leftovers(dest) == [] and len(server.requests_for("/a.tif")) == 2


def test_header_parsing():
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("100000") == 300.0  # capped
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None
    from datetime import UTC, datetime

    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now=now) == 30.0
    assert parse_content_range("bytes 100-199/1000") == (100, 199, 1000)
    assert parse_content_range("bytes 0-9/*") == (0, 9, None)
    assert parse_content_range("items 0-9/10") is None


# -- manifests ----------------------------------------------------------------------------------
def test_manifest_round_trip_and_errors(tmp_path):
    m = make_manifest(
        "r",
        "dem",
        "http",
        [{"url": "http://x/a.tif", "path": "a.tif", "size": 3, "sha256": "ab" * 32}],
        tile="R0001C0002",
    )
    path = write_manifest(tmp_path / "m.json", m)
    back = read_manifest(path)
    assert back == m and back["synthetic"] is False and back["tile"] == "R0001C0002"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left
    with pytest.raises(InputError, match="not found"):
        read_manifest(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="bad.json: not a mapper source manifest"):
        read_manifest(tmp_path / "bad.json")


# -- fetch: http and file sources ---------------------------------------------------------------
def test_fetch_http_source_downloads_every_file_with_manifests(
    server, payload, tmp_path, fetch_config
):
    other = payload[:1000]
    url_a = server.add_file("/dir/a%20b.tif", payload)
    url_b = server.add_file("/dir/b.csv", other)
    sources = {
        "climate": {
            "kind": "http",
            "files": [
                {"url": url_a, "sha256": sha(payload), "size": len(payload)},
                {"url": url_b + "?x=1", "name": "obs.csv"},
            ],
        }
    }
    region = load_region(load_config(fetch_config(sources)), "r")
    out = tmp_path / "resources" / "r" / "sources"
    path = fetch_source(region, "climate", out)
    assert path == out / "climate" / "manifest.json"
    m = read_manifest(path)
    assert m["kind"] == "http" and m["source"] == "climate" and m["region"] == "r"
    assert [Path(i["path"]).name for i in m["items"]] == ["a%20b.tif", "obs.csv"]
    assert m["items"][1]["sha256"] == sha(other)  # recorded although the region gave none
    assert (out / "climate" / "a%20b.tif").read_bytes() == payload
    assert read_manifest(manifest_path(out, "climate", file="obs.csv"))["items"][0]["size"] == 1000

    # The file without a sha256 in the region file is pinned by the region's lock file at its
    # first download; the pinned one is not recorded there.
    lock = json.loads((tmp_path / "r.lock.json").read_text())["files"]
    assert lock == {url_b + "?x=1": {"sha256": sha(other), "size": 1000}}

    # A rerun finds both files unchanged: no download (the second one checked against the lock).
    n = len(server.log)
    fetch_source(region, "climate", out)
    assert len(server.log) == n

    # One file only (as the workflow's per-file jobs do).
    (out / "climate" / "obs.csv").unlink()
    one = fetch_source(region, "climate", out, file="obs.csv")
    assert one == out / "climate" / "obs.csv.json"
    assert (
        len(server.requests_for("/dir/b.csv")) == 2
        and len(server.requests_for("/dir/a%20b.tif")) == 1
    )



def test_fetch_http_source_unpinned_file_that_changed_upstream_is_one_error(
    server, payload, tmp_path, fetch_config
):
    """A file the region file gives no sha256 for is held to its first download's checksum (the
    lock file): changed upstream, it is one error naming the lock and the fix, with the file
    that was there removed and no partial file left."""
    url = server.add_file("/zones.zip", payload)
    region = load_region(
        load_config(fetch_config({"climate": {"kind": "http", "files": [{"url": url}]}})), "r"
    )
    out = tmp_path / "src"
    fetch_source(region, "climate", out)
    server.add_file("/zones.zip", payload[::-1])
    (out / "climate" / "zones.zip").unlink()  # e.g. a fresh working tree: download again
    lock = tmp_path / "r.lock.json"
    with pytest.raises(SourceError, match=rf"zones.zip.*{re.escape(str(lock))}.*delete the entry"):
        fetch_source(region, "climate", out)
    left = sorted(p.name for p in (out / "climate").iterdir())
    assert left == ["manifest.json", "zones.zip.json"]
    # Accepting the new version on purpose: delete the lock file's entry and fetch again.
    lock.unlink()
    fetch_source(region, "climate", out)
    assert (out / "climate" / "zones.zip").read_bytes() == payload[::-1]

    # A size given without a sha256 is checked too.
    region = load_region(load_config(fetch_config(
        {"climate": {"kind": "http", "files": [{"url": url, "size": 5}]}})), "r")
    lock.unlink()
    (out / "climate" / "zones.zip").unlink()
    with pytest.raises(SourceError, match=r"zones.zip -> .*: got \d+ bytes, .* states 5;"):
        fetch_source(region, "climate", out)
    assert not (out / "climate" / "zones.zip").exists() and not lock.exists()

def test_http_file_name():
    assert http_file_name({"url": "https://h/x/dem%201.tif?sig=abc"}) == "dem%201.tif"
    assert http_file_name({"url": "https://h/x/y", "name": "z.tif"}) == "z.tif"


def _tiny_raster(path: Path) -> None:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=4,
        height=3,
        count=1,
        dtype="float32",
        crs="EPSG:3338",
        transform=Affine(10, 0, 0, 0, -10, 0),
        nodata=-9999,
    ) as dst:
        dst.write(np.arange(12, dtype="float32").reshape(1, 3, 4))


def test_fetch_file_source_records_size_and_sha256(tmp_path, monkeypatch, fetch_config):
    monkeypatch.chdir(tmp_path)
    _tiny_raster(tmp_path / "dem.tif")
    (tmp_path / "obs.csv").write_text(
        "obs_id,lon,lat,date,nsp,soil_order\na,-148,64,2020-01-01,1,\n"
    )
    sources = {
        "dem": {"kind": "file", "path": "dem.tif"},
        "observations": {"kind": "file", "path": "obs.csv"},
    }
    region = load_region(load_config(fetch_config(sources)), "r")
    m = read_manifest(fetch_source(region, "dem", "out"))
    item = m["items"][0]
    assert item["path"] == "dem.tif" and "url" not in item
    assert item["size"] == (tmp_path / "dem.tif").stat().st_size
    assert item["sha256"] == sha((tmp_path / "dem.tif").read_bytes())
    assert m["format"] == "raster" and m["raster"]["crs"] == "EPSG:3338"
    m = read_manifest(fetch_source(region, "observations", "out"))
    assert m["format"] == "table" and m["table"]["columns"][:3] == ["obs_id", "lon", "lat"]


def test_fetch_file_source_errors_name_the_path(tmp_path, monkeypatch, fetch_config):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "obs.csv").write_text("id,lon,lat\n1,2,3\n")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    sources = {
        "dem": {"kind": "file", "path": "nowhere/dem.vrt"},
        "climate": {"kind": "file", "path": "bad.tif"},
        "observations": {"kind": "file", "path": "obs.csv"},
    }
    region = load_region(load_config(fetch_config(sources)), "r")
    with pytest.raises(InputError, match=r"nowhere/dem.vrt: source 'dem' of region 'r' not found"):
        fetch_source(region, "dem", "out")
    with pytest.raises(InputError, match=r"bad.tif: cannot be read as a raster"):
        fetch_source(region, "climate", "out")
    with pytest.raises(InputError, match=r"obs.csv: missing column\(s\) obs_id, date"):
        fetch_source(region, "observations", "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.json"))


def test_fetch_reads_observations_as_the_samples_stage_does(tmp_path, monkeypatch, fetch_config):
    """Column names matched ignoring case and spaces, Parquet recognised under any name."""
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    (tmp_path / "obs.csv").write_text(
        "OBS_ID, Lon ,Lat,Date,NSP,Soil_Order\nA1,-147.7,64.8,2019-07-01,1,Gelisols\n")
    pd.DataFrame({"obs_id": ["A1"], "lon": [-147.7], "lat": [64.8], "date": ["2019-07-01"],
                  "nsp": [1], "soil_order": ["Gelisols"]}).to_parquet(tmp_path / "table.csv")
    for path in ("obs.csv", "table.csv"):
        sources = {"observations": {"kind": "file", "path": path}}
        region = load_region(load_config(fetch_config(sources)), "r")
        m = read_manifest(fetch_source(region, "observations", f"out_{path}"))
        assert m["table"]["rows"] == 1, path
        assert m["table"]["columns"][:4] == ["obs_id", "lon", "lat", "date"], path


def test_cli_fetch_prints_the_manifest(server, payload, tmp_path, capsys, fetch_config):
    from mapper.cli import main

    url = server.add_file("/c.tif", payload)
    config = fetch_config({"climate": {"kind": "http", "files": [{"url": url}]}})
    out = tmp_path / "src"
    # The workflow's form: --out names the target file inside <sources>/<source>/.
    rc = main(
        [
            "fetch",
            "--config",
            str(config),
            "--region",
            "r",
            "--source",
            "climate",
            "--file",
            "c.tif",
            "--out",
            str(out / "climate" / "c.tif"),
        ]
    )
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out / "climate" / "c.tif.json")
    assert (out / "climate" / "c.tif").read_bytes() == payload
    rc = main(
        [
            "fetch",
            "--config",
            str(config),
            "--region",
            "r",
            "--source",
            "climate",
            "--file",
            "nope.tif",
            "--out",
            str(out),
        ]
    )
    assert rc == 1 and "no file 'nope.tif'" in capsys.readouterr().err


def test_a_part_file_from_an_earlier_run_is_resumed_only_with_a_checksum(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    part = tmp_path / "a.bin.part"
    part.write_bytes(payload[:1000])
    download(url, dest, sha256=sha(payload), **FAST)
    assert dest.read_bytes() == payload
    assert server.requests_for("/a.bin")[0]["headers"]["Range"] == "bytes=1000-"

    dest.unlink()
    part.write_bytes(b"x" * 1000)  # e.g. bytes of an older version of the file
    download(url, dest, **FAST)
    assert dest.read_bytes() == payload
    assert "Range" not in server.requests_for("/a.bin")[1]["headers"]

    # With a checksum, a stale part that does not match is caught and fetched whole.
    dest.unlink()
    part.write_bytes(b"x" * 1000)
    download(url, dest, sha256=sha(payload), **FAST)
    assert dest.read_bytes() == payload
    assert [r["status"] for r in server.requests_for("/a.bin")[2:]] == [206, 200]


def killed_mid_download(url: str, dest: Path, nbytes: int) -> None:
    """A download of ``url`` to ``dest`` in another process, without a sha256, killed (SIGKILL:
    a cluster job past its time limit) once ``nbytes`` are in its ``.part``."""
    part = dest.with_name(dest.name + ".part")
    code = ("import sys; from mapper.sources.http import download; "
            "download(sys.argv[1], sys.argv[2], timeout=60)")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest)])
    deadline = time.monotonic() + 60
    try:
        while not (part.exists() and part.stat().st_size >= nbytes):
            assert proc.poll() is None, "the download ended before it was killed"
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()


def test_a_part_file_of_a_killed_job_is_resumed_against_its_etag(server, payload, tmp_path):
    """A job killed halfway through a file whose sha256 nobody knows yet (the first statewide
    run of a SNAP archive) leaves its bytes and the ETag they came with: the next job asks for
    the rest under If-Range, and nothing is left beside the file. Changed upstream in between,
    the file comes whole (the If-Range does not match: the server answers 200), never half of
    each version."""
    url = server.add_file("/a.bin", payload)
    etag = server.etags["/a.bin"]
    half = len(payload) // 2
    dest = tmp_path / "a.bin"
    server.add_faults("/a.bin", stall(half, 5.0))
    killed_mid_download(url, dest, half)
    assert sorted(p.name for p in leftovers(dest)) == ["a.bin.part", "a.bin.part.validator"]
    entry = download(url, dest, **FAST)
    assert dest.read_bytes() == payload and entry["sha256"] == sha(payload)
    resumed = server.requests_for("/a.bin")[-1]
    assert resumed["headers"]["Range"] == f"bytes={half}-"
    assert resumed["headers"]["If-Range"] == etag and resumed["status"] == 206
    assert leftovers(dest) == [dest]

    dest.unlink()
    server.add_faults("/a.bin", stall(half, 5.0))
    killed_mid_download(url, dest, half)
    server.add_file("/a.bin", payload[::-1])  # a new version, with a new ETag
    entry = download(url, dest, **FAST)
    assert dest.read_bytes() == payload[::-1] and entry["sha256"] == sha(payload[::-1])
    again = server.requests_for("/a.bin")[-1]
    assert again["headers"]["If-Range"] == etag and again["status"] == 200
    assert leftovers(dest) == [dest]


def test_a_206_of_another_version_is_not_joined_to_the_kept_bytes(server, payload, tmp_path):
    """A server that honours Range but ignores If-Range answers 206 with the new version's
    ETag: the kept bytes are dropped and the file fetched whole, not joined to another
    version's rest."""
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    server.add_faults("/a.bin", stall(1000, 5.0))
    killed_mid_download(url, dest, 1000)
    server.add_file("/a.bin", payload[::-1])
    server.add_faults("/a.bin", ignore_if_range())
    entry = download(url, dest, **FAST)
    assert dest.read_bytes() == payload[::-1] and entry["sha256"] == sha(payload[::-1])
    assert [r["status"] for r in server.requests_for("/a.bin")[1:]] == [206, 200]
    assert leftovers(dest) == [dest]


def test_a_part_resumed_on_a_checksum_alone_is_not_vouched_for(server, payload, tmp_path):
    """Bytes of unknown origin (a ``.part`` without a record, resumed because the sha256 would
    catch a mix) get no record: killed again, the next job without the checksum (its lock entry
    deleted to accept a new version) discards them rather than trust them."""
    url = server.add_file("/a.bin", payload)
    dest = tmp_path / "a.bin"
    part = tmp_path / "a.bin.part"
    part.write_bytes(payload[:1000])
    server.add_faults("/a.bin", stall(2000, 5.0))
    code = ("import sys; from mapper.sources.http import download; "
            "download(sys.argv[1], sys.argv[2], sha256=sys.argv[3], timeout=60)")
    proc = subprocess.Popen([sys.executable, "-c", code, url, str(dest), sha(payload)])
    try:
        deadline = time.monotonic() + 60
        while part.stat().st_size < 3000:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()
    assert server.requests_for("/a.bin")[0]["headers"]["Range"] == "bytes=1000-"
    assert leftovers(dest) == [part]  # no record vouches for the first 1000 bytes
    download(url, dest, **FAST)
    assert dest.read_bytes() == payload
    assert "Range" not in server.requests_for("/a.bin")[-1]["headers"]


def test_a_complete_part_file_with_its_record_is_not_fetched_again(server, payload, tmp_path):
    """A job killed between the last byte and the rename (while the file was vetted) leaves a
    whole ``.part`` and its record: without a checksum the server's 416 to the If-Range request
    says the file is complete and unchanged; it is taken as it is."""
    url = server.add_file("/a.bin", payload)
    dest, part = tmp_path / "a.bin", tmp_path / "a.bin.part"
    part.write_bytes(payload)
    remember_validator(part, url, server.etags["/a.bin"])
    entry = download(url, dest, **FAST)
    assert dest.read_bytes() == payload and entry["sha256"] == sha(payload)
    assert [r["status"] for r in server.requests_for("/a.bin")] == [416]
    assert leftovers(dest) == [dest]


def test_a_part_file_recorded_for_another_url_is_not_resumed(server, payload, tmp_path):
    """The record beside a ``.part`` names its URL: after the region file's URL changed under
    the same file name, the bytes of the old URL are discarded."""
    old = server.add_file("/v1/a.bin", payload[::-1])
    new = server.add_file("/v2/a.bin", payload)
    dest = tmp_path / "a.bin"
    server.add_faults("/v1/a.bin", stall(1000, 5.0))
    killed_mid_download(old, dest, 1000)
    download(new, dest, **FAST)
    assert dest.read_bytes() == payload
    assert "Range" not in server.requests_for("/v2/a.bin")[0]["headers"]
    assert leftovers(dest) == [dest]


def test_bytes_resumed_without_if_range_get_no_record(server, payload, tmp_path, monkeypatch):
    """A first answer without ETag or Last-Modified, cut; the file changes; the resume (on the
    sha256 alone, without If-Range) gets the new version's rest under its new ETag. The part now
    holds two versions: no record may vouch for it under that ETag, or a later job without the
    checksum would finish it under If-Range. Killed there, the job leaves the part alone."""
    import mapper.sources.http as http_module

    url = server.add_file("/a.bin", payload, validators=False)
    server.add_faults("/a.bin", cut(1000))
    waits = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 1:  # before the resume: a new version, with an ETag
            server.add_file("/a.bin", payload[::-1])
            server.add_faults("/a.bin", cut(1000))
        else:  # the job is killed before its next attempt
            raise KeyboardInterrupt

    monkeypatch.setattr(http_module.time, "sleep", sleep)
    dest = tmp_path / "a.bin"
    with pytest.raises(KeyboardInterrupt):
        download(url, dest, sha256=sha(payload), **FAST)
    resumed = server.requests_for("/a.bin")[1]
    assert resumed["headers"]["Range"] == "bytes=1000-" and "If-Range" not in resumed["headers"]
    assert resumed["status"] == 206
    assert leftovers(dest) == [tmp_path / "a.bin.part"]


def test_without_etag_or_last_modified_a_cut_download_is_fetched_whole(
    server, payload, tmp_path, monkeypatch
):
    """Nothing to send as If-Range: the rest of a cut transfer could be another version's bytes,
    so the file is fetched whole again, unless its sha256 is known to catch a mix."""
    import mapper.sources.http as http_module

    url = server.add_file("/a.bin", payload, validators=False)
    server.add_faults("/a.bin", cut(1000))
    real_sleep = time.sleep

    def replace_while_waiting(seconds: float) -> None:  # the file changes before the retry
        server.add_file("/a.bin", payload[::-1], validators=False)
        real_sleep(seconds)

    monkeypatch.setattr(http_module.time, "sleep", replace_while_waiting)
    dest = tmp_path / "a.bin"
    entry = download(url, dest, **FAST)
    assert dest.read_bytes() == payload[::-1]  # not 1000 old bytes and the new file's rest
    assert entry["sha256"] == sha(payload[::-1]) and "etag" not in entry
    assert "Range" not in server.requests_for("/a.bin")[1]["headers"]

    monkeypatch.setattr(http_module.time, "sleep", real_sleep)
    server.add_faults("/a.bin", cut(1000))
    dest.unlink()
    download(url, dest, sha256=sha(payload[::-1]), **FAST)  # a checksum to check the whole
    assert server.requests_for("/a.bin")[-1]["headers"]["Range"] == "bytes=1000-"


def test_a_complete_part_file_is_checked_not_fetched_again(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    dest, part = tmp_path / "a.bin", tmp_path / "a.bin.part"
    part.write_bytes(payload)  # a job killed between the last byte and the rename
    download(url, dest, sha256=sha(payload), size=len(payload), **FAST)
    assert dest.read_bytes() == payload and server.requests_for("/a.bin") == []
    dest.unlink()
    part.write_bytes(payload)
    download(url, dest, sha256=sha(payload), **FAST)  # size unknown: the server says 416
    assert dest.read_bytes() == payload and leftovers(dest) == [dest]
    assert [r["status"] for r in server.requests_for("/a.bin")] == [416]


def test_408_request_timeout_is_retried(server, payload, tmp_path):
    url = server.add_file("/a.bin", payload)
    server.add_faults("/a.bin", status(408))
    download(url, tmp_path / "a.bin", sha256=sha(payload), **FAST)
    assert [r["status"] for r in server.requests_for("/a.bin")] == [408, 200]
