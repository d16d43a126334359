"""Climate normals from SNAP's monthly archives (mapper.sources.snap): the derivation against
values worked out by hand, nodata, the error cases, downloads from a loopback server, the CLI and
the workflow's plan.

The fixture archives have the layout of SNAP's 2 km CRU TS 4.0 downloads
(``pr_AK_CAN_2km_CRU_TS40_historical.zip`` holding
``pr/pr_total_mm_CRU_TS40_historical_MM_YYYY.tif``, likewise ``tas/`` and ``tasmin/``):
single-band float32 GeoTIFFs in EPSG:3338 at 2 km with nodata -9999, on a 4 x 5 px grid instead
of SNAP's thousands of pixels.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from httpserver import LoopbackServer, cut
from snap_archives import (
    OUTSIDE,
    PERIOD,
    PR_HOLE,
    PREFIXES,
    REGION_BOUNDS,
    SHAPE,
    TAS_HOLE,
    TASMIN_HOLE,
    TRANSFORM,
    archive_bytes,
    field,
    geotiff,
    write_archives,
)
from tiny_region import write_region_file, write_tiny_region

from mapper.bands import CLIMATE_BANDS
from mapper.config import load_config, load_region
from mapper.errors import InputError, SourceError
from mapper.sources.fetch import fetch_source
from mapper.sources.lock import LockFile, lock_path
from mapper.sources.manifest import read_manifest
from mapper.sources.snap import derive_normals, fetch_snap


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".zip"))


# -- derivation ---------------------------------------------------------------------------------
def test_normals_match_values_worked_out_by_hand(tmp_path):
    out = derive_normals(write_archives(tmp_path / "in"), PREFIXES, PERIOD, tmp_path / "n.tif")
    with rasterio.open(out) as src:
        assert src.descriptions == tuple(CLIMATE_BANDS)
        assert src.dtypes == ("float32",) * 3 and src.nodata == -9999.0
        assert src.crs.to_epsg() == 3338 and src.transform == TRANSFORM
        assert src.shape == SHAPE
        data = src.read(masked=True)
    precip, warmth, tmin = data
    # precip: (1+2+...+12) = 78 mm in 2000, 78 + 12 x 10 = 198 mm in 2001; mean 138
    assert precip[0, 0] == pytest.approx(138.0)
    # warmth, column 0 (+2 C every day): 2 x 366 in 2000, 2 x 365 in 2001; mean 731 (730 if
    # February 2000 had 28 days)
    assert warmth[0, 0] == pytest.approx(731.0)
    # elsewhere month - 6.5 C: only July..December above 0 C, in both years:
    # 0.5x31 + 1.5x31 + 2.5x30 + 3.5x31 + 4.5x30 + 5.5x31 = 551 degree-days
    assert warmth[0, 1] == pytest.approx(551.0)
    # January minima -20 and -31 C: mean -25.5 (the +50 C of other months unread)
    assert tmin[0, 0] == pytest.approx(-25.5)
    assert float(data.max()) < OUTSIDE / 10  # no trace of 1999 or 2002


def test_nodata_in_one_month_is_nodata_in_that_band_only(tmp_path):
    out = derive_normals(write_archives(tmp_path / "in"), PREFIXES, PERIOD, tmp_path / "n.tif")
    with rasterio.open(out) as src:
        mask = src.read(masked=True).mask
    expected = np.zeros((3, *SHAPE), bool)
    expected[0][PR_HOLE] = True  # pr nodata in July 2001
    expected[1][TAS_HOLE] = True  # tas -3.4e38 in March 2000
    expected[2][TASMIN_HOLE] = True  # tasmin nodata in January 2001
    assert (mask == expected).all()


def test_members_outside_the_period_are_never_read(tmp_path):
    broken = {f"tas/{PREFIXES['tas']}_01_1999.tif": b"not a GeoTIFF at all"}
    archives = write_archives(tmp_path / "in", tas=archive_bytes("tas", members=broken))
    derive_normals(archives, PREFIXES, PERIOD, tmp_path / "n.tif")
    with pytest.raises(
        InputError, match=r"snap_tas\.zip!tas/tas_mean_C_CRU_TS40_historical_01_1999"
    ):
        derive_normals(archives, PREFIXES, [1999, 2000], tmp_path / "m.tif")
    assert not (tmp_path / "m.tif").exists()


def test_prefix_spelled_with_a_hyphen_is_the_same_series(tmp_path):
    tasmin = archive_bytes("tasmin", prefix="tasmin_mean_C_CRU-TS40_historical")
    archives = write_archives(tmp_path / "in", tasmin=tasmin)
    out = derive_normals(archives, PREFIXES, PERIOD, tmp_path / "n.tif")
    with rasterio.open(out) as src:
        assert src.read(3)[0, 0] == pytest.approx(-25.5)


def test_the_stack_reads_the_normals_by_band_name(tmp_path, stack_sources):
    from stack_sources import LEFT, SMALL_TILES, TOP

    from mapper.bands import STACK_BANDS
    from mapper.stack import build_stack

    # a 2 km grid whose pixel centres 2.5 px in from its corner fall on the stack region's corner:
    # the tile lies between rows and columns 2 to 4, away from the nodata holes of pr and tasmin
    over_region = Affine(2000.0, 0.0, LEFT - 5000.0, 0.0, -2000.0, TOP + 5000.0)
    archives = {v: tmp_path / f"{v}.zip" for v in PREFIXES}
    for v, path in archives.items():
        path.write_bytes(archive_bytes(v, transform=over_region))
    normals = derive_normals(archives, PREFIXES, PERIOD, tmp_path / "snap_normals.tif")
    src = stack_sources
    out = build_stack(src["r64"], SMALL_TILES[0], [src["s2"]], src["dem"], normals,
                      tmp_path / "stack.tif")  # fmt: skip
    with rasterio.open(out) as stack:
        precip = stack.read(STACK_BANDS.index("precip_annual") + 1, masked=True)
        tmin = stack.read(STACK_BANDS.index("jan_tmin") + 1, masked=True)
        warmth = stack.read(STACK_BANDS.index("summer_warmth") + 1, masked=True)
    assert precip.count() > 0 and tmin.count() > 0
    assert np.allclose(precip.compressed(), 138.0) and np.allclose(tmin.compressed(), -25.5)
    # each band's own nodata: the summer_warmth hole within the tile's reach, where the other
    # bands have values, is not warped in as -9999 (GDAL's default counts a pixel as nodata only
    # where all its bands are)
    assert warmth.count() > 0 and 551.0 <= warmth.min() and warmth.max() <= 731.0


# -- errors: one line naming the file and the fix, nothing left at the output -------------------
def test_a_missing_member_is_one_error_naming_it(tmp_path):
    archives = write_archives(tmp_path / "in", tas=archive_bytes("tas", skip=(2001, 3)))
    out = tmp_path / "out" / "n.tif"
    with pytest.raises(InputError) as err:
        derive_normals(archives, PREFIXES, PERIOD, out)
    message = str(err.value)
    assert "\n" not in message
    assert str(archives["tas"]) in message
    assert "tas_mean_C_CRU_TS40_historical_03_2001.tif" in message
    assert "1 of the 24 tas months" in message and "region file" in message
    assert not out.parent.exists() or not list(out.parent.iterdir())


def test_a_corrupt_archive_is_one_error_naming_it(tmp_path):
    good = archive_bytes("pr")
    archives = write_archives(tmp_path / "in", pr=good[: len(good) // 2])  # truncated download
    out = tmp_path / "n.tif"
    with pytest.raises(InputError, match=r"snap_pr\.zip: not a readable zip archive .*fetch it "
                                         r"again$"):  # fmt: skip
        derive_normals(archives, PREFIXES, PERIOD, out)
    assert leftovers(tmp_path) == ["in"]


def test_a_damaged_member_fails_its_crc_check(tmp_path):
    raw = bytearray(archive_bytes("pr", compression=zipfile.ZIP_STORED))
    name = f"pr/{PREFIXES['pr']}_06_2001.tif"
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    raw[start + info.file_size - 8] ^= 0xFF  # one byte of the member's pixels
    archives = write_archives(tmp_path / "in", pr=bytes(raw))
    with pytest.raises(InputError, match=rf"snap_pr\.zip!{name}: cannot be unpacked .*CRC"):
        derive_normals(archives, PREFIXES, PERIOD, tmp_path / "n.tif")
    assert leftovers(tmp_path) == ["in"]


def test_a_member_packed_with_a_method_zipfile_cannot_read_is_one_error(tmp_path):
    """A member packed with Deflate64 (method 9, which some Windows tools write): one error
    naming the member and the fix, not a traceback."""
    raw = bytearray(archive_bytes("pr", compression=zipfile.ZIP_STORED))
    name = f"pr/{PREFIXES['pr']}_06_2001.tif"
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        info = zf.getinfo(name)
    raw[info.header_offset + 8:info.header_offset + 10] = (9).to_bytes(2, "little")
    central = raw.index(b"PK\x01\x02")  # the central directory's entries
    while raw[central + 46:central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 4)
    raw[central + 10:central + 12] = (9).to_bytes(2, "little")
    archives = write_archives(tmp_path / "in", pr=bytes(raw))
    with pytest.raises(InputError) as exc:
        derive_normals(archives, PREFIXES, PERIOD, tmp_path / "n.tif")
    message = str(exc.value)
    assert f"snap_pr.zip!{name}: cannot be unpacked" in message and "re-pack" in message
    assert "\n" not in message
    assert leftovers(tmp_path) == ["in"]


def test_a_member_on_another_grid_is_one_error_naming_it(tmp_path):
    name = f"tas/{PREFIXES['tas']}_05_2001.tif"
    off_by_1m = Affine(2000.0, 0.0, 250_001.0, 0.0, -2000.0, 1_700_000.0)
    shifted = geotiff(field("tas", 2001, 5), off_by_1m)
    archives = write_archives(tmp_path / "in", tas=archive_bytes("tas", members={name: shifted}))
    with pytest.raises(InputError, match=rf"snap_tas\.zip!{name}: grid .* differs from "
                                         r".*snap_pr\.zip!pr/.*share one grid"):  # fmt: skip
        derive_normals(archives, PREFIXES, PERIOD, tmp_path / "n.tif")
    assert leftovers(tmp_path) == ["in"]


# -- downloads ----------------------------------------------------------------------------------
@pytest.fixture()
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture()
def no_waits(monkeypatch):
    import mapper.sources.http as http_module

    monkeypatch.setattr(http_module.time, "sleep", lambda seconds: None)


def snap_source(urls: dict[str, str], **extra) -> dict:
    return {"kind": "snap", "first_year": PERIOD[0], "last_year": PERIOD[-1],
            "archives": {v: {"url": u, **extra.get(v, {})} for v, u in urls.items()}}  # fmt: skip


def serve_archives(server: LoopbackServer, **overrides: bytes) -> dict[str, str]:
    base = "/data/Base/AK_CAN_2km/historical/CRU_TS"
    return {
        v: server.add_file(f"{base}/{v}_AK_CAN_2km_CRU_TS40_historical.zip",
                           overrides.get(v) or archive_bytes(v))
        for v in PREFIXES
    }  # fmt: skip


def snap_region(tmp_path: Path, source: dict):
    """Region ``r`` (one 64 px tile near Nenana, as conftest's fetch_config) with ``source``."""
    config = write_tiny_region(tmp_path / "cfg", REGION_BOUNDS, 64, name="r",
                               sources={"climate": source})  # fmt: skip
    return load_region(load_config(config), "r")


def test_fetch_downloads_each_archive_and_records_its_sha256(server, tmp_path):
    urls = serve_archives(server)
    region = snap_region(tmp_path, snap_source(urls))
    out = tmp_path / "sources"
    for variable in PREFIXES:
        manifest = read_manifest(fetch_source(region, "climate", out, file=variable))
        archive = out / "climate" / f"snap_{variable}.zip"
        assert manifest["kind"] == "snap" and manifest["variable"] == variable
        [item] = manifest["items"]
        assert item["url"] == urls[variable] and item["path"] == str(archive)
        assert item["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    archives = {v: out / "climate" / f"snap_{v}.zip" for v in PREFIXES}
    derive_normals(archives, PREFIXES, PERIOD, out / "climate" / "snap_normals.tif")
    # a rerun trusts the recorded checksum: nothing downloaded again
    fetch_source(region, "climate", out, file="pr")
    assert len(server.requests_for(urls["pr"].split(server.base_url)[-1], "GET")) == 1


def test_fetch_given_the_archives_own_path_writes_it_there(server, tmp_path):
    """``fetch --out`` may be the target file: for a snap source that is the archive
    (``<sources>/climate/snap_<variable>.zip``), not a folder of that name."""
    from mapper.cli import main

    urls = serve_archives(server)
    config = write_tiny_region(tmp_path / "cfg", REGION_BOUNDS, 64, name="r",
                               sources={"climate": snap_source(urls)})  # fmt: skip
    archive = tmp_path / "sources" / "climate" / "snap_pr.zip"
    assert main(["fetch", "--config", str(config), "--region", "r", "--source", "climate",
                 "--file", "pr", "--out", str(archive)]) == 0
    assert archive.is_file() and zipfile.is_zipfile(archive)
    assert read_manifest(archive.with_name("snap_pr.zip.json"))["items"][0]["path"] == str(
        archive)


def test_a_truncated_download_is_one_error_naming_the_url(server, tmp_path, no_waits):
    urls = serve_archives(server)
    path = urls["tas"].split(server.base_url)[-1]
    server.add_faults(path, *[cut(0)] * 5)  # no attempt gets a byte (4 retries)
    region = snap_region(tmp_path, snap_source(urls))
    out = tmp_path / "sources"
    with pytest.raises(SourceError, match=rf"^{urls['tas']} -> .*snap_tas\.zip: .*gave up after 5 "
                                          r"attempts.*check the URL"):  # fmt: skip
        fetch_source(region, "climate", out, file="tas")
    assert not (out / "climate").exists() or not list((out / "climate").iterdir())


def test_a_truncated_file_served_whole_is_refused_at_download(server, tmp_path):
    good = archive_bytes("pr")
    urls = serve_archives(server, pr=good[:-5000])  # the server itself holds a cut copy
    region = snap_region(tmp_path, snap_source(urls))
    out = tmp_path / "sources"
    # refused as the download (.part), before it takes the archive's name; the message names
    # the archive asked for, not the deleted .part
    with pytest.raises(SourceError,
                       match=rf"^{urls['pr']} -> .*/snap_pr\.zip: not a readable zip"):
        fetch_source(region, "climate", out, file="pr")
    assert not list((out / "climate").glob("snap_pr.zip*"))
    assert LockFile(lock_path(region.path)).entries() == {}  # its checksum is not recorded


def test_the_region_files_checksum_wins_over_the_lock_file(server, tmp_path):
    """The lock pins what the region file does not: an archive with a sha256 (and size) in the
    region file is verified against those, whatever the lock records, and not recorded there;
    a size stated without a sha256 is checked too; without a lock file an archive is only
    checked to be a zip, and a rerun whose archive matches its manifest downloads nothing."""
    urls = serve_archives(server)
    data = archive_bytes("pr")
    digest = hashlib.sha256(data).hexdigest()
    changed = {"sha256": "0" * 64, "size": len(data)}

    def fetch(folder: Path, lock: LockFile | None, **pr) -> Path:
        region = snap_region(folder, snap_source(urls, pr=pr))
        settings = region.settings["sources"]["climate"]
        return fetch_snap(region, "climate", settings, folder / "sources", "pr", lock)

    lock = LockFile(tmp_path / "tiny.lock.json")
    lock.record(urls["pr"], changed)
    fetch(tmp_path / "a", lock, sha256=digest, size=len(data))
    assert lock.entries() == {urls["pr"]: changed}
    with pytest.raises(SourceError, match=r"sha256 .* differs from the lock file"):
        fetch(tmp_path / "b", lock)
    assert not list((tmp_path / "b" / "sources" / "climate").glob("snap_pr.zip*"))
    # a size stated without a sha256: a download of another size is refused, nothing recorded
    other = LockFile(tmp_path / "other.lock.json")
    with pytest.raises(SourceError) as exc:
        fetch(tmp_path / "c", other, size=len(data) + 1)
    assert str(exc.value).startswith(f"{urls['pr']} -> ")
    assert f"the region file states {len(data) + 1}" in str(exc.value)
    assert not list((tmp_path / "c" / "sources" / "climate").glob("snap_pr.zip*"))
    assert other.entries() == {}
    # no lock file: downloaded, then reused
    manifest = read_manifest(fetch(tmp_path / "d", None))
    assert manifest["items"][0]["sha256"] == digest
    gets = len(server.requests_for(urls["pr"].removeprefix(server.base_url), "GET"))
    fetch(tmp_path / "d", None)
    assert len(server.requests_for(urls["pr"].removeprefix(server.base_url), "GET")) == gets


def test_alaska_climate_is_derived_from_snap_archives():
    from workflow_project import REPO

    climate = load_region(load_config(REPO / "config" / "config.yaml"), "alaska").settings[
        "sources"
    ]["climate"]
    assert climate["kind"] == "snap"
    assert (climate["first_year"], climate["last_year"]) == (1981, 2010)
    assert all(
        a["url"].startswith("https://data.snap.uaf.edu/data/Base/AK_CAN_2km/historical/CRU_TS/")
        and a["prefix"].endswith("_CRU_TS40_historical")
        for a in climate["archives"].values()
    )


def test_only_the_climate_source_may_be_of_kind_snap(tmp_path):
    from mapper.errors import ConfigError

    urls = {v: f"https://example.org/{v}.zip" for v in PREFIXES}
    config = write_tiny_region(tmp_path, REGION_BOUNDS, 64, name="r",
                               sources={"dem": snap_source(urls)})  # fmt: skip
    with pytest.raises(ConfigError, match=r"key 'sources\.dem\.kind'"):
        load_region(load_config(config), "r")


# -- command line and workflow ------------------------------------------------------------------
def test_command_writes_the_normals_and_fails_in_one_line(tmp_path, capsys):
    from mapper.cli import main

    region_urls = {v: f"http://127.0.0.1:9/{v}.zip" for v in PREFIXES}
    region = snap_region(tmp_path, snap_source(region_urls))
    config = tmp_path / "cfg" / "config.yaml"
    archives = write_archives(tmp_path / "in")
    out = tmp_path / "out" / "snap_normals.tif"
    args = ["climate-normals", "--config", str(config), "--region", region.name,
            "--pr", str(archives["pr"]), "--tas", str(archives["tas"]),
            "--tasmin", str(archives["tasmin"]), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip() == str(out)
    with rasterio.open(out) as src:
        assert src.tags()["MAPPER_PERIOD"] == "2000-2001"
    archives["tasmin"].write_bytes(b"<html>not found</html>")
    out.unlink()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "snap_tasmin.zip: not a readable zip archive" in err
    assert not out.exists()
    assert main([*args, "--source", "climat"]) == 1  # a source the region does not have
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.endswith(
        f"error: {region.path}: no source 'climat' (sources: "
        f"{', '.join(region.settings['sources'])}); give --source one of them")
    assert not out.exists()


def snap_project(root: Path, urls: dict[str, str]):
    """A workflow project of one 128 px tile whose climate is of kind snap (archives at ``urls``)
    and whose other sources are local files (empty placeholders: enough for a dry run)."""
    from tiny_region import write_config
    from workflow_project import WorkflowProject, project_env, tiny_bounds

    root = root.resolve()
    placeholders = {}
    for name, file in (("sentinel2", "s2.tif"), ("dem", "dem.tif"), ("observations", "o.csv")):
        (root / file).touch()
        placeholders[name] = {"kind": "file", "path": str(root / file)}
    sources = {**placeholders, "climate": snap_source(urls)}
    region_file = write_region_file(root / "config" / "regions", "snapr", tiny_bounds(128, 1),
                                    128, sources=sources, model={"size": "demo"})  # fmt: skip
    config = write_config(root / "config" / "config.yaml", {"snapr": region_file})
    tiles = load_region(load_config(config), "snapr").tiles()
    return WorkflowProject(root, "snapr", 128, tiles, project_env())


def test_workflow_plans_the_downloads_and_the_derivation(tmp_path):
    from workflow_project import planned_jobs

    urls = {
        v: f"https://data.snap.uaf.edu/{v}_AK_CAN_2km_CRU_TS40_historical.zip" for v in PREFIXES
    }
    project = snap_project(tmp_path, urls)
    jobs = planned_jobs(project, project.stack(project.tiles[0]))
    assert jobs == {"fetch_snap_archive": 3, "snap_climate_normals": 1, "stack": 1}


@pytest.mark.workflow
def test_workflow_downloads_and_derives_from_a_loopback_server(tmp_path, server):
    from workflow_project import run_snakemake

    project = snap_project(tmp_path, serve_archives(server))
    target = "resources/snapr/sources/climate/snap_normals.tif"
    run_snakemake(project, target).check()
    with rasterio.open(project.path(target)) as src:
        assert src.descriptions == tuple(CLIMATE_BANDS)
        assert src.read(1)[0, 0] == pytest.approx(138.0)
    for v in PREFIXES:
        manifest = read_manifest(project.path(f"resources/snapr/sources/climate/snap_{v}.zip.json"))
        assert manifest["items"][0]["sha256"]
