"""3DEP's dated versions (mapper.sources.tnm) and S3 listings (mapper.sources.s3): a cell that
3DEP replaced in ``current/`` after the lock file pinned it is fetched as it was, from its dated
file under ``historical/``, on a loopback S3 bucket in the real layout (tests/s3_bucket.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from dem_cells import THREEDEP2_TEMPLATE, THREEDEP_TEMPLATE, write_3dep
from httpserver import LoopbackServer, status
from pyproj import Transformer
from s3_bucket import Bucket
from tiny_region import write_config, write_region_file

from mapper.config import load_config, load_region
from mapper.errors import ChangedError, ConfigError, SourceError
from mapper.products.provenance import sources_summary
from mapper.sources import cells as C
from mapper.sources.cells import Cell
from mapper.sources.lock import LockFile, lock_path
from mapper.sources.manifest import read_manifest
from mapper.sources.s3 import list_objects
from mapper.sources.tnm import history_of, pinned_version

REAL = "https://prd-tnm.s3.amazonaws.com"
CELL = Cell.parse("N64W148")
CURRENT = THREEDEP_TEMPLATE.format(**CELL.fields()).lstrip("/")  # the key in the bucket
HISTORY = "StagedProducts/Elevation/1/TIFF/historical/n65w148/"
TWO = THREEDEP2_TEMPLATE.lstrip("/")  # 3DEP 2": dated files only
STACK = {"halo_px": 32, "hydro_block_px": 256, "hydro_halo_px": 64}


def test_the_history_of_each_3dep_product() -> None:
    endpoint, prefix, name = history_of(f"{REAL}/{CURRENT}")
    assert (endpoint, prefix) == (REAL, HISTORY)
    assert name.match(HISTORY + "USGS_1_n65w148_20181107.tif")["date"] == "20181107"
    assert not name.match(HISTORY + "USGS_1_n65w148_20181107.xml")
    assert not name.match(HISTORY + "USGS_1_n65w147_20181107.tif")
    two = f"{REAL}/StagedProducts/Elevation/2/TIFF/current/n65w148/USGS_2_n65w148.tif"
    assert history_of(two)[1] == "StagedProducts/Elevation/2/TIFF/historical/n65w148/"
    third = f"{REAL}/StagedProducts/Elevation/13/TIFF/current/n65w148/USGS_13_n65w148.tif"
    assert history_of(third)[2].match(
        "StagedProducts/Elevation/13/TIFF/historical/n65w148/USGS_13_n65w148_20230110.tif")
    path_style = "https://s3.amazonaws.com/prd-tnm/" + CURRENT
    assert history_of(path_style)[0] == "https://s3.amazonaws.com/prd-tnm"
    for other in [
        f"{REAL}/StagedProducts/Elevation/1/TIFF/historical/n65w148/USGS_1_n65w148_20181107.tif",
        f"{REAL}/StagedProducts/Elevation/1/TIFF/current/n65w148/USGS_1_n65w147.tif",
        "https://copernicus-dem-30m.s3.amazonaws.com/Copernicus_DSM_COG_10_N64_00_W148_00_DEM/"
        "Copernicus_DSM_COG_10_N64_00_W148_00_DEM.tif",
    ]:
        assert history_of(other) is None


def test_a_listing_follows_every_page_and_names_s3_errors() -> None:
    with LoopbackServer() as server:
        bucket = Bucket(server, "prd-tnm", page=2)
        keys = [f"{HISTORY}USGS_1_n65w148_2018110{i}.tif" for i in range(5)]
        for i, key in enumerate(keys):
            bucket.put(key, b"x" * (10 + i))
        bucket.put("StagedProducts/Elevation/1/TIFF/historical/n65w147/USGS_1_n65w147.tif", b"y")
        objects = list_objects(bucket.endpoint, HISTORY)
        assert [o.key for o in objects] == keys and [o.size for o in objects] == [10, 11, 12, 13,
                                                                                   14]
        assert len(objects[0].etag) == 32 and objects[0].last_modified.startswith("2024-10-01")
        pages = server.requests_for("/prd-tnm/")
        assert len(pages) == 3  # 2 + 2 + 1 objects
        assert list_objects(bucket.endpoint, HISTORY + "nothing") == []
        bucket.deny = True
        with pytest.raises(SourceError) as exc:
            list_objects(bucket.endpoint, HISTORY)
        message = str(exc.value)
        assert "HTTP 403 AccessDenied: Access Denied" in message and "prefix=" + HISTORY in message
        assert "\n" not in message
        with pytest.raises(SourceError, match="not an S3 listing"):
            list_objects(server.add_route("/json/", lambda *a: (200, {}, b"<html/>")), "x")


@pytest.fixture()
def bucket_region(tmp_path: Path):
    """A loopback bucket ``prd-tnm`` with 3DEP's layout and a region whose dem is its 1" cells."""
    to_albers = Transformer.from_crs("EPSG:4269", "EPSG:3338", always_xy=True)
    x, y = to_albers.transform(-147.0, 65.0)  # where four cells meet, as in test_sources_cells
    size, origin = 2560.0, (-2_600_000.0, 2_600_000.0)
    left = origin[0] + round((x - origin[0]) / size) * size - size
    top = origin[1] - round((origin[1] - y) / size) * size + size
    with LoopbackServer() as server:
        bucket = Bucket(server, "prd-tnm")
        region_file = write_region_file(
            tmp_path / "regions", "pinned", (left, top - 2 * size, left + 2 * size, top), 256,
            stack=STACK, sources={"dem": {"kind": "cells",
                                          "url_template": bucket.endpoint + THREEDEP_TEMPLATE}},
        )  # fmt: skip
        region = load_region(load_config(write_config(tmp_path / "config.yaml",
                                                      {"pinned": region_file})), "pinned")
        yield server, bucket, region, tmp_path / "sources"


def versions(folder: Path) -> tuple[bytes, bytes, bytes]:
    """Three files of the cell: the first version, a later one (other values: a lake), and a
    corrupt copy of the first (same size, other bytes)."""
    first = write_3dep(folder / "first", CELL).read_bytes()
    later = write_3dep(folder / "later", CELL, hole=(-147.5, 64.5)).read_bytes()
    corrupt = bytearray(first)
    corrupt[len(corrupt) // 2] ^= 0xFF
    assert len(later) != len(first)
    return first, later, bytes(corrupt)


def test_a_replaced_cell_is_fetched_from_its_dated_version(bucket_region, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture
                                                           ) -> None:  # fmt: skip
    """The lock pins the first version; 3DEP then replaces the current file. Fetched again, the
    cell is the pinned bytes from ``historical/`` (a same-size file with other bytes skipped,
    newest first), with a warning naming the dated file; kept, it is not asked for again. With
    no dated version of those bytes, one error naming the folder and the dates, no file left."""
    server, bucket, region, out = bucket_region
    first, later, corrupt = versions(tmp_path / "written")
    current = bucket.put(CURRENT, first)
    record = C.fetch_cell(region, "dem", CELL.name, out)
    assert not server.requests_for("/prd-tnm/")  # nothing is listed at a first download
    lock = LockFile(lock_path(region.path))
    pinned = dict(lock.entries())
    assert pinned[current]["size"] == len(first)

    bucket.put(CURRENT, later)  # 3DEP replaced the cell; every version stays in historical/
    dated = {"20181107": first, "20200110": corrupt, "20240101": later}
    for date, data in dated.items():
        bucket.put(f"{HISTORY}USGS_1_n65w148_{date}.tif", data)
        bucket.put(f"{HISTORY}USGS_1_n65w148_{date}.xml", b"<metadata/>")
    bucket.put("StagedProducts/Elevation/1/TIFF/historical/n65w147/USGS_1_n65w147_20181107.tif",
               first)  # another cell, same size
    tif = out / "dem" / f"{CELL.name}.tif"
    tif.unlink()
    with caplog.at_level(logging.WARNING):
        record = C.fetch_cell(region, "dem", CELL.name, out)
    manifest = read_manifest(record)
    version = f"{bucket.endpoint}/{HISTORY}USGS_1_n65w148_20181107.tif"
    assert manifest["url"] == current and manifest["items"][0]["url"] == version
    assert tif.read_bytes() == first and lock.entries() == pinned
    assert f"{current}: not the file the lock file pins" in caplog.text and version in caplog.text
    summary = sources_summary(region, out)["dem"]["cells"]
    assert summary["by_product"][0]["cells"] == 1 and summary["from_dated_versions"] == 1
    get = [r["path"] for r in server.log if r["method"] == "GET"]
    assert get[-3:] == ["/prd-tnm/", f"/prd-tnm/{HISTORY}USGS_1_n65w148_20200110.tif",
                        f"/prd-tnm/{HISTORY}USGS_1_n65w148_20181107.tif"]  # fmt: skip
    assert not server.requests_for(f"/prd-tnm/{HISTORY}USGS_1_n65w148_20240101.tif")

    asked = len(server.log)
    C.fetch_cell(region, "dem", CELL.name, out)  # kept and verified: no request
    assert len(server.log) == asked and tif.read_bytes() == first

    bucket.delete(f"{HISTORY}USGS_1_n65w148_20181107.tif")
    tif.unlink()
    with pytest.raises(ChangedError) as exc:
        C.fetch_cell(region, "dem", CELL.name, out)
    message = str(exc.value)
    assert current in message and f"{bucket.endpoint}/{HISTORY}" in message
    assert "dates 20240101, 20200110, 1 of the pinned size" in message
    assert str(lock.path) in message and "\n" not in message
    assert sorted(p.name for p in (out / "dem").iterdir()) == [f"{CELL.name}.json"]
    assert lock.entries() == pinned


def test_a_changed_file_elsewhere_is_still_an_error(bucket_region, tmp_path: Path) -> None:
    """Only 3DEP's current files have dated versions: a changed GLO-30 cell is the lock's error,
    with no listing asked for."""
    server, bucket, region, out = bucket_region
    glo = "Copernicus_DSM_COG_10_N64_00_W148_00_DEM/Copernicus_DSM_COG_10_N64_00_W148_00_DEM.tif"
    region.settings["sources"]["dem"]["url_template"] = (
        bucket.endpoint + "/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM/"
        "Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif")  # fmt: skip
    first, later, _ = versions(tmp_path / "written")
    url = bucket.put(glo, first)  # a 3DEP file under GLO-30's name: a raster of the cell
    C.fetch_cell(region, "dem", CELL.name, out)
    lock = LockFile(lock_path(region.path))
    pinned = dict(lock.entries())
    bucket.put(glo, later)
    (out / "dem" / f"{CELL.name}.tif").unlink()
    with pytest.raises(ChangedError, match="changed upstream") as exc:
        C.fetch_cell(region, "dem", CELL.name, out)
    assert url in str(exc.value) and "dated version" not in str(exc.value)
    assert not server.requests_for("/prd-tnm/") and lock.entries() == pinned


@pytest.mark.parametrize("template, message", [
    ("https://copernicus-dem-30m.s3.amazonaws.com/DEM_{S}_{W}_{date}.tif", "StagedProducts"),
    (REAL + "/StagedProducts/Elevation/2/TIFF/{date}/{n}{w}/USGS_2_{n}{w}.tif", "file name"),
    (REAL + "/StagedProducts/Elevation/2/TIFF/historical/{n}{w}/USGS_2_{date}_{date}.tif",
     "once"),
])  # fmt: skip
def test_a_date_field_only_in_a_3dep_file_name(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"region.yaml: sources.dem.url_template: .*{message}"):
        C.cell_urls({"url_template": template}, CELL, "region.yaml: sources.dem")


def test_a_sea_cell_whose_dated_file_appears_is_an_error(bucket_region, tmp_path: Path) -> None:
    """A cell without land, without a dated file in the listing: sea, the {date} URL recorded
    absent. A dated file listed later is an error naming it and the lock file, as a file
    appearing where the lock records sea is for a plain URL; of several dated files the lock
    records, the newest is the one taken."""
    server, bucket, region, out = bucket_region
    template = bucket.endpoint + "/" + TWO
    region.settings["sources"]["dem"]["url_template"] = template
    sea = Cell.parse("N60W170")
    url = C.cell_url(region.settings["sources"]["dem"], sea)
    assert url.endswith("/n61w170/USGS_2_n61w170_{date}.tif") and C.land_km2(region, sea) == 0
    manifest = read_manifest(C.fetch_cell(region, "dem", sea.name, out))
    assert manifest["absent"] is True and manifest["tried"] == [url]
    lock = LockFile(lock_path(region.path))
    assert lock.entries() == {url: {"absent": True}}
    appeared = bucket.put(TWO.format(**sea.fields(), date="20260101"), b"not sea")
    with pytest.raises(ChangedError) as exc:
        C.fetch_cell(region, "dem", sea.name, out)
    assert appeared in str(exc.value) and str(lock.path) in str(exc.value)
    entries = {url.replace("{date}", d): {"sha256": d, "size": 1} for d in ("2019", "20210404",
                                                                            "20190101")}
    assert pinned_version(entries, url) == url.replace("{date}", "20210404")
    assert pinned_version({appeared: {"absent": True}}, url) is None


def test_a_listing_is_retried_on_slow_down_and_its_failure_is_not_sea(bucket_region) -> None:
    """S3's 503 SlowDown is retried as a download is; a listing that fails for good is one error
    naming it, and the cell is not taken as lacking from the product (nothing recorded)."""
    server, bucket, region, out = bucket_region
    bucket.put(TWO.format(**CELL.fields(), date="20210404"), b"x")
    bucket.fail(503, "SlowDown", retry_after="0")
    assert [o.key for o in list_objects(bucket.endpoint, HISTORY.replace("/1/", "/2/"),
                                        backoff=0.01)] == [
        TWO.format(**CELL.fields(), date="20210404")]  # fmt: skip
    assert len(server.requests_for("/prd-tnm/")) == 2
    region.settings["sources"]["dem"]["url_template"] = bucket.endpoint + "/" + TWO
    region.settings["sources"]["dem"]["fallback_templates"] = [
        bucket.endpoint + "/glo/" + THREEDEP_TEMPLATE]  # fmt: skip
    bucket.deny = True
    for cell in (CELL, Cell.parse("N60W170")):  # land, and sea
        with pytest.raises(SourceError, match="HTTP 403 AccessDenied") as exc:
            C.fetch_cell(region, "dem", cell.name, out)
        assert "\n" not in str(exc.value)
    assert LockFile(lock_path(region.path)).entries() == {} and not out.exists()


def test_a_current_file_gone_or_a_listed_file_not_served(bucket_region, tmp_path: Path) -> None:
    """The pinned current/ file answering HTTP 404 is fetched from its dated version too. A
    dated version listed but not served (HTTP 404) is never "the product lacks the cell": with
    a fallback product configured, the cell is an error, not the fallback's, and nothing new is
    recorded."""
    server, bucket, region, out = bucket_region
    first, _, _ = versions(tmp_path / "written")
    current = bucket.put(CURRENT, first)
    region.settings["sources"]["dem"]["fallback_templates"] = [
        bucket.endpoint + "/glo" + THREEDEP_TEMPLATE]  # fmt: skip
    bucket.put("glo/" + CURRENT, first)  # a fallback that has the cell
    C.fetch_cell(region, "dem", CELL.name, out)
    lock = LockFile(lock_path(region.path))
    pinned = dict(lock.entries())
    bucket.delete(CURRENT)
    dated = bucket.put(f"{HISTORY}USGS_1_n65w148_20181107.tif", first)
    tif = out / "dem" / f"{CELL.name}.tif"
    tif.unlink()
    manifest = read_manifest(C.fetch_cell(region, "dem", CELL.name, out))
    assert manifest["url"] == current and manifest["items"][0]["url"] == dated
    assert tif.read_bytes() == first and lock.entries() == pinned
    tif.unlink()
    server.add_faults("/prd-tnm/" + HISTORY + "USGS_1_n65w148_20181107.tif", status(404))
    with pytest.raises(SourceError) as exc:  # a server fault: retry, not "record the new one"
        C.fetch_cell(region, "dem", CELL.name, out)
    assert not isinstance(exc.value, ChangedError)
    message = str(exc.value)
    assert f"1 dated version(s) of the pinned size in {bucket.endpoint}/{HISTORY}" in message
    assert dated in message and "retry later, and keep the lock entry" in message
    assert "delete the entry" not in message
    assert lock.entries() == pinned and not tif.exists()
