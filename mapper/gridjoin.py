"""Rasters on one grid joined into one VRT before they are warped: no seam between adjacent files.

Elevation comes as 1 x 1 degree cells (:mod:`mapper.sources.cells`). Warped one by one, two
cells that do not overlap (Copernicus GLO-30's) would each be interpolated from its own pixels
only within half a source pixel of their common edge, and cells that meet at 180 degrees would
leave a gap (PROJ gives longitudes just east of 180 as +179.99..., past the end of the cell west
of 180 and never inside the one east of it). Joined first, in a VRT (written by
:func:`mapper.vrt.write_vrt_file`), they warp as one raster would.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS

from mapper.raster import check_crs, open_raster
from mapper.vrt import VrtBand, VrtSource, write_vrt_file

GRID_TOLERANCE_PX = 1e-3
"""Rasters whose origins are a whole number of pixels apart to within this fraction of a pixel,
and whose pixel sizes agree to within it over a million pixels (a join 280 degrees of 1" cells
wide), are on one grid. (A 3DEP cell stores 1/3600 degree as 0.000277777777780: the same in every
cell.)"""


@dataclass(frozen=True)
class _GridMember:
    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    nodata: float | None


def _on_grid(first: _GridMember, other: _GridMember) -> bool:
    """Same CRS, north-up, same pixel size, origins a whole number of pixels apart."""
    a, b = first.transform, other.transform
    if other.crs != first.crs or a.b or a.d or b.b or b.d:
        return False
    if abs(a.a - b.a) * 1e6 > GRID_TOLERANCE_PX * abs(a.a):
        return False
    if abs(a.e - b.e) * 1e6 > GRID_TOLERANCE_PX * abs(a.e):
        return False
    dx, dy = (b.c - a.c) / a.a, (b.f - a.f) / a.e
    return abs(dx - round(dx)) < GRID_TOLERANCE_PX and abs(dy - round(dy)) < GRID_TOLERANCE_PX


def _bounds(m: _GridMember) -> tuple[float, float, float, float]:
    t = m.transform
    xs = (t.c, t.c + t.a * m.width)
    ys = (t.f, t.f + t.e * m.height)
    return min(xs), min(ys), max(xs), max(ys)


def _joins(group: list[_GridMember], member: _GridMember) -> bool:
    """Whether ``member`` joins ``group``: on its grid, and (in longitude/latitude) not making a
    join wider than 180 degrees (which cells on both sides of 180, at -180 and +179, would)."""
    if not _on_grid(group[0], member):
        return False
    if not member.crs.is_geographic:
        return True
    lefts, rights = zip(*[(_bounds(m)[0], _bounds(m)[2]) for m in [*group, member]], strict=True)
    return max(rights) - min(lefts) <= 180.0


def _across_antimeridian(members: list[_GridMember]) -> list[_GridMember]:
    """Copies, shifted by +360 degrees, of the geographic rasters west of 180 degrees (longitudes
    near -180) when others lie east of it (near +180): joined with those, the rasters on both
    sides of 180 form one mosaic over 179..181, so a pixel near 180 is interpolated from both
    sides (PROJ gives its longitude as +179.99..., which the shifted copy covers)."""
    geographic = [m for m in members if m.crs.is_geographic]
    east = [m for m in geographic if (_bounds(m)[0] + _bounds(m)[2]) / 2 > 90]
    west = [m for m in geographic if (_bounds(m)[0] + _bounds(m)[2]) / 2 < -90]
    if not east or not west:
        return []
    return [
        _GridMember(m.path, m.crs, Affine.translation(360.0, 0.0) @ m.transform, m.width,
                    m.height, m.nodata)
        for m in west
    ]  # fmt: skip


def _mosaic_vrt(members: list[_GridMember], band: int, path: Path) -> Path:
    """Write a VRT joining one band of rasters on one grid (float32, NaN nodata); where they
    overlap, the first member's valid pixels win (members are drawn last to first)."""
    t = members[0].transform
    offsets = [(round((m.transform.c - t.c) / t.a), round((m.transform.f - t.f) / t.e))
               for m in members]  # fmt: skip
    x0 = min(c for c, _ in offsets)
    y0 = min(r for _, r in offsets)
    width = max(c + m.width for (c, _), m in zip(offsets, members, strict=True)) - x0
    height = max(r + m.height for (_, r), m in zip(offsets, members, strict=True)) - y0
    sources = [
        VrtSource(str(m.path.resolve()), band, m.width, m.height, c - x0, r - y0, nodata=m.nodata)
        for (c, r), m in reversed(list(zip(offsets, members, strict=True)))
    ]
    return write_vrt_file(
        path, width=width, height=height, crs=members[0].crs, dtype="float32",
        transform=Affine(t.a, 0.0, t.c + x0 * t.a, 0.0, t.e, t.f + y0 * t.e),
        bands=[VrtBand(sources, nodata=float("nan"))],
    )  # fmt: skip


@contextmanager
def joined_on_grids(paths: list[Path], band: int = 1) -> Iterator[list[Path]]:
    """``paths`` with the rasters that share one grid (CRS, pixel size, pixel alignment) joined
    into one VRT each (in a temporary folder, for the ``with`` block), in the order of each
    group's first file.

    Warping a join equals warping one big raster: across the seam of two adjacent files (elevation
    cells that do not overlap, such as Copernicus GLO-30's) the bilinear kernel takes pixels from
    both sides, where warping the files one by one would interpolate from one side only within
    half a source pixel of the seam. Where files overlap, the first one's valid pixels win (as in
    :func:`mapper.dem.warp_dem`). Files on different grids (GLO-30 north and south of 60 or
    70 N, where the longitude spacing changes) stay separate. Geographic files on both sides of
    180 degrees are joined across it (see :func:`_across_antimeridian`).
    """
    members = []
    for p in map(Path, paths):
        with open_raster(p) as src:
            check_crs(src, p)
            members.append(
                _GridMember(p, src.crs, src.transform, src.width, src.height, src.nodata)
            )
    groups: list[list[_GridMember]] = []
    for member in members + _across_antimeridian(members):
        for group in groups:
            if _joins(group, member):
                group.append(member)
                break
        else:
            groups.append([member])
    if all(len(g) == 1 for g in groups):
        yield [g[0].path for g in groups]
        return
    with tempfile.TemporaryDirectory(prefix="mapper-mosaic-") as tmp:
        yield [
            g[0].path if len(g) == 1 else _mosaic_vrt(g, band, Path(tmp) / f"grid{i}.vrt")
            for i, g in enumerate(groups)
        ]
