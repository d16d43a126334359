"""The Alaska lattice: one 10 m grid in EPSG:3338 cut into square tiles with stable ids.

Conventions (everything in the project follows them):

- CRS EPSG:3338 (NAD83 / Alaska Albers), metres.
- The lattice's upper-left *corner* is ``(origin_x, origin_y)``. Lattice pixel ``(row, col)``
  covers ``x in [origin_x + col*res, origin_x + (col+1)*res)`` and ``y in (origin_y -
  (row+1)*res, origin_y - row*res]``; its centre is at ``+0.5`` pixel in both axes.
- A tile is a block of ``tile_px x tile_px`` lattice pixels. Tile ``(trow, tcol)`` starts at
  lattice pixel ``(trow*tile_px, tcol*tile_px)`` and is named ``R{trow:04d}C{tcol:04d}``. Because
  the origin and the tile size are fixed in config, a tile id names the same pixels forever, so
  reruns and caches stay valid.
- Windows are ``rasterio.windows.Window`` objects in *global* lattice pixel coordinates.

Everything here is pure arithmetic (no I/O): the statewide tile list is computed at DAG-build time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from rasterio.windows import Window

from mapper.errors import ConfigError

CRS = "EPSG:3338"
_INDEX = r"\d{4}\d*"  # a tile row or column: at least 4 digits
TILE_PATTERN = rf"R{_INDEX}C{_INDEX}"
"""A tile id (:meth:`Lattice.tile_id`: rows and columns of at least 4 digits), as a regular
expression without anchors: the workflow's ``tile`` wildcard and the predict log's line use it
(Snakemake's wildcard constraints take ``{4}`` but not ``{4,}``)."""
_TILE_ID = re.compile(rf"^R({_INDEX})C({_INDEX})$")

Bounds = tuple[float, float, float, float]  # (left, bottom, right, top) in metres


@dataclass(frozen=True)
class Lattice:
    """A fixed pixel lattice in EPSG:3338 and its cut into tiles of ``tile_px`` pixels."""

    origin_x: float
    origin_y: float
    res: float
    tile_px: int
    crs: str = CRS

    def __post_init__(self) -> None:
        if self.res <= 0 or self.tile_px <= 0:
            raise ConfigError(
                f"grid: res ({self.res}) and tile_px ({self.tile_px}) must be positive; fix config"
            )

    @classmethod
    def from_config(cls, grid: dict, tile_px: int) -> Lattice:
        """Build from the validated ``grid`` section of config and a region's ``tile_px``."""
        ox, oy = grid["origin"]
        return cls(float(ox), float(oy), float(grid["res"]), int(tile_px), grid["crs"])

    # -- tile ids -------------------------------------------------------------------------------
    @staticmethod
    def tile_id(row: int, col: int) -> str:
        """The id of tile ``(row, col)`` in tile units from the origin."""
        if row < 0 or col < 0:
            raise ValueError(f"tile ({row}, {col}) lies above or left of the lattice origin")
        return f"R{row:04d}C{col:04d}"

    @staticmethod
    def parse(tile_id: str) -> tuple[int, int]:
        """``"R0012C0034"`` -> ``(12, 34)``."""
        m = _TILE_ID.match(tile_id)
        if not m:
            raise ValueError(f"{tile_id!r} is not a tile id (expected like 'R0012C0034')")
        return int(m.group(1)), int(m.group(2))

    # -- geometry -------------------------------------------------------------------------------
    @property
    def tile_shape(self) -> tuple[int, int]:
        return (self.tile_px, self.tile_px)

    @property
    def transform(self) -> Affine:
        """Transform of the whole lattice (pixel corner convention, as GDAL)."""
        return Affine(self.res, 0.0, self.origin_x, 0.0, -self.res, self.origin_y)

    def tile_window(self, tile_id: str) -> Window:
        row, col = self.parse(tile_id)
        p = self.tile_px
        return Window(col * p, row * p, p, p)

    def window_bounds(self, window: Window) -> Bounds:
        left = self.origin_x + window.col_off * self.res
        top = self.origin_y - window.row_off * self.res
        return (left, top - window.height * self.res, left + window.width * self.res, top)

    def window_transform(self, window: Window) -> Affine:
        left, _, _, top = self.window_bounds(window)
        return Affine(self.res, 0.0, left, 0.0, -self.res, top)

    def bounds_window(self, bounds: Bounds) -> Window:
        """The smallest lattice window covering ``bounds`` (snapped outward to whole pixels)."""
        left, bottom, right, top = bounds
        c0 = math.floor(round((left - self.origin_x) / self.res, 9))
        c1 = math.ceil(round((right - self.origin_x) / self.res, 9))
        r0 = math.floor(round((self.origin_y - top) / self.res, 9))
        r1 = math.ceil(round((self.origin_y - bottom) / self.res, 9))
        return Window(c0, r0, c1 - c0, r1 - r0)

    def tile_bounds(self, tile_id: str) -> Bounds:
        return self.window_bounds(self.tile_window(tile_id))

    def tile_transform(self, tile_id: str) -> Affine:
        return self.window_transform(self.tile_window(tile_id))

    def pixels_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Lattice ``(row, col)`` (int64 arrays) of the pixels holding points ``(x, y)`` in the
        lattice CRS: the one rule by which a point's pixel is found, for its stored sample, its
        training query and its crop, and its held-out prediction."""
        col = np.floor((np.asarray(x, dtype=np.float64) - self.origin_x) / self.res)
        row = np.floor((self.origin_y - np.asarray(y, dtype=np.float64)) / self.res)
        return row.astype(np.int64), col.astype(np.int64)

    def tile_of_xy(self, x: float, y: float) -> str:
        col = math.floor((x - self.origin_x) / (self.res * self.tile_px))
        row = math.floor((self.origin_y - y) / (self.res * self.tile_px))
        return self.tile_id(row, col)

    def neighbours(self, tile_id: str, radius: int = 1) -> list[str]:
        """Tiles within ``radius`` tiles (Chebyshev distance) of ``tile_id``, excluding itself."""
        row, col = self.parse(tile_id)
        out = []
        for r in range(row - radius, row + radius + 1):
            for c in range(col - radius, col + radius + 1):
                if (r, c) != (row, col) and r >= 0 and c >= 0:
                    out.append(self.tile_id(r, c))
        return out

    def tiles_in_window(self, window: Window) -> list[str]:
        """Every tile that shares at least one pixel with ``window``."""
        p = self.tile_px
        r0 = math.floor(window.row_off / p)
        r1 = math.ceil((window.row_off + window.height) / p)
        c0 = math.floor(window.col_off / p)
        c1 = math.ceil((window.col_off + window.width) / p)
        return [
            self.tile_id(r, c) for r in range(max(r0, 0), r1) for c in range(max(c0, 0), c1)
        ]


def tiles_of(boundary: shapely.Geometry, lattice: Lattice, reach_px: int = 0) -> list[str]:
    """The sorted ids of the tiles whose area intersects ``boundary`` (EPSG:3338 metres).

    With ``reach_px`` > 0: the tiles whose area grown by ``reach_px`` lattice pixels on every
    side intersects ``boundary``, i.e. every tile holding a pixel within ``reach_px`` pixels
    (Chebyshev) of a point inside it: a region's *context tiles* (:mod:`mapper.config`).

    Vectorised with shapely 2: candidate tiles from the boundary's bounding box are tested in one
    ``intersects`` call against a prepared geometry, so the whole state takes well under a second.
    Touching only along an edge does not count (the tile would hold no boundary pixel).
    """
    if boundary.is_empty:
        return []
    grow = reach_px * lattice.res
    left_, bottom_, right_, top_ = boundary.bounds
    window = lattice.bounds_window((left_ - grow, bottom_ - grow, right_ + grow, top_ + grow))
    p = lattice.tile_px
    size = p * lattice.res
    r0, c0 = max(window.row_off // p, 0), max(window.col_off // p, 0)
    r1 = math.ceil((window.row_off + window.height) / p)
    c1 = math.ceil((window.col_off + window.width) / p)
    rows, cols = np.meshgrid(np.arange(r0, r1), np.arange(c0, c1), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    left = lattice.origin_x + cols * size
    top = lattice.origin_y - rows * size
    boxes = shapely.box(left - grow, top - size - grow, left + size + grow, top + grow)
    shapely.prepare(boundary)
    hit = shapely.intersects(boundary, boxes) & ~shapely.touches(boundary, boxes)
    pairs = zip(rows[hit], cols[hit], strict=True)
    return sorted(lattice.tile_id(int(r), int(c)) for r, c in pairs)


def cells_inside(area: shapely.Geometry, lattice: Lattice, out_window: Window,
                 factor: int = 1) -> np.ndarray:
    """Bool [height, width]: which out cells of ``out_window`` have their centre inside ``area``.

    Out cells are ``factor`` x ``factor`` blocks of lattice pixels (out cell ``(R, C)`` covers
    lattice pixels ``[R*factor, (R+1)*factor)`` x ``[C*factor, (C+1)*factor)``; ``out_window`` in
    global out-cell indices). A cell is inside when its centre lies in the interior of ``area``
    (EPSG:3338): the test is on the centre's coordinates, computed from its global indices, so a
    cell's answer never depends on the window (tile) it is asked in. Windows wholly inside or
    wholly outside ``area`` are answered without testing each cell.
    """
    r0, c0 = int(out_window.row_off), int(out_window.col_off)
    h, w = int(out_window.height), int(out_window.width)
    res = lattice.res * factor
    left, top = lattice.origin_x + c0 * res, lattice.origin_y - r0 * res
    box = shapely.box(left, top - h * res, left + w * res, top)
    shapely.prepare(area)
    if not shapely.intersects(area, box) or shapely.touches(area, box):
        return np.zeros((h, w), dtype=bool)
    if shapely.contains_properly(area, box):
        return np.ones((h, w), dtype=bool)
    xs = lattice.origin_x + (c0 + np.arange(w) + 0.5) * res
    out = np.zeros((h, w), dtype=bool)
    for r in range(h):
        y = lattice.origin_y - (r0 + r + 0.5) * res
        out[r] = shapely.contains_xy(area, xs, np.full(w, y))
    return out


def coordinates_to(src: object, dst: object) -> Callable[[np.ndarray], np.ndarray]:
    """A coordinate function for :func:`shapely.transform` from CRS ``src`` to ``dst`` (anything
    pyproj takes; x, y order): made once, for many geometries."""
    from pyproj import Transformer

    transformer = Transformer.from_crs(src, dst, always_xy=True)

    def f(xy: np.ndarray) -> np.ndarray:
        return np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))

    return f


def reproject(geometry: shapely.Geometry, src: object, dst: object) -> shapely.Geometry:
    """``geometry`` from CRS ``src`` to ``dst``, vertex by vertex (segmentize it first where an
    edge must stay straight in ``src``, e.g. a parallel in degrees)."""
    return shapely.transform(geometry, coordinates_to(src, dst))
