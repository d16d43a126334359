"""Elevation by 1 x 1 degree cells (mapper.sources.cells, kind ``cells``): names and URLs of the
real services, the cells each tile reads (against a dense sampling, across 180 degrees, cheap for
the state), fetching cells from the loopback server in the real layouts (tests/dem_cells.py) with
sea and the lock file, the warp of several cells onto the lattice against gdalwarp and against
the exact surface (no seam), and the workflow's plan of one job per cell."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from conftest import system_tool
from dem_cells import (
    DZ_DLAT,
    GLO30_TEMPLATE,
    THREEDEP2_TEMPLATE,
    THREEDEP_TEMPLATE,
    serve,
    surface,
    write_3dep,
    write_3dep2,
    write_glo30,
)
from httpserver import LoopbackServer
from pyproj import Transformer
from rasterio.windows import Window
from s3_bucket import Bucket
from tiny_region import write_config, write_region_file
from workflow_project import REPO, WorkflowProject, planned_jobs, project_env, run_snakemake

from mapper.cli import main
from mapper.config import load_config, load_region
from mapper.dem import warp_dem
from mapper.errors import ConfigError, InputError, SourceError
from mapper.files import file_sha256
from mapper.grid import Lattice
from mapper.products.provenance import sources_summary
from mapper.sources import cells as C
from mapper.sources.cells import (
    Cell,
    cell_rasters,
    cell_url,
    cell_urls,
    cells_of_windows,
    region_cells,
)
from mapper.sources.lock import LockFile, lock_path
from mapper.sources.manifest import read_manifest

LATTICE = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 256)
TO_ALBERS = Transformer.from_crs("EPSG:4269", "EPSG:3338", always_xy=True)
STACK = {"halo_px": 32, "hydro_block_px": 256, "hydro_halo_px": 64}
CORNER = (-147.0, 65.0)  # where cells N64W148, N64W147, N65W148 and N65W147 meet
CELLS = ["N64W147", "N64W148", "N65W147", "N65W148"]
HOLE = (-146.98, 65.01)  # 3DEP nodata north-east of here (in the window's north-east quarter)


# -- names and URLs -----------------------------------------------------------------------------


def test_cell_names_and_the_real_urls() -> None:
    threedep = {"url_template": "https://prd-tnm.s3.amazonaws.com/StagedProducts/Elevation/1/"
                "TIFF/current/{n}{w}/USGS_1_{n}{w}.tif"}  # fmt: skip
    glo30 = {"url_template": "https://copernicus-dem-30m.s3.amazonaws.com/"
             "Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif"}
    fairbanks = Cell.parse("N64W148")
    assert (fairbanks.south, fairbanks.west, fairbanks.bounds()) == (64, -148, (-148, 64, -147, 65))
    assert cell_url(threedep, fairbanks) == (
        "https://prd-tnm.s3.amazonaws.com/StagedProducts/Elevation/1/TIFF/current/n65w148/"
        "USGS_1_n65w148.tif"
    )
    assert cell_url(glo30, fairbanks) == (
        "https://copernicus-dem-30m.s3.amazonaws.com/Copernicus_DSM_COG_10_N64_00_W148_00_DEM/"
        "Copernicus_DSM_COG_10_N64_00_W148_00_DEM.tif"
    )
    attu = Cell(52, 172)  # Near Islands, west of 180 degrees
    assert attu.name == "N52E172" and Cell.parse("N52E172") == attu
    assert cell_url(threedep, attu).endswith("/n53e172/USGS_1_n53e172.tif")
    assert cell_url(glo30, attu).endswith("/Copernicus_DSM_COG_10_N52_00_E172_00_DEM.tif")
    assert Cell(51, 179).name == "N51E179" and Cell(51, -180).name == "N51W180"
    assert cell_url(glo30, Cell(51, -180)).endswith("_N51_00_W180_00_DEM.tif")
    assert Cell(-5, -75).fields() == {"N": "S04", "S": "S05", "W": "W075",
                                      "n": "s04", "s": "s05", "w": "w075"}  # fmt: skip


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("https://x/{n}{lon}.tif", "field"),
        ("https://x/{n}.tif", "must name the cell"),
        ("https://x/{n}{w.tif", "braces"),
    ],
)
def test_bad_templates_name_the_key_and_fix(template: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as exc:
        cell_url({"url_template": template}, Cell(64, -148), "alaska.yaml: sources.dem")
    assert "alaska.yaml: sources.dem" in str(exc.value)
    with pytest.raises(ConfigError, match="not a cell name"):
        Cell.parse("n65w148")


# -- the cells of each tile ---------------------------------------------------------------------


def sampled_cells(bounds: tuple[float, float, float, float], step: float = 50.0) -> set[str]:
    """The oracle: the cells of points every ``step`` metres over ``bounds`` (EPSG:3338), each
    point floored on its own, so 180 degrees needs no care."""
    left, bottom, right, top = bounds
    xs = np.arange(left, right + step / 2, step)
    ys = np.arange(bottom, top + step / 2, step)
    x, y = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs("EPSG:3338", "EPSG:4269", always_xy=True).transform(x, y)
    west = (np.floor(lon).astype(int) + 180) % 360 - 180
    south = np.floor(lat).astype(int)
    pairs = set(zip(south.ravel(), west.ravel(), strict=True))
    return {Cell(int(s), int(w)).name for s, w in pairs}


def window_around(lon: float, lat: float, size_m: float) -> tuple[float, float, float, float]:
    x, y = TO_ALBERS.transform(lon, lat)
    return (x - size_m / 2, y - size_m / 2, x + size_m / 2, y + size_m / 2)


@pytest.mark.parametrize(
    ("lon", "lat", "expected"),
    [
        (-147.0, 65.0, set(CELLS)),  # four cells around Fairbanks' corner
        (180.0, 51.8, {"N51E179", "N51W180"}),  # across 180 degrees (Rat Islands)
        (173.0, 52.85, {"N52E172", "N52E173"}),  # Attu, Near Islands (east longitudes)
        (-150.0, 70.0, {"N69W151", "N69W150", "N70W151", "N70W150"}),  # North Slope, 70 N
    ],
)
def test_cells_of_a_window_match_a_dense_sampling(lon: float, lat: float, expected: set) -> None:
    bounds = window_around(lon, lat, 20_000.0)
    got = cells_of_windows(LATTICE, [bounds])[0]
    assert {c.name for c in got} == sampled_cells(bounds) == expected
    assert got == sorted(got)


def test_tile_cells_cover_the_stack_halos() -> None:
    """A tile whose DEM window (tile + hydrology halo) crosses a cell edge the tile itself does
    not reaches into the next cell."""
    x, y = TO_ALBERS.transform(-147.0, 64.5)  # on the edge between N64W148 and N64W147
    # a lattice whose tile edge lies 300 m west of that point (the meridian leans ~6 degrees in
    # EPSG:3338 here: 160-440 m east of the tile along its height, within the 640 m halo)
    size = 2560.0
    lattice = Lattice(x - 300 - 100 * size, y + 1280 + 100 * size, 10.0, 256)
    tile = lattice.tile_of_xy(x - 300 - 1, y)
    left, _, right, _ = lattice.tile_bounds(tile)
    assert right == pytest.approx(x - 300)
    from mapper.dem import dem_window

    bounds = lattice.window_bounds(dem_window(lattice, tile, 32, 256, 64))
    assert bounds[2] == right + 64 * 10  # hydrology halo
    names = [c.name for c in cells_of_windows(lattice, [bounds])[0]]
    assert sorted(names) == ["N64W147", "N64W148"]
    bare = [c.name for c in cells_of_windows(lattice, [lattice.tile_bounds(tile)])[0]]
    assert bare == ["N64W148"]


def test_the_statewide_cells_are_cheap_and_static() -> None:
    region = load_region(load_config(REPO / "config" / "config.yaml"), "alaska")
    tiles = region.stacked_tiles()  # mapped and context tiles: every stack reads the DEM
    C._REGION_CELLS.clear()
    t0 = time.perf_counter()
    cells = region_cells(region)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert region_cells(region) is cells
    again = time.perf_counter() - t1
    names = sorted({c for cs in cells.values() for c in cs})
    print(f"\nstatewide cells: {len(tiles)} tiles -> {len(names)} cells in {seconds:.2f} s "
          f"(then {again * 1e6:.0f} us, memoised)")  # fmt: skip
    assert list(cells) == tiles and all(cells[t] for t in tiles)
    assert all(re.fullmatch(C.CELL_PATTERN, n) for n in names)
    assert {"N52E172", "N52E173", "N51E179", "N51W180", "N64W148", "N71W157"} <= set(names)
    assert region.settings["sources"]["dem"]["kind"] == "cells"


# -- fetching cells from the loopback server ----------------------------------------------------


@pytest.fixture(scope="module")
def cells_site(tmp_path_factory: pytest.TempPathFactory):
    """The loopback server with 3DEP and GLO-30 cells in the real layouts (SYNTHETIC values), and
    a project with regions ``threedep`` and ``glo`` (2 x 2 tiles of 256 px around CORNER) whose
    dem is a cells source on it. Sea: every other cell (404)."""
    root = tmp_path_factory.mktemp("cells-site")
    files = root / "files"
    written = [write_3dep(files, Cell.parse(c), hole=HOLE) for c in CELLS]
    written += [write_glo30(files, Cell.parse(c)) for c in [*CELLS, "N69W150", "N70W150"]]
    with LoopbackServer() as server:
        serve(server, files, written)
        project = root / "project"
        regions = project / "config" / "regions"
        x, y = TO_ALBERS.transform(*CORNER)
        size = 256 * 10.0
        left = LATTICE.origin_x + round((x - LATTICE.origin_x) / size) * size - size
        top = LATTICE.origin_y - round((LATTICE.origin_y - y) / size) * size + size
        bounds = (left, top - 2 * size, left + 2 * size, top)
        placeholders = {}
        for name, path in [("sentinel2", "s2.tif"), ("climate", "climate.tif"),
                           ("observations", "observations.csv")]:  # fmt: skip
            (project / "resources").mkdir(parents=True, exist_ok=True)
            (project / "resources" / path).touch()
            placeholders[name] = {"kind": "file", "path": str(project / "resources" / path)}
        region_files = {
            name: write_region_file(
                regions, name, bounds, 256, stack=STACK,
                sources={**placeholders, "dem": {"kind": "cells",
                                                 "url_template": server.base_url + template}},
            )  # fmt: skip
            for name, template in [("threedep", THREEDEP_TEMPLATE), ("glo", GLO30_TEMPLATE)]
        }
        config = write_config(project / "config" / "config.yaml", region_files)
        loaded = load_config(config)
        yield {"server": server, "project": project, "config": config, "bounds": bounds,
               "threedep": load_region(loaded, "threedep"), "glo": load_region(loaded, "glo"),
               "files": files}  # fmt: skip


def fetch(site: dict, region: str, cell: str) -> Path:
    out = site["project"] / "resources" / region / "sources"
    return C.fetch_cell(site[region], "dem", cell, out)


def test_the_region_reads_the_four_cells_of_its_corner(cells_site: dict) -> None:
    region = cells_site["threedep"]
    cells = region_cells(region)
    assert len(region.tiles()) == 4  # and the context tiles around them: every stack reads
    assert list(cells) == region.stacked_tiles() and len(cells) > 4
    assert sorted({c for cs in cells.values() for c in cs}) == sorted(CELLS)


def test_fetch_records_cells_and_sea_in_the_lock(cells_site: dict) -> None:
    region = cells_site["threedep"]
    records = [fetch(cells_site, "threedep", c) for c in CELLS]
    sea = fetch(cells_site, "threedep", "N63W149")  # not on the server: sea
    for cell, record in zip(CELLS, records, strict=True):
        manifest = read_manifest(record)
        assert manifest["kind"] == "cells" and manifest["cell"] == cell
        assert manifest["absent"] is False and manifest["url"].endswith(
            THREEDEP_TEMPLATE.format(**Cell.parse(cell).fields())
        )
        with rasterio.open(manifest["items"][0]["path"]) as src:
            assert (src.width, src.height, src.nodata) == (3612, 3612, -999999.0)
    assert read_manifest(sea)["absent"] is True and read_manifest(sea)["items"] == []
    assert not sea.with_suffix(".tif").exists()
    lock = LockFile(lock_path(region.path))
    assert lock.path == cells_site["project"] / "config" / "regions" / "threedep.lock.json"
    entries = lock.entries()
    assert len(entries) == 5
    assert entries[read_manifest(sea)["url"]] == {"absent": True}
    rasters = cell_rasters([*records, sea])
    assert [p.name for p in rasters] == [f"{c}.tif" for c in CELLS]
    # a record naming a deleted raster says how to fetch it again
    gone = records[0].with_name("gone.json")
    manifest = read_manifest(records[0])
    manifest["items"][0]["path"] = str(gone.with_suffix(".tif"))
    gone.write_text(__import__("json").dumps(manifest))
    with pytest.raises(InputError, match="delete .*gone.json and run again"):
        cell_rasters([gone])
    # a cell file replaced or damaged since its record was written is not read unnoticed: the
    # workflow tracks the record, not the file
    raster = Path(read_manifest(records[1])["items"][0]["path"])
    original = raster.read_bytes()
    try:
        raster.write_bytes(original[:-1000])  # truncated
        with pytest.raises(InputError) as caught:
            cell_rasters(records)
        assert str(caught.value) == (
            f"{raster}: differs from the cell file its record {records[1]} pins "
            f"({len(original) - 1000} bytes, its record {len(original)}); delete {records[1]} "
            "and run again to fetch the cell again")
        raster.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size
        with pytest.raises(InputError, match=r"sha256 .* its record .*; delete .* and run again"):
            cell_rasters(records)
    finally:
        raster.write_bytes(original)
    assert cell_rasters(records) == rasters[:len(records)]


def test_a_land_cell_the_server_lacks_is_an_error_not_sea(cells_site: dict,
                                                          tmp_path: Path) -> None:
    """HTTP 404 is sea only for a cell without land of the region: for one of its four cells it
    is one error naming the URL and the fix, with nothing recorded; a cell recorded as sea in
    the lock file by hand is then accepted."""
    region_file = write_region_file(
        tmp_path / "regions", "moved", cells_site["bounds"], 256, stack=STACK,
        sources={"dem": {"kind": "cells", "url_template": cells_site["server"].base_url
                         + "/moved" + THREEDEP_TEMPLATE}})  # fmt: skip
    config = write_config(tmp_path / "config.yaml", {"moved": region_file})
    region = load_region(load_config(config), "moved")
    assert C.land_km2(region, Cell.parse("N64W148")) > 1.0  # a corner of the 5 x 5 km square
    assert C.land_km2(region, Cell.parse("N63W149")) == 0.0
    out = tmp_path / "sources"
    with pytest.raises(SourceError) as exc:
        C.fetch_cell(region, "dem", "N64W148", out)
    message = str(exc.value)
    url = cell_url(region.settings["sources"]["dem"], Cell.parse("N64W148"), "")
    assert url in message and "N64W148 holds" in message and "url_template" in message
    assert '{"absent": true}' in message and "\n" not in message
    lock = LockFile(lock_path(region.path))
    assert lock.entries() == {} and not list(out.rglob("N64W148*"))
    assert read_manifest(C.fetch_cell(region, "dem", "N63W149", out))["absent"] is True
    lock.record(url, {"absent": True})  # the user's word: no land there
    assert read_manifest(C.fetch_cell(region, "dem", "N64W148", out))["absent"] is True


def test_a_cell_the_first_product_lacks_comes_from_its_fallback(
    cells_site: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3DEP 1" without one of the four cells (as it lacks the western Aleutians): that cell comes
    from the first fallback (3DEP 2"), the 1" URL is pinned as absent in the lock file so that
    every later fetch takes the same product, and its raster comes after the 1" cells' (the first
    product wins where they overlap). A land cell no product has is one error naming each URL,
    nothing recorded; a sea cell no product has is sea, each URL pinned absent."""
    server, files = cells_site["server"], tmp_path / "files"
    lacking = "N65W147"
    written = [write_3dep(files / "partial", Cell.parse(c)) for c in CELLS if c != lacking]
    written.append(write_3dep2(files / "partial", Cell.parse(lacking)))
    serve(server, files, written)
    base = Bucket(server, "partial").endpoint  # 2" is listed: its files are dated
    region_file = write_region_file(
        tmp_path / "regions", "partial", cells_site["bounds"], 256, stack=STACK,
        sources={"dem": {"kind": "cells", "url_template": base + THREEDEP_TEMPLATE,
                         "fallback_templates": [base + THREEDEP2_TEMPLATE,
                                                base + "/glo" + GLO30_TEMPLATE]}})  # fmt: skip
    config = write_config(tmp_path / "config.yaml", {"partial": region_file})
    region = load_region(load_config(config), "partial")
    settings, out = region.settings["sources"]["dem"], tmp_path / "sources"
    first, second, third = cell_urls(settings, Cell.parse(lacking))
    assert first.endswith("/USGS_1_n66w147.tif") and second.endswith("/USGS_2_n66w147_{date}.tif")
    version = second.replace("{date}", "20210404")  # the newest dated 2" file of the cell

    records = {c: C.fetch_cell(region, "dem", c, out) for c in CELLS}
    manifest = read_manifest(records[lacking])
    assert manifest["url"] == version and manifest["tried"] == [first]
    assert manifest["rank"] == 1 and manifest["absent"] is False
    with rasterio.open(manifest["items"][0]["path"]) as src:
        assert src.width == 1812 and src.res[0] == pytest.approx(2 / 3600)
    for c in CELLS:
        if c != lacking:
            assert read_manifest(records[c])["rank"] == 0
            assert read_manifest(records[c])["tried"] == []
    lock = LockFile(lock_path(region.path))
    entries = lock.entries()
    assert entries[first] == {"absent": True, "served_by": version}
    assert entries[version]["sha256"] == manifest["items"][0]["sha256"]
    assert third not in entries and len(entries) == 5
    rasters = cell_rasters([records[c] for c in sorted(CELLS, key=lambda c: c != lacking)])
    assert rasters[-1].name == f"{lacking}.tif" and len(rasters) == 4
    # the maps' provenance (MAPPER_SOURCES) says which product served how many cells
    sea = C.fetch_cell(region, "dem", "N63W149", out)
    by_product = [{"template": t, "cells": n} for t, n in zip(
        [settings["url_template"], *settings["fallback_templates"]], [3, 1, 0], strict=True)]
    # N63W149 is a cell no stack of the region reads: its record is not counted ...
    assert sources_summary(region, out)["dem"]["cells"] == {
        "by_product": by_product, "sea": 0, "from_dated_versions": 0}  # fmt: skip
    # ... and counted as sea when a stack reads it (the region's stacks read land cells only)
    reads = {**C.region_cells(region)}
    reads[next(iter(reads))] = [*reads[next(iter(reads))], "N63W149"]
    monkeypatch.setattr(C, "region_cells", lambda _: reads)
    assert sources_summary(region, out)["dem"]["cells"] == {
        "by_product": by_product, "sea": 1, "from_dated_versions": 0}  # fmt: skip
    sea.unlink()
    entries = lock.entries()
    # fetched again (its record deleted, the job forced), a newer 2" version published since: the
    # kept file is verified, not fetched again; the 1" URL, pinned as standing in for the 2" one,
    # is not asked, nor is the 2" folder listed again: the lock pins the dated file
    serve(server, files, [write_3dep2(files / "partial", Cell.parse(lacking), "20250101")])
    records[lacking].unlink()
    kept = Path(manifest["items"][0]["path"])
    before = kept.stat().st_mtime_ns
    paths = [u.removeprefix(server.base_url) for u in (first, version, base + "/")]
    asked = [len(server.requests_for(p)) for p in paths]
    assert read_manifest(C.fetch_cell(region, "dem", lacking, out))["url"] == version
    assert kept.stat().st_mtime_ns == before and lock.entries() == entries
    assert [len(server.requests_for(p)) for p in paths] == asked
    # deleted, it is fetched again: the same dated file
    kept.unlink()
    assert read_manifest(C.fetch_cell(region, "dem", lacking, out))["url"] == version
    assert lock.entries() == entries and len(server.requests_for(paths[1])) == asked[1] + 1
    # the fallback taken out of the region file: the cell is not taken for sea, and the 1" URL,
    # whose lock entry names a product no longer among the cell's, is asked again (its 404 is
    # this run's, not the lock's word)
    asked_first = len(server.requests_for(paths[0]))
    no_fallback = load_region(load_config(write_config(tmp_path / "c1.yaml", {"partial": (
        write_region_file(tmp_path / "regions", "partial", cells_site["bounds"], 256, stack=STACK,
                          sources={"dem": {"kind": "cells",
                                           "url_template": base + THREEDEP_TEMPLATE}}))})),
        "partial")  # fmt: skip
    with pytest.raises(SourceError, match=f"{re.escape(first)}: HTTP 404, but cell {lacking}"):
        C.fetch_cell(no_fallback, "dem", lacking, tmp_path / "nofallback")
    assert len(server.requests_for(paths[0])) > asked_first
    # with the 2" fallback only (the 1" template gone), its pinned file serves the cell
    only_2 = load_region(load_config(write_config(tmp_path / "c3.yaml", {"partial": (
        write_region_file(tmp_path / "regions", "partial", cells_site["bounds"], 256, stack=STACK,
                          sources={"dem": {"kind": "cells", "fallback_templates": [],
                                           "url_template": base + THREEDEP2_TEMPLATE}}))})),
        "partial")  # fmt: skip
    assert read_manifest(C.fetch_cell(only_2, "dem", lacking, tmp_path / "only2"))["url"] == version
    # a 1" file published since, the fallback removed: asked again, the file there is an error
    # naming the lock entry to delete (the lock's word that 1" lacks the cell no longer holds)
    serve(server, files, [write_3dep(files / "partial", Cell.parse(lacking))])
    with pytest.raises(SourceError) as exc:
        C.fetch_cell(no_fallback, "dem", lacking, tmp_path / "nofallback")
    assert str(exc.value).startswith(f"{first}: the file changed upstream: {lock.path} records "
                                     "no file (HTTP 404), the server now gives sha256 ")
    assert f"delete the entry of {first} in {lock.path}" in str(exc.value)
    assert not list((tmp_path / "nofallback").rglob(f"{lacking}*"))
    # the elevation of the mixed cells: each pixel from its cell's product, the plane everywhere;
    # the first product's pixels wherever it has any would be cut by its files' edge
    window, bounds = region_window(cells_site)
    z, lon, lat = exact(bounds, "EPSG:4269")
    products = C.cell_products([records[c] for c in CELLS])
    assert [len(paths) for paths, _ in products.products] == [3, 1]
    assert products.products[1][1] == {(65, -147)}
    got = warp_dem(products, LATTICE, window).astype(np.float64)
    first_wins = warp_dem(rasters, LATTICE, window).astype(np.float64)
    assert not np.isnan(got).any()
    err, cut = np.abs(got - z), np.abs(first_wins - z)
    print(f"\n1\" + 2\" cells: |mapper - exact| {err.max():.2g} m; the first product wherever it "
          f"has pixels: {cut.max():.2g} m")
    assert float(err.max()) < 0.01 and float(cut.max()) > 0.1
    owner = dem_owner(window)
    assert np.array_equal(owner == 1, (lat >= 65.0) & (lon >= -147.0))
    # in any window: a pixel's owner and value do not depend on the window it is warped in
    part = Window(window.col_off + 100, window.row_off + 37, 300, 200)
    sub = (slice(37, 237), slice(100, 400))
    assert np.array_equal(dem_owner(part), owner[sub])
    assert np.array_equal(warp_dem(products, LATTICE, part), got[sub].astype(np.float32))
    # the stack given the records: its elevation band is that warp
    from mapper.bands import STACK_BANDS
    from mapper.stack import build_stack

    s2, climate = write_s2_and_climate(tmp_path, cells_site["bounds"])
    for tile in region.tiles():
        stack = build_stack(region, tile, [s2], list(records.values()), [climate],
                            tmp_path / "stacks" / f"{tile}.tif")  # fmt: skip
        with rasterio.open(stack) as ds:
            elevation = ds.read(STACK_BANDS.index("elevation") + 1)
        tile_window = LATTICE.tile_window(tile)
        rows = slice(int(tile_window.row_off - window.row_off), None)
        cols = slice(int(tile_window.col_off - window.col_off), None)
        assert np.array_equal(elevation, got[rows, cols][:256, :256].astype(np.float32)), tile

    # a land cell that no product has: one error naming each URL, nothing recorded
    moved = write_region_file(
        tmp_path / "regions", "moved", cells_site["bounds"], 256, stack=STACK,
        sources={"dem": {"kind": "cells", "url_template": base + "/no" + THREEDEP_TEMPLATE,
                         "fallback_templates": [base + "/no" + THREEDEP2_TEMPLATE]}})  # fmt: skip
    region = load_region(load_config(write_config(tmp_path / "c2.yaml", {"moved": moved})),
                         "moved")  # fmt: skip
    Bucket(server, "partial/no")  # a bucket without the cells
    urls = cell_urls(region.settings["sources"]["dem"], Cell.parse("N64W148"))
    with pytest.raises(SourceError) as exc:
        C.fetch_cell(region, "dem", "N64W148", tmp_path / "moved")
    message = str(exc.value)
    assert f"{urls[0]}: HTTP 404, {urls[1]}: no dated file listed" in message
    assert "\n" not in message
    assert "fallback_templates" in message
    lock = LockFile(lock_path(region.path))
    assert lock.entries() == {} and not list((tmp_path / "moved").rglob("N64W148*"))
    # a sea cell: sea, and each URL pinned absent
    sea = read_manifest(C.fetch_cell(region, "dem", "N63W149", tmp_path / "moved"))
    assert sea["absent"] is True and len(sea["tried"]) == 2
    assert all(v == {"absent": True} for v in lock.entries().values())
    assert len(lock.entries()) == 2


def dem_owner(window: Window) -> np.ndarray:
    from mapper.dem import cell_owner

    return cell_owner(LATTICE, window, [frozenset({(64, -148), (64, -147), (65, -148)}),
                                        frozenset({(65, -147)})])  # fmt: skip


def test_a_template_naming_the_wrong_corner_is_refused(cells_site: dict) -> None:
    """A 3DEP file asked for by its south edge is the cell south of the one wanted."""
    files = cells_site["files"]
    north_west_65 = files / THREEDEP_TEMPLATE.format(**Cell(64, -148).fields()).lstrip("/")
    C.check_cell_raster(north_west_65, Cell(64, -148), "u")
    with pytest.raises(InputError) as exc:
        C.check_cell_raster(north_west_65, Cell(65, -148), "https://x/USGS_1_n65w148.tif")
    text = str(exc.value)
    assert "https://x/USGS_1_n65w148.tif" in text and "url_template" in text
    assert "\n" not in text


def test_a_cell_answered_by_an_error_page_names_the_url_not_the_deleted_download(
        tmp_path: Path) -> None:
    """A server that answers 200 with an HTML page: the error names the URL and the fix, not the
    ``.part`` file the download deletes."""
    part = tmp_path / "N64W148.tif.part"
    part.write_text("<html><body>Service temporarily unavailable</body></html>")
    with pytest.raises(InputError) as exc:
        C.check_cell_raster(part, Cell(64, -148), "https://x/USGS_1_n65w148.tif")
    text = str(exc.value)
    assert text.startswith("https://x/USGS_1_n65w148.tif: what the server sent is not a raster (")
    assert text.endswith("check url_template, or fetch again if the server was failing (an "
                         "error page)")
    assert ".part" not in text


def test_cli_fetches_one_cell(cells_site: dict) -> None:
    record = cells_site["project"] / "resources" / "glo" / "sources" / "dem" / "N64W148.json"
    rc = main(["fetch", "--config", str(cells_site["config"]), "--region", "glo", "--source",
               "dem", "--cell", "N64W148", "--out", str(record)])  # fmt: skip
    assert rc == 0 and read_manifest(record)["absent"] is False
    assert record.with_suffix(".tif").exists()
    rc = main(["fetch", "--config", str(cells_site["config"]), "--region", "glo", "--source",
               "sentinel2", "--cell", "N64W148"])  # fmt: skip
    assert rc == 1


def test_cli_failure_is_one_line_naming_the_url(
    cells_site: dict, tmp_path: Path, capsys, monkeypatch  # noqa: ANN001
) -> None:
    """A 5xx that outlasts the retries: exit 1, one line naming the URL and the fix, no file."""
    from types import SimpleNamespace

    from httpserver import status

    from mapper.sources import http

    monkeypatch.setattr(http, "time", SimpleNamespace(sleep=lambda seconds: None))
    cell = Cell.parse("N64W147")
    path = GLO30_TEMPLATE.format(**cell.fields())
    server = cells_site["server"]
    server.add_faults(path, *[status(503)] * 5)
    out = tmp_path / "dem" / "N64W147.json"
    try:
        rc = main(["fetch", "--config", str(cells_site["config"]), "--region", "glo", "--source",
                   "dem", "--cell", "N64W147", "--out", str(out)])  # fmt: skip
    finally:
        server.faults[path].clear()
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert rc == 1 and len(errors) == 1, errors
    assert server.url(path) in errors[0] and "HTTP 503" in errors[0]
    assert "retry later" in errors[0]
    assert not any((tmp_path / "dem").glob("*"))


# -- the warp of several cells onto the lattice -------------------------------------------------


def gdalwarp_window(gdalwarp: str, inputs: list[Path], bounds: tuple, out: Path) -> np.ndarray:
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA")}
    cmd = [gdalwarp, "-q", "-overwrite", "-t_srs", "EPSG:3338", "-tr", "10", "10",
           "-te", *map(str, bounds), "-r", "cubic", "-et", "0", "-wo", "XSCALE=1",
           "-wo", "YSCALE=1", "-ot", "Float32", "-dstnodata", "nan",
           *map(str, inputs), str(out)]  # fmt: skip
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    with rasterio.open(out) as ds:
        return ds.read(1)


def gdalbuildvrt(inputs: list[Path], out: Path) -> Path:
    tool = system_tool("gdalbuildvrt", "gdal-bin")
    env = {k: v for k, v in os.environ.items() if k not in ("PROJ_LIB", "PROJ_DATA", "GDAL_DATA")}
    subprocess.run([tool, "-q", str(out), *map(str, inputs)], check=True, env=env,
                   capture_output=True, timeout=120)  # fmt: skip
    return out


def exact(bounds: tuple, geographic: str) -> np.ndarray:
    """The plane at the window's pixel centres (the oracle bilinear and cubic warps reproduce)."""
    left, bottom, right, top = bounds
    xs = np.arange(left + 5, right, 10.0)
    ys = np.arange(top - 5, bottom, -10.0)
    x, y = np.meshgrid(xs, ys)
    lon, lat = Transformer.from_crs("EPSG:3338", geographic, always_xy=True).transform(x, y)
    return surface(lon, lat), lon, lat


def region_window(site: dict) -> tuple[Window, tuple]:
    window = LATTICE.bounds_window(site["bounds"])
    return window, LATTICE.window_bounds(window)


def test_3dep_cells_warp_like_gdalwarp_and_the_exact_surface(
    cells_site: dict, gdalwarp: str, tmp_path: Path
) -> None:
    records = [fetch(cells_site, "threedep", c) for c in CELLS]
    rasters = cell_rasters(records)
    window, bounds = region_window(cells_site)
    got = warp_dem(rasters, LATTICE, window).astype(np.float64)
    ref = gdalwarp_window(gdalwarp, [gdalbuildvrt(rasters, tmp_path / "cells.vrt")], bounds,
                          tmp_path / "ref.tif").astype(np.float64)  # fmt: skip
    z, lon, lat = exact(bounds, "EPSG:4269")
    hole = (lon > HOLE[0]) & (lat > HOLE[1])
    assert np.isnan(got).any() and np.array_equal(np.isnan(got), np.isnan(ref))
    assert not np.isnan(got[~hole]).any()  # no seam at 147 W nor at 65 N
    diff = float(np.nanmax(np.abs(got - ref)))
    near_hole = (lon > HOLE[0] - 0.002) & (lat > HOLE[1] - 0.001)
    err = float(np.abs(got - z)[~near_hole].max())
    print(f"\n3DEP 2 x 2 cells: max |mapper - gdalwarp| {diff:.2g} m, |mapper - exact| {err:.2g} m")
    assert diff < 1e-3
    assert err < 0.01


def test_glo30_cells_join_without_a_seam(cells_site: dict, gdalwarp: str, tmp_path: Path) -> None:
    """GLO-30 cells do not overlap: warped one by one, the half pixel along each seam would be
    interpolated from one side only; joined, the mosaic is the exact surface there too."""
    rasters = cell_rasters([fetch(cells_site, "glo", c) for c in CELLS])
    window, bounds = region_window(cells_site)
    got = warp_dem(rasters, LATTICE, window).astype(np.float64)
    ref = gdalwarp_window(gdalwarp, [gdalbuildvrt(rasters, tmp_path / "cells.vrt")], bounds,
                          tmp_path / "ref.tif").astype(np.float64)  # fmt: skip
    z, lon, lat = exact(bounds, "EPSG:4326")
    assert not np.isnan(got).any() and not np.isnan(ref).any()
    diff, err = float(np.abs(got - ref).max()), float(np.abs(got - z).max())
    print(f"\nGLO-30 2 x 2 cells: max |mapper - gdalwarp| {diff:.2g} m, "
          f"|mapper - exact| {err:.2g} m")  # fmt: skip
    assert diff < 1e-3 and err < 0.01
    # the one-by-one warp this replaces: off by up to a quarter of a source pixel's rise
    one_by_one = gdalwarp_window(gdalwarp, rasters, bounds, tmp_path / "separate.tif")
    seam = float(np.nanmax(np.abs(one_by_one - z)))
    assert seam > 10 * err


def test_glo30_across_70n_where_the_spacing_changes(tmp_path: Path, gdalwarp: str) -> None:
    """North of 70 N a GLO-30 cell has 1200 columns, south of it 1800: two grids, warped one by
    one; still no gap at 70 N, and the same as gdalwarp of the two files."""
    files = tmp_path / "files"
    rasters = [write_glo30(files, Cell.parse(c)) for c in ("N70W150", "N69W150")]
    x, y = TO_ALBERS.transform(-149.5, 70.0)
    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 256)
    window = lattice.bounds_window((x - 1280, y - 1280, x + 1280, y + 1280))
    bounds = lattice.window_bounds(window)
    got = warp_dem(rasters, lattice, window).astype(np.float64)
    ref = gdalwarp_window(gdalwarp, rasters, bounds, tmp_path / "ref.tif").astype(np.float64)
    z, _, lat = exact(bounds, "EPSG:4326")
    assert not np.isnan(got).any()
    assert float(np.abs(got - ref).max()) < 1e-3
    away = np.abs(lat - 70.0) > 1.0 / 3600  # a source pixel from the change of grid
    assert float(np.abs(got - z)[away].max()) < 0.01
    assert float(np.abs(got - z).max()) < 0.5 * DZ_DLAT_PER_PIXEL


@pytest.mark.parametrize("writer", [write_glo30, write_3dep], ids=["glo30", "3dep"])
def test_cells_join_across_180_degrees(tmp_path: Path, writer) -> None:  # noqa: ANN001
    """Near Amchitka the cells N51E179 (179-180 E) and N51W180 (180-179 W) meet at 180 degrees.
    GLO-30's do not overlap: warped one by one they leave a gap of nodata there (PROJ gives
    the longitudes east of 180 as +179.99..., past the end of N51E179, never inside N51W180);
    joined across 180 they give the exact surface."""
    files = tmp_path / "files"
    rasters = [writer(files, Cell.parse(c)) for c in ("N51E179", "N51W180")]
    x, y = TO_ALBERS.transform(180.0, 51.5)
    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 256)
    window = lattice.bounds_window((x - 1280, y - 1280, x + 1280, y + 1280))
    bounds = lattice.window_bounds(window)
    got = warp_dem(rasters, lattice, window).astype(np.float64)
    z, lon, _ = exact(bounds, "EPSG:4326" if writer is write_glo30 else "EPSG:4269")
    assert (lon > 0).any() and (lon < 0).any()
    assert not np.isnan(got).any()
    assert float(np.abs(got - z).max()) < 0.01
    if writer is write_glo30:
        one_by_one = [warp_dem([r], lattice, window) for r in rasters]
        gap = np.isnan(one_by_one[0]) & np.isnan(one_by_one[1])
        assert gap.any()


DZ_DLAT_PER_PIXEL = DZ_DLAT / 3600  # the plane's rise over one GLO-30 row (m)


def write_s2_and_climate(folder: Path, bounds: tuple) -> tuple[Path, Path]:
    """SYNTHETIC Sentinel-2 (9 uint16 bands by code) and climate (3 described bands) rasters at
    100 m in EPSG:3338 over ``bounds`` grown by 2 km: what the stack needs besides the DEM."""
    from affine import Affine

    from mapper.bands import CLIMATE_BANDS
    from mapper.raster import write_geotiff

    left, bottom, right, top = bounds
    transform = Affine(100.0, 0.0, left - 2000, 0.0, -100.0, top + 2000)
    h, w = int((top - bottom + 4000) / 100), int((right - left + 4000) / 100)
    codes = ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]
    s2 = np.full((9, h, w), 200, dtype=np.uint16)  # reflectance 0.02 (DNs without ESA's offset)
    climate = np.stack([np.full((h, w), v, dtype=np.float32) for v in (300.0, 900.0, -25.0)])
    write_geotiff(folder / "s2.tif", s2, transform, "EPSG:3338", nodata=0, descriptions=codes)
    write_geotiff(folder / "climate.tif", climate, transform, "EPSG:3338",
                  descriptions=list(CLIMATE_BANDS))  # fmt: skip
    return folder / "s2.tif", folder / "climate.tif"


def test_a_tiles_stack_reads_its_cell_records(
    cells_site: dict, gdalwarp: str, tmp_path: Path
) -> None:
    """The stack given the records of its tile's cells (and a sea cell's) has the elevation
    band of gdalwarp of those cells, seam included."""
    from mapper.bands import STACK_BANDS
    from mapper.stack import build_stack

    region = cells_site["glo"]
    tile = region.tiles()[0]
    records = [fetch(cells_site, "glo", c) for c in region_cells(region)[tile]]
    records.append(fetch(cells_site, "glo", "N63W149"))  # sea: no file, no data
    s2, climate = write_s2_and_climate(tmp_path, cells_site["bounds"])
    out = build_stack(region, tile, [s2], records, [climate], tmp_path / f"{tile}.tif")
    with rasterio.open(out) as ds:
        elevation = ds.read(STACK_BANDS.index("elevation") + 1).astype(np.float64)
        assert ds.tags()["MAPPER_EMPTY"] == "false"
    bounds = region.lattice.tile_bounds(tile)
    rasters = cell_rasters(records)
    assert len(rasters) == len(records) - 1 >= 3  # cells on both sides of a seam
    ref = gdalwarp_window(gdalwarp, [gdalbuildvrt(rasters, tmp_path / "cells.vrt")], bounds,
                          tmp_path / "ref.tif").astype(np.float64)  # fmt: skip
    assert not np.isnan(elevation).any()
    assert float(np.abs(elevation - ref).max()) < 1e-3


def test_a_cell_beyond_the_crops_reach_is_read_without_complaint(
    cells_site: dict, tmp_path: Path
) -> None:
    """A tile's DEM window, with its hydrology halo, reaches cells farther than the crops do
    (N54W130 in British Columbia for Alaska): such a cell, checked against its own cell when it
    was fetched, is not refused as lying outside the region."""
    from mapper.stack import _check_sources

    region = cells_site["glo"]
    far = fetch(cells_site, "glo", "N69W150")  # 4 degrees north of the region
    s2, climate = write_s2_and_climate(tmp_path, cells_site["bounds"])
    sources = _check_sources(region, [s2], [far], [climate])
    assert [p.name for p in sources.dem.paths] == ["N69W150.tif"]
    with pytest.raises(InputError, match="does not overlap region glo"):  # a plain DEM file is
        _check_sources(region, [s2], cell_rasters([far]), [climate])  # still checked


# -- the workflow's plan ------------------------------------------------------------------------


def test_dry_run_plans_one_job_per_cell(cells_site: dict, tmp_path: Path) -> None:
    """A fresh working directory (nothing fetched) over the region ``glo``: one fetch job per
    cell the tiles read (4 cells for 4 tiles), each stack given its tile's cell records."""
    region_file = cells_site["project"] / "config" / "regions" / "glo.yaml"
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", {"glo": region_file})
    region = cells_site["glo"]
    tiles = region.tiles()
    project = WorkflowProject(tmp_path, "glo", 256, tiles, project_env())
    targets = [f"results/glo/stack/{t}.tif" for t in tiles]
    jobs = planned_jobs(project, *targets)
    assert jobs == {"fetch_dem_cell": len(CELLS), "stack": len(tiles)}
    run = run_snakemake(project, *targets, extra_args=["--dry-run", "--printshellcmds"])
    run.check()
    planned = sorted(set(re.findall(r"--cell (\S+)", run.log)))
    assert planned == sorted(CELLS)
    stack_dems = re.findall(r"--dem ((?:\S+\.json ?)+)", run.log)
    assert len(stack_dems) == len(tiles)
    for tile in tiles:
        cells = region_cells(region)[tile]
        assert any(s.split() == [f"resources/glo/sources/dem/{c}.json" for c in cells]
                   for s in stack_dems)  # fmt: skip
    assert yaml.safe_load(region_file.read_text())["sources"]["dem"]["kind"] == "cells"


def test_the_workflow_fetches_each_cell_once(cells_site: dict, tmp_path: Path) -> None:
    """Rule fetch_dem_cell for real, from the loopback server: the cells of every tile, each
    fetched once (4 jobs for 4 tiles), checked against the region's lock file."""
    region_file = cells_site["project"] / "config" / "regions" / "threedep.yaml"
    (tmp_path / "config").mkdir()
    write_config(tmp_path / "config" / "config.yaml", {"threedep": region_file})
    region = cells_site["threedep"]
    project = WorkflowProject(tmp_path, "threedep", 256, region.tiles(), project_env())
    records = sorted({f"resources/threedep/sources/dem/{c}.json"
                      for cs in region_cells(region).values() for c in cs})  # fmt: skip
    gets = len(cells_site["server"].log)
    lock = LockFile(lock_path(region.path))
    before = lock.entries()
    run_snakemake(project, *records, extra_args=["--cores", "2"]).check()
    after = lock.entries()
    for record in records:
        manifest = read_manifest(tmp_path / record)
        assert manifest["absent"] is False
        item = manifest["items"][0]
        assert Path(item["path"]) == Path(record).with_suffix(".tif")
        cell = (tmp_path / record).with_suffix(".tif")
        # the file fetched is the one the lock records (its first download's bytes)
        assert after[item["url"]] == {"sha256": file_sha256(cell), "size": cell.stat().st_size}
        assert item["sha256"] == after[item["url"]]["sha256"]
    assert {url: after[url] for url in before} == before  # no recorded entry was changed
    cell_gets = [r for r in cells_site["server"].log[gets:] if r["method"] == "GET"]
    assert len(cell_gets) == len(records) == 4
