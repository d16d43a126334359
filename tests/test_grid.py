"""Tests of mapper.grid: tile ids, windows, bounds and transforms agree; tiles of a boundary.

The statewide tests read the shipped Alaska boundary (config/regions/alaska.geojson) and check the
tile list against real places, projected from their WGS84 coordinates with pyproj.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio.transform
import rasterio.windows
import shapely
from pyproj import Transformer
from rasterio.windows import Window

from mapper.config import load_config, load_region, read_boundary
from mapper.grid import Lattice, tiles_of

ROOT = Path(__file__).resolve().parent.parent
X0, Y0, RES = -2_600_000.0, 2_600_000.0, 10.0

# (lon, lat) WGS84 of places that must fall in a tile of the state.
PLACES = {
    "Utqiagvik": (-156.7886, 71.2906),
    "Fairbanks": (-147.7164, 64.8378),
    "Juneau": (-134.4197, 58.3019),
    "Ketchikan": (-131.6461, 55.3422),
    "Kodiak": (-152.4072, 57.7900),
    "Nome": (-165.4064, 64.5011),
    "Unalaska": (-166.5367, 53.8739),
    "Attu": (173.1800, 52.8400),  # Near Islands, west of 180 degrees
    "Gambell": (-171.7375, 63.7797),  # St. Lawrence Island
    "St. Paul": (-170.2847, 57.1253),  # Pribilof Islands
}
# Places whose tile must not be in the state: open Pacific and Yukon, Canada.
OUTSIDE = {
    "North Pacific 50N 150W": (-150.0, 50.0),
    "Whitehorse, Yukon": (-135.0568, 60.7212),
    "Mayo, Yukon": (-135.9000, 63.5900),
}


@pytest.fixture
def lattice() -> Lattice:
    return Lattice(X0, Y0, RES, 256)


@pytest.fixture(scope="module")
def alaska() -> tuple[shapely.Geometry, Lattice]:
    """The shipped state boundary (EPSG:3338) and the statewide lattice (tile_px 4096)."""
    config = load_config(ROOT / "config" / "config.yaml")
    region = load_region(config, "alaska")
    boundary = read_boundary(ROOT / region.settings["boundary"])
    return boundary, region.lattice


def to_3338(lon: float, lat: float) -> tuple[float, float]:
    return Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True).transform(lon, lat)


# -- ids, windows, bounds, transforms -----------------------------------------------------------
@pytest.mark.parametrize("row, col", [(0, 0), (3, 7), (63, 90), (1234, 9999), (10000, 12345)])
def test_tile_id_round_trip(lattice: Lattice, row: int, col: int) -> None:
    tile = lattice.tile_id(row, col)
    assert lattice.parse(tile) == (row, col)
    if row < 10000 and col < 10000:
        assert tile == f"R{row:04d}C{col:04d}"


@pytest.mark.parametrize(
    "bad", ["", "R1C1", "R0001-C0001", "r0001c0001", "R0001C0001.tif", "C0001R0001"]
)
def test_parse_rejects_non_ids(lattice: Lattice, bad: str) -> None:
    with pytest.raises(ValueError, match="not a tile id"):
        lattice.parse(bad)


def test_tile_id_rejects_negative(lattice: Lattice) -> None:
    with pytest.raises(ValueError):
        lattice.tile_id(-1, 0)


def test_tile_bounds_window_round_trip(lattice: Lattice) -> None:
    size = lattice.tile_px * RES
    for tile in ["R0000C0000", "R0003C0007", "R0123C0456"]:
        row, col = lattice.parse(tile)
        window = lattice.tile_window(tile)
        assert window == Window(col * 256, row * 256, 256, 256)
        bounds = lattice.tile_bounds(tile)
        left, top = X0 + col * size, Y0 - row * size
        assert bounds == (left, top - size, left + size, top)
        assert lattice.window_bounds(window) == bounds
        assert lattice.bounds_window(bounds) == window
        left, bottom, right, top = bounds
        assert lattice.tile_of_xy((left + right) / 2, (bottom + top) / 2) == tile
        assert lattice.tile_shape == (256, 256)


def test_windows_agree_with_rasterio(lattice: Lattice) -> None:
    """Our window transforms and bounds equal rasterio's, from the whole lattice's transform."""
    rng = np.random.default_rng(3)
    for _ in range(50):
        col, row = (int(v) for v in rng.integers(0, 200_000, 2))
        w, h = (int(v) for v in rng.integers(1, 5000, 2))
        window = Window(col, row, w, h)
        assert lattice.window_transform(window) == rasterio.windows.transform(
            window, lattice.transform
        )
        assert lattice.window_bounds(window) == pytest.approx(
            rasterio.windows.bounds(window, lattice.transform), abs=1e-6
        )
        assert lattice.bounds_window(lattice.window_bounds(window)) == window
    tile = "R0012C0034"
    t = lattice.tile_transform(tile)
    assert t == rasterio.windows.transform(lattice.tile_window(tile), lattice.transform)
    left, bottom, right, top = lattice.tile_bounds(tile)
    assert t @ (0, 0) == (left, top)  # pixel-corner convention, as GDAL
    assert t @ (256, 256) == (right, bottom)


def test_bounds_window_snaps_outward(lattice: Lattice) -> None:
    # bounds inside one pixel -> that pixel
    assert lattice.bounds_window((X0 + 12, Y0 - 18, X0 + 13, Y0 - 11)) == Window(1, 1, 1, 1)
    # straddling pixel edges -> every pixel touched
    assert lattice.bounds_window((X0 + 5, Y0 - 25, X0 + 15, Y0 - 5)) == Window(0, 0, 2, 3)
    # floating noise on exact edges does not add a pixel
    left = X0 + 0.1 + 0.2 - 0.3
    assert lattice.bounds_window((left, Y0 - 30.000000001, X0 + 20.0000000001, Y0)) == Window(
        0, 0, 2, 3
    )


def test_tile_of_xy_corners_pixel_corner_convention(lattice: Lattice) -> None:
    """A tile owns its left and top edges (and upper-left corner), not its right and bottom ones,
    as lattice pixels do: x in [left, right), y in (bottom, top]."""
    tile = "R0010C0020"
    left, bottom, right, top = lattice.tile_bounds(tile)
    assert lattice.tile_of_xy(left, top) == tile
    assert lattice.tile_of_xy(right - 1e-6, bottom + 1e-6) == tile
    assert lattice.tile_of_xy(right, top) == "R0010C0021"
    assert lattice.tile_of_xy(left, bottom) == "R0011C0020"
    assert lattice.tile_of_xy(right, bottom) == "R0011C0021"
    assert lattice.tile_of_xy(left - 1e-6, top + 1e-6) == "R0009C0019"


def test_tile_of_xy_agrees_with_pixel_rowcol(lattice: Lattice) -> None:
    """The tile of a point is the tile of the lattice pixel holding it (rasterio's rowcol)."""
    rng = np.random.default_rng(5)
    # random points, half of them exactly on pixel corners
    xs = X0 + rng.uniform(0, 3e6, 400)
    ys = Y0 - rng.uniform(0, 3e6, 400)
    xs[::2] = np.round(xs[::2] / RES) * RES
    ys[::2] = np.round(ys[::2] / RES) * RES
    rows, cols = rasterio.transform.rowcol(lattice.transform, xs, ys)
    for x, y, r, c in zip(xs, ys, rows, cols, strict=True):
        assert lattice.tile_of_xy(x, y) == lattice.tile_id(r // 256, c // 256)


def test_pixels_of_agrees_with_rasterio_rowcol_and_the_tile_of_a_point(lattice: Lattice) -> None:
    """The pixel of a point (its sample, its training query, its held-out crop) is rasterio's
    rowcol on the lattice, corners included, and lies in the point's tile."""
    rng = np.random.default_rng(6)
    xs = X0 + rng.uniform(0, 3e6, 400)
    ys = Y0 - rng.uniform(0, 3e6, 400)
    xs[::2] = np.round(xs[::2] / RES) * RES
    ys[::2] = np.round(ys[::2] / RES) * RES
    rows, cols = lattice.pixels_of(xs, ys)
    assert rows.dtype == cols.dtype == np.int64
    expected = rasterio.transform.rowcol(lattice.transform, xs, ys)
    np.testing.assert_array_equal(rows, expected[0])
    np.testing.assert_array_equal(cols, expected[1])
    for x, y, r, c in zip(xs[:50], ys[:50], rows[:50], cols[:50], strict=True):
        assert lattice.tile_of_xy(x, y) == lattice.tile_id(r // 256, c // 256)


def test_neighbours(lattice: Lattice) -> None:
    tile = "R0010C0020"
    n1 = lattice.neighbours(tile)
    assert len(n1) == 8 and tile not in n1 and len(set(n1)) == 8
    assert {lattice.parse(t) for t in n1} == {
        (r, c) for r in (9, 10, 11) for c in (19, 20, 21) if (r, c) != (10, 20)
    }
    n2 = lattice.neighbours(tile, radius=2)
    assert len(n2) == 24 and set(n1) < set(n2)
    assert all(max(abs(r - 10), abs(c - 20)) <= 2 for r, c in map(lattice.parse, n2))
    # at the lattice origin there is nothing above or to the left
    assert sorted(lattice.neighbours("R0000C0000")) == ["R0000C0001", "R0001C0000", "R0001C0001"]
    # symmetric: each neighbour has the tile as its neighbour
    assert all(tile in lattice.neighbours(t) for t in n1)


def test_tiles_in_window(lattice: Lattice) -> None:
    assert lattice.tiles_in_window(lattice.tile_window("R0002C0003")) == ["R0002C0003"]
    # one pixel past the tile's right and bottom edges reaches three more tiles
    assert lattice.tiles_in_window(Window(3 * 256, 2 * 256, 257, 257)) == [
        "R0002C0003",
        "R0002C0004",
        "R0003C0003",
        "R0003C0004",
    ]
    # inside one tile
    assert lattice.tiles_in_window(Window(3 * 256 + 10, 2 * 256 + 10, 5, 5)) == ["R0002C0003"]
    # a window hanging over the origin keeps only real tiles
    assert lattice.tiles_in_window(Window(-10, -10, 20, 20)) == ["R0000C0000"]
    # every pixel of a window is in one of its tiles
    window = Window(1000, 700, 600, 300)
    tiles = lattice.tiles_in_window(window)
    assert tiles == sorted(tiles)
    for r in (700, 999):
        for c in (1000, 1599):
            x, y = lattice.transform @ (c + 0.5, r + 0.5)
            assert lattice.tile_of_xy(x, y) in tiles


# -- tiles of a boundary --------------------------------------------------------------------------
def test_tiles_of_square_on_tile_edges(lattice: Lattice) -> None:
    """A square exactly covering 2 x 2 tiles gives those 4; tiles it only touches do not count."""
    left, _, _, top = lattice.tile_bounds("R0010C0020")
    _, bottom, right, _ = lattice.tile_bounds("R0011C0021")
    square = shapely.box(left, bottom, right, top)
    assert tiles_of(square, lattice) == ["R0010C0020", "R0010C0021", "R0011C0020", "R0011C0021"]
    # one metre more on the right reaches the next column
    wider = shapely.box(left, bottom, right + 1, top)
    assert tiles_of(wider, lattice) == sorted(
        ["R0010C0020", "R0010C0021", "R0011C0020", "R0011C0021", "R0010C0022", "R0011C0022"]
    )


def test_tiles_of_excludes_tiles_only_touched(lattice: Lattice) -> None:
    """Tiles inside the boundary's bounding box that share only an edge or a corner with it."""
    a, b, c = (
        shapely.box(*lattice.tile_bounds(t)) for t in ["R0010C0020", "R0011C0021", "R0011C0020"]
    )
    # an L of three tiles: the fourth tile of its bounding box touches it along two edges
    assert tiles_of(shapely.union_all([a, b, c]), lattice) == [
        "R0010C0020",
        "R0011C0020",
        "R0011C0021",
    ]
    # two tiles meeting at one corner point
    assert tiles_of(shapely.union_all([a, b]), lattice) == ["R0010C0020", "R0011C0021"]


def test_tiles_of_corner_touch_and_small_shapes(lattice: Lattice) -> None:
    left, bottom, right, top = lattice.tile_bounds("R0005C0005")
    # a triangle touching the tile only at its corner (right, bottom) and lying in R0006C0006
    tri = shapely.Polygon([(right, bottom), (right + 100, bottom), (right, bottom - 100)])
    assert tiles_of(tri, lattice) == ["R0006C0006"]
    assert tiles_of(shapely.box(left + 1, bottom + 1, left + 2, bottom + 2), lattice) == [
        "R0005C0005"
    ]
    assert tiles_of(shapely.Polygon(), lattice) == []


def test_tiles_of_matches_brute_force(lattice: Lattice) -> None:
    """A random star-shaped multipolygon: the tiles are those whose overlap has positive area."""
    rng = np.random.default_rng(11)
    parts = []
    for cx, cy in [(200_000, 1_600_000), (215_000, 1_590_000)]:
        angles = np.sort(rng.uniform(0, 2 * math.pi, 30))
        radii = rng.uniform(2_000, 9_000, 30)
        ring = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
        parts.append(shapely.Polygon(ring))
    geom = shapely.union_all(parts)
    found = tiles_of(geom, lattice)
    candidates = lattice.tiles_in_window(lattice.bounds_window(geom.bounds))
    expected = [
        t for t in candidates if shapely.box(*lattice.tile_bounds(t)).intersection(geom).area > 0
    ]
    assert found == sorted(expected)
    assert len(found) > 4


# -- the state ----------------------------------------------------------------------------------
def test_alaska_boundary_is_the_state(alaska: tuple[shapely.Geometry, Lattice]) -> None:
    boundary, _ = alaska
    assert boundary.is_valid and boundary.geom_type == "MultiPolygon"
    assert 1.4e12 < boundary.area < 1.8e12  # m^2: land of the state, about 1.5 million km^2
    left, bottom, right, top = boundary.bounds
    # continuous across 180 degrees: Attu (west) and the panhandle (east) 3,700 km apart, not
    # split at the ends of a wrapped plane
    assert -2.2e6 < left < -2.1e6 and 1.45e6 < right < 1.55e6
    assert 0.4e6 < bottom and top < 2.4e6


def test_alaska_tiles(alaska: tuple[shapely.Geometry, Lattice]) -> None:
    boundary, lattice = alaska
    assert lattice.tile_px == 4096
    tiles = tiles_of(boundary, lattice)
    assert tiles == sorted(set(tiles))
    assert 1000 < len(tiles) < 1500  # about a thousand 41 km tiles
    present = set(tiles)
    for name, (lon, lat) in PLACES.items():
        tile = lattice.tile_of_xy(*to_3338(lon, lat))
        assert tile in present, f"{name} ({lon}, {lat}) -> {tile} missing"
    for name, (lon, lat) in OUTSIDE.items():
        tile = lattice.tile_of_xy(*to_3338(lon, lat))
        assert tile not in present, f"{name} ({lon}, {lat}) -> {tile} is in the state's tiles"


def test_alaska_every_tile_holds_land(alaska: tuple[shapely.Geometry, Lattice]) -> None:
    """No tile wholly in the ocean or in Canada, and no land tile left out: computed again
    independently, as the area each candidate tile shares with the state's polygons."""
    boundary, lattice = alaska
    tiles = tiles_of(boundary, lattice)
    candidates = lattice.tiles_in_window(lattice.bounds_window(boundary.bounds))
    boxes = shapely.box(*np.array([lattice.tile_bounds(t) for t in candidates]).T)
    polygons = np.array(list(boundary.geoms))
    box_i, poly_i = shapely.STRtree(polygons).query(boxes, predicate="intersects")
    area = np.zeros(len(candidates))
    np.add.at(area, box_i, shapely.area(shapely.intersection(boxes[box_i], polygons[poly_i])))
    assert tiles == [t for t, a in zip(candidates, area, strict=True) if a > 0]
