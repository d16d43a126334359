"""A region is its polygon: the mapped area (boundary buffered by ``buffer_m``), the mapped and
context tiles, the cells inside, and (slow) the maps of an irregular polygon given in EPSG:4326
made at two nesting tile sizes, identical pixel for pixel and nodata outside the area."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.windows import Window
from tiny_region import ORIGIN, lonlat_boundary, pentagon, write_config, write_region_file
from workflow_project import (
    DEMO_CENTRE,
    REPO,
    make_project,
    run_snakemake,
    tiny_local_args,
)

from mapper.blending import CropLattice
from mapper.config import Region, load_config, load_region, read_boundary
from mapper.demo.sources import MARGIN
from mapper.grid import Lattice, cells_inside

CENTRE = (251_840.0, 1_637_440.0)  # the demo square's centre, EPSG:3338


def polygon_region(folder: Path, tile_px: int, buffer_m: float = 0.0,
                   prediction: dict | None = None) -> Region:
    """An irregular pentagon (about 3 km across, given in EPSG:4326) around the demo centre."""
    geojson = lonlat_boundary(pentagon(CENTRE, 1500.0))
    prediction = prediction or {"crop_px": 64, "stride_px": 24, "support_px": 48,
                                "stagger_px": 24, "sigma_scale": 0.25}
    region_file = write_region_file(folder, "poly", None, tile_px, geojson=geojson,
                                    buffer_m=buffer_m, training={"crop_px": 32},
                                    prediction=prediction)
    config = write_config(folder / f"config{tile_px}.yaml", {"poly": region_file})
    return load_region(load_config(config), "poly")


def test_buffer_defaults_to_zero_and_grows_the_area(tmp_path: Path) -> None:
    plain = polygon_region(tmp_path / "a", 64)
    assert plain.settings["buffer_m"] == 0 and plain.area().equals(plain.boundary())
    buffered = polygon_region(tmp_path / "b", 64, buffer_m=300.0)
    grown = buffered.area().area - plain.area().area
    # a buffer of d adds about perimeter x d (+ pi d^2 at the corners)
    expected = plain.boundary().length * 300.0 + np.pi * 300.0**2
    assert grown == pytest.approx(expected, rel=0.01)
    assert set(plain.tiles()) < set(buffered.tiles())


def test_cells_inside_do_not_depend_on_the_window(tmp_path: Path) -> None:
    """Per-cell answers asked tile by tile (64 and 128 px tiles, 20 m cells) equal those of one
    window over the whole area, and shapely's test on the centres (an independent oracle)."""
    region = polygon_region(tmp_path, 64, buffer_m=55.0)
    area = region.area()
    k = 2
    whole_lat = Lattice(*ORIGIN, 10.0, 64)
    window = whole_lat.bounds_window(area.bounds)
    r0, c0 = int(window.row_off) // 128 * 128, int(window.col_off) // 128 * 128
    h = (int(window.row_off + window.height) - r0 + 127) // 128 * 128
    w = (int(window.col_off + window.width) - c0 + 127) // 128 * 128
    out = Window(c0 // k, r0 // k, w // k, h // k)
    whole = cells_inside(area, whole_lat, out, k)
    rows, cols = np.mgrid[0:h // k, 0:w // k]
    x = ORIGIN[0] + (c0 // k + cols + 0.5) * 10.0 * k
    y = ORIGIN[1] - (r0 // k + rows + 0.5) * 10.0 * k
    assert np.array_equal(whole, shapely.contains_xy(area, x, y))
    assert 0 < whole.sum() < whole.size
    for tile_px in (64, 128):
        n = tile_px // k
        for i in range(0, h // k, n):
            for j in range(0, w // k, n):
                sub = Window(c0 // k + j, r0 // k + i, n, n)
                assert np.array_equal(cells_inside(area, whole_lat, sub, k),
                                      whole[i:i + n, j:j + n])


def test_crop_reach_is_the_union_of_the_crops() -> None:
    crops = CropLattice(64, 24, 0.25, factor=4, support_px=48, stagger_px=24)
    for out in (Window(3, 5, 16, 16), Window(100, 37, 32, 16)):
        starts = [(c.rows.start, c.cols.start) for c in crops.crops_for(out)]
        top, left = min(r for r, _ in starts), min(c for _, c in starts)
        bottom = max(r for r, _ in starts) + 64
        right = max(c for _, c in starts) + 64
        assert crops.reach(out) == Window(left, top, right - left, bottom - top)


def test_a_tile_reads_the_pixels_of_cells_straddling_its_edge() -> None:
    """30 m cells on 64 px tiles straddle tile edges by a pixel; with abutting crops (stride equal
    to the support) none reaches a straddling cell's far pixel, which the validity mask reads:
    :meth:`CropLattice.reads` holds the cells' pixels as well as the crops'."""
    crops = CropLattice(32, 32, 0.25, factor=3, support_px=None, stagger_px=0)
    short = 0
    for a in range(0, 64 * 12, 64):  # tiles along an axis
        out = crops.out_window(Window(a, a, 64, 64))
        cells = Window(out.col_off * 3, out.row_off * 3, out.width * 3, out.height * 3)
        reads, reach = crops.reads(out), crops.reach(out)
        for w in (cells, reach):  # both inside what is read
            assert reads.col_off <= w.col_off and reads.row_off <= w.row_off
            assert w.col_off + w.width <= reads.col_off + reads.width
            assert w.row_off + w.height <= reads.row_off + reads.height
        short += (cells.col_off < reach.col_off
                  or cells.col_off + cells.width > reach.col_off + reach.width)
    assert short  # the case: some tile's crops alone miss a pixel of its cells


@pytest.mark.parametrize("tile_px", [64, 128])
def test_context_tiles_cover_every_pixel_a_crop_reads(tmp_path: Path, tile_px: int) -> None:
    """Every lattice pixel within a crop of a mapped cell (prediction) or of a point of the area
    (training) lies in a stacked tile, at any tile size; a tile's predict job gets every stacked
    tile its crops reach; only tiles meeting the area are mapped."""
    region = polygon_region(tmp_path, tile_px, buffer_m=40.0)
    lattice, area = region.lattice, region.area()
    mapped, stacked = set(region.tiles()), set(region.stacked_tiles())
    assert mapped < stacked
    reach = region.context_px * lattice.res
    assert region.context_px == 64
    left, bottom, right, top = area.bounds
    grown = lattice.bounds_window((left - reach, bottom - reach, right + reach, top + reach))
    within_reach = shapely.buffer(area, reach - 1.0)  # inside the square reach of the area
    for tile in lattice.tiles_in_window(grown):
        box = shapely.box(*lattice.tile_bounds(tile))
        if shapely.intersects(box, within_reach):
            assert tile in stacked, tile
        if tile in stacked:  # and no farther than a crop from the area
            assert shapely.intersects(shapely.box(*(np.array(box.bounds)
                                                    + [-reach, -reach, reach, reach])), area)
        meets = shapely.intersects(area, box) and not shapely.touches(area, box)
        assert (tile in mapped) == meets
    crops = region.crop_lattice()
    size = crops.crop_px
    for tile in mapped:  # the stacked tiles that the tile's crops, one by one, read
        read = set()
        for crop in crops.crops_for(crops.out_window(lattice.tile_window(tile))):
            window = Window(crop.cols.start, crop.rows.start, size, size)
            read |= set(lattice.tiles_in_window(window))
        expected = sorted(read & stacked)
        assert region.tile_context(tile) == expected and tile in expected


def test_demo_sources_cover_the_context_of_the_demo_square(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """The demo's sources reach MARGIN (2 km) beyond the region's box, more than a crop's reach
    (64 px, 640 m), so the demo's and the tests' edge pixels see synthetic data as interior ones
    do."""
    monkeypatch.chdir(REPO)  # the repository's config names its files relative to it
    config = load_config(REPO / "config" / "config.yaml")
    demo = load_region(config, "demo")
    assert demo.settings["buffer_m"] == 0
    assert demo.context_px * demo.lattice.res < MARGIN
    alaska = load_region(config, "alaska")
    assert alaska.settings["buffer_m"] == 2500
    assert alaska.area().contains(read_boundary(alaska.settings["boundary"]))


def distance_bands(nsp: Path, area: shapely.Geometry, cells: int = 2, inner: int = 30
                   ) -> tuple[float, float, int, int]:
    """Mean NSP (percent) of the mapped cells within ``cells`` cells of the area's edge, and of
    the ``inner`` cells' band inside them; their counts."""
    with rasterio.open(nsp) as ds:
        values, t, res = ds.read(1), ds.transform, ds.res[0]
    rows, cols = np.mgrid[0:values.shape[0], 0:values.shape[1]]
    x, y = t.c + (cols + 0.5) * res, t.f - (rows + 0.5) * res
    depth = shapely.distance(area.boundary, shapely.points(x, y)) / res
    ok = (values != 255) & shapely.contains_xy(area, x, y)
    edge = ok & (depth < cells)
    inside = ok & (depth >= cells) & (depth < cells + inner)
    return float(values[edge].mean()), float(values[inside].mean()), int(edge.sum()), int(
        inside.sum())


@pytest.mark.slow
@pytest.mark.workflow
def test_polygon_maps_are_identical_at_two_tile_sizes(tmp_path: Path) -> None:
    """The tiny settings on an irregular pentagon given in EPSG:4326 (about 3.3 x 3 km around the
    demo centre, buffered by 60 m): maps made with 256 px tiles and, from the same models, with
    128 px tiles (scripts/compare_tilings.py) are identical pixel for pixel, edge tiles included,
    and every pixel whose centre lies outside the buffered pentagon is nodata. (That the demo
    sources reach beyond the region, so that its context tiles read them, is
    test_demo_sources_cover_the_context_of_the_demo_square; the NSP near the edge and inside is
    printed for the log.)"""
    centre = (DEMO_CENTRE[0] + 600.0, DEMO_CENTRE[1] - 400.0)  # off the lattice's corners
    geojson = lonlat_boundary(pentagon(centre, 1700.0))
    project = make_project(tmp_path / "p256", tile_px=256, geojson=geojson, buffer_m=60.0)
    assert len(project.stacked) > len(project.tiles)
    run = run_snakemake(project, *project.maps(), extra_args=tiny_local_args(), timeout=2400)
    print(f"\npolygon region, 256 px tiles: {len(project.tiles)} mapped, "
          f"{len(project.stacked)} stacked; {run.seconds:.0f} s")
    region = load_region(load_config(project.config), project.region)
    area = region.area()
    with rasterio.open(project.path(project.maps()[0])) as ds:
        left, bottom, right, top = ds.bounds
        a_left, a_bottom, a_right, a_top = area.bounds
        assert left <= a_left < left + ds.res[0] and right - ds.res[0] < a_right <= right
        assert bottom <= a_bottom < bottom + ds.res[0] and top - ds.res[0] < a_top <= top
    compare = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_tilings.py"), "--project",
         str(project.root), "--region", project.region, "--tile-px", "128", "--work",
         str(tmp_path / "p128"), "--cores", "2"],
        capture_output=True, text=True, env=project.env, timeout=2400)
    assert compare.returncode == 0, compare.stdout[-3000:] + compare.stderr[-3000:]
    smaller = load_region(load_config(tmp_path / "p128" / "config" / "config.yaml"),
                          project.region)
    assert len(smaller.stacked_tiles()) > len(smaller.tiles()) > len(project.tiles)
    figures, _ = json.JSONDecoder().raw_decode(compare.stdout[compare.stdout.index("{"):])
    print(json.dumps(figures, indent=1))
    for name in ("nsp_tiny", "soilorder_tiny", "soilorder_tiny_probabilities"):
        f = figures[name]
        assert f["nodata_identical"] and f["outside_all_nodata"], (name, f)
        assert f["max_count_diff"] == 0 and f["share_identical"] == 1.0, (name, f)
        assert f["edge_tile_pixels"] > 0 and f["edge_tile_pixels_differing"] == 0, (name, f)
        assert f["outside_pixels"] > 0
    edge, inside, n_edge, n_inside = distance_bands(project.path(project.maps()[0]), area)
    print(f"NSP mean within 2 cells of the edge {edge:.1f} % ({n_edge} cells), 2-32 cells in "
          f"{inside:.1f} % ({n_inside} cells)")


def test_compare_tilings_refuses_a_tile_size_the_region_cannot_use(tmp_path: Path) -> None:
    """A tile size that the region's hydrology blocks (1024 px by default) do not nest with stops
    compare_tilings before it copies anything: one line naming the region file, key and fix."""
    project = tmp_path / "project"
    region_file = write_region_file(project / "config" / "regions", "poly", None, 64,
                                    geojson=lonlat_boundary(pentagon(CENTRE, 1500.0)))
    write_config(project / "config" / "config.yaml", {"poly": region_file})
    work = tmp_path / "work"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "compare_tilings.py"), "--project", str(project),
         "--region", "poly", "--tile-px", "96", "--work", str(work)],
        capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and run.stdout == ""
    assert run.stderr.splitlines() == [
        f"error: --tile-px 96 does not fit region poly: {region_file} + region_overrides.poly of "
        "config/config.yaml: key 'stack.hydro_block_px' (1024) and tile_px (96) must nest (one "
        "divides the other); set hydro_block_px to a divisor or multiple of 96"]
    assert not work.exists()


def test_tiles_command_lists_mapped_or_stacked_tiles(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    from mapper.cli import main

    region = polygon_region(tmp_path, 64, buffer_m=40.0)
    config = str(tmp_path / "config64.yaml")
    for extra, expected in (([], region.tiles()), (["--stacked"], region.stacked_tiles())):
        assert main(["tiles", "poly", "--config", config, *extra]) == 0
        assert capsys.readouterr().out.split() == expected
        assert main(["tiles", "--region", "poly", "--config", config, *extra]) == 0
        assert capsys.readouterr().out.split() == expected
    assert main(["tiles", "--config", config]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: give one region: python -m mapper tiles <region> [--stacked] (or --region "
        "<region>)")
    # a boundary in lon/lat that lies west of the lattice (the CRS taken for the wrong one):
    # one line naming it, not an empty list
    far = {"type": "Polygon", "coordinates": [[[10.0, 50.0], [10.1, 50.0], [10.1, 50.1],
                                               [10.0, 50.1], [10.0, 50.0]]]}
    far_file = write_region_file(tmp_path / "far", "far", None, 64, geojson=far)
    far_config = write_config(tmp_path / "far" / "config.yaml", {"far": far_file})
    assert main(["tiles", "far", "--config", str(far_config)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: {far_file.with_suffix('.geojson')}: region 'far' "
                                   "meets no tile of the lattice")
