"""Stage 2, stack: every source warped onto one tile of the lattice, plus terrain covariates.

One GeoTIFF per tile (the stack contract): ``tile_px`` square on the tile's lattice bounds,
EPSG:3338, 19 float32 bands in :data:`mapper.bands.STACK_BANDS` order with those descriptions (and
units), NaN nodata, tags ``MAPPER_TILE``, ``MAPPER_EMPTY`` (no pixel of any band has data),
``MAPPER_SYNTHETIC``, tiled 256 (the tile size when smaller), DEFLATE, predictor 3, written
atomically.

Seamlessness: a pixel's value never depends on how the lattice is cut into tiles.

- Every warp goes through :func:`mapper.warp.warp_lattice_window` (exact transformer,
  XSCALE/YSCALE at the nominal ratio, each pixel computed as part of the same fixed lattice block
  of ``WARP_BLOCK_PX``), so warping any lattice window equals cutting it out of a whole-region
  warp, to the last bit. Tiles are processed in strips of rows (bounded memory); a strip is just
  a smaller window.
- Local covariates (slope, aspect, curvature, TPI) need a bounded neighbourhood: the DEM is warped
  onto the strip's window grown by ``stack.halo_px`` pixels, which must cover the TPI disc
  (``floor(tpi_radius_m / res)``) and the 3x3 derivatives.
- Flow accumulation (TWI, SPI) is not local. It is computed on fixed lattice-aligned hydrology
  blocks of ``stack.hydro_block_px`` pixels (block (i, j) starts at lattice pixel (i*B, j*B)),
  each from the DEM warped onto the block grown by ``stack.hydro_halo_px`` pixels. A tile takes its
  pixels from the blocks it meets, so the value depends only on the block, never on ``tile_px``.
  Upslope area beyond the hydro halo is truncated (the window edge is a sink), a documented
  approximation: where a catchment is larger than the halo, TWI/SPI show a step at block borders.
  ``tile_px`` and ``hydro_block_px`` must nest (one divides the other) so that a tile uses whole
  blocks or lies inside one; a ConfigError says so otherwise.

Sources:

- Sentinel-2: one or more rasters; the 9 bands are selected and ordered BY DESCRIPTION (``B04`` or
  ``s2_red`` etc., case-insensitive). Values become surface reflectance (0-1): a band's own GDAL
  scale/offset when it declares one; else DN / 10000 for integer bands; float bands as they are.
  So integer DNs that still hold ESA's offset (L2A of processing baseline 04.00 or later, from
  25 January 2022, as ESA delivers them) must declare it (``gdal_edit.py -scale 0.0001 -offset
  -0.1``): undeclared, every band would read 0.1 too bright. An integer file that declares
  neither is refused where its darkest pixels are too bright for DNs without the offset
  (:func:`mapper.stack_bands._check_no_offset`; declaring the scale alone skips the check).
  Several files form a mosaic: for each pixel and band the first file (in the order given) with a
  value wins. Bilinear.
- DEM: one raster (e.g. a VRT over IfSAR tiles) or several, metres, band 1, cubic by default
  (``stack.dem_resampling``; XSCALE at the nominal ratio, e.g. 0.5 for a 5 m DEM). The aspect band
  is from true north by default (``stack.aspect_from``: the grid aspect plus the meridian
  convergence, :func:`mapper.terrain.true_aspect`), and slope, aspect and curvature are those of
  the ground (``stack.distances``: the grid's derivatives through EPSG:3338's scale and
  convergence at each pixel, :mod:`mapper.ground`). Several files on one grid (the 1 x 1 degree
  cells of a ``cells`` source, fetched per tile by the workflow: see :mod:`mapper.sources.cells`)
  are joined before resampling, so there is no seam between adjacent cells; files on different
  grids are resampled one by one and the first with a value wins. A cell record (``.json``) may
  be given in place of its raster: a sea cell (no file on the server) then adds no data.
- Climate normals: one 3-band raster or three single-band rasters; bands are found by their
  descriptions ``precip_annual``, ``summer_warmth``, ``jan_tmin`` (any order, any file). When no
  band is described so (e.g. a ``gdalbuildvrt -separate`` VRT) and there are exactly three bands,
  they are taken in that order (the region config's documented order). Bilinear.

Every source file must overlap what the region's stacks read (the bounding box of its stacked
tiles grown by their DEM halos): a file that does not (a DEM in metres labelled EPSG:4326, a file
of another place) is refused with an InputError rather than warped to nodata. A tile outside a
source's footprint (e.g. at sea) is not an error: it is nodata.

Terrain definitions and conventions (aspect of flat pixels is NaN, TPI over a disc, MFD flow) are
in :mod:`mapper.terrain`. Internally the DEM derivatives use float64; the stack stores float32.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rasterio.io import DatasetReader, DatasetWriter
from rasterio.windows import Window

from mapper import terrain
from mapper.bands import CLIMATE_BANDS, S2_BANDS, STACK_BANDS, UNITS
from mapper.config import Region
from mapper.dem import CellProducts, dem_window, grow, hydro_blocks, warp_dem
from mapper.errors import ConfigError, InputError
from mapper.grid import Lattice
from mapper.ground import GroundFrame, grid_convergence, ground_frame
from mapper.progress import bar as progress_bar
from mapper.raster import (
    any_synthetic,
    check_crs,
    check_overlap,
    extent_in,
    geotiff_writer,
    open_raster,
    writing,
)
from mapper.sources.cells import cell_products, is_record
from mapper.stack_bands import BandPlan, climate_bands, climate_plans, mosaic, sentinel2_plans

if TYPE_CHECKING:
    from tqdm import tqdm

logger = logging.getLogger(__name__)

STRIP_PX = 512
"""Rows of a tile processed at once (a multiple of the 256 block size): bounds memory per tile."""

BLOCK_PX = 256
"""GeoTIFF block size of the stack (the tile size itself for tiles smaller than this)."""


@dataclass(frozen=True)
class StackSettings:
    """The region's ``stack`` settings, checked against its lattice."""

    halo_px: int
    tpi_radius_m: float
    hydro_block_px: int
    hydro_halo_px: int
    res: float
    dem_resampling: str = "cubic"
    aspect_from: str = "true_north"
    distances: str = "ground"

    @property
    def tpi_radius_px(self) -> float:
        return self.tpi_radius_m / self.res


def stack_settings(region: Region) -> StackSettings:
    """``region.settings['stack']`` as :class:`StackSettings` (checked against the tile and pixel
    size when the config was read: :func:`mapper.config.resolve_config`)."""
    section = region.settings["stack"]
    return StackSettings(
        halo_px=int(section["halo_px"]),
        tpi_radius_m=float(section["tpi_radius_m"]),
        hydro_block_px=int(section["hydro_block_px"]),
        hydro_halo_px=int(section["hydro_halo_px"]),
        res=region.lattice.res,
        dem_resampling=section["dem_resampling"],
        aspect_from=section["aspect_from"],
        distances=section["distances"],
    )


# -- sources ------------------------------------------------------------------------------------


def _paths(value: str | Path | Sequence[str | Path]) -> list[Path]:
    """One path or several, as a list of paths."""
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


# -- terrain ------------------------------------------------------------------------------------


def local_terrain(
    dem: list[Path] | CellProducts, lattice: Lattice, window: Window, settings: StackSettings
) -> dict[str, np.ndarray]:
    """elevation, slope, aspect, curvature, tpi on a lattice window (from the DEM with a halo)."""
    h = settings.halo_px
    z = warp_dem(dem, lattice, grow(window, h), settings.dem_resampling)
    inner = (slice(h, h + int(window.height)), slice(h, h + int(window.width)))
    frame = _frame(lattice, grow(window, h), settings)
    aspect = terrain.aspect(z, frame)[inner]  # from true north with a frame, else grid north
    if (frame is None) == (settings.aspect_from == "true_north"):
        x, y = _centres(lattice, window)
        turn = grid_convergence(x, y)
        aspect = terrain.true_aspect(aspect, turn if frame is None else -turn)
    return {
        "elevation": z[inner],
        "slope": terrain.slope(z, lattice.res, frame)[inner],
        "aspect": aspect,
        "curvature": terrain.max_curvature(z, lattice.res, frame)[inner],
        "tpi": terrain.tpi(z, settings.tpi_radius_px)[inner],
    }


def _centres(lattice: Lattice, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre x (a row) and y (a column) of a lattice window, metres."""
    left, _, _, top = lattice.window_bounds(window)
    x = left + (np.arange(int(window.width)) + 0.5) * lattice.res
    y = top - (np.arange(int(window.height)) + 0.5) * lattice.res
    return x[None, :], y[:, None]


def _frame(lattice: Lattice, window: Window, settings: StackSettings) -> GroundFrame | None:
    """The ground frame of a lattice window (``stack.distances: ground``), else None (grid)."""
    return ground_frame(*_centres(lattice, window)) if settings.distances == "ground" else None


def hydro_terrain(
    dem: list[Path] | CellProducts, lattice: Lattice, block: Window, settings: StackSettings
) -> tuple[np.ndarray, np.ndarray]:
    """TWI and SPI (float32) on one hydrology block, from its DEM grown by the hydro halo."""
    h = settings.hydro_halo_px
    z = warp_dem(dem, lattice, grow(block, h), settings.dem_resampling)
    inner = (slice(h, h + int(block.height)), slice(h, h + int(block.width)))
    sca = terrain.specific_catchment_area(z, lattice.res)[inner]
    slope = terrain.slope(z, lattice.res, _frame(lattice, grow(block, h), settings))[inner]
    return terrain.wetness_and_stream_power(sca, slope)


def _intersect(a: Window, b: Window) -> Window | None:
    c0, r0 = max(a.col_off, b.col_off), max(a.row_off, b.row_off)
    c1 = min(a.col_off + a.width, b.col_off + b.width)
    r1 = min(a.row_off + a.height, b.row_off + b.height)
    if c1 <= c0 or r1 <= r0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


# -- the stack ----------------------------------------------------------------------------------


_BAND = {name: i for i, name in enumerate(STACK_BANDS, start=1)}
"""1-based stack band of each band name."""


@dataclass(frozen=True)
class _Sources:
    """A stack's inputs, checked: band plans of the Sentinel-2 and climate files, the DEM files,
    and whether any of them (or the region) is synthetic."""

    sentinel2: list[BandPlan]
    dem: list[Path] | CellProducts
    climate: list[tuple[BandPlan, list[int]]]
    synthetic: bool
    dem_extents: list[tuple[float, ...] | None]
    """Each DEM file's extent in the lattice CRS (read once, when the files are checked)."""


def _tile_window(lattice: Lattice, tile_id: str) -> Window:
    try:
        return lattice.tile_window(tile_id)
    except ValueError as exc:
        raise ConfigError(
            f"tile {tile_id!r}: {exc}; pass an id from `python -m mapper tiles`"
        ) from None


def _check_sources(
    region: Region,
    sentinel2: list[Path],
    dem: Path | Sequence[Path],
    climate: Path | Sequence[Path],
) -> _Sources:
    """Find the bands of every source file and check that each overlaps the region."""
    s2_plans = sentinel2_plans([Path(p) for p in sentinel2])
    dems, climates = _paths(dem), _paths(climate)
    clim_plans = climate_plans(climates)
    if not dems:
        raise InputError("no DEM file given; pass at least one with --dem")
    cells: list[Path] = []
    dem_files: list[Path] | CellProducts = dems
    if any(is_record(p) for p in dems):  # elevation cells: their records name the rasters
        products = cell_products([p for p in dems if is_record(p)])
        cells = products.paths
        dems = [p for p in dems if not is_record(p)] + cells
        dem_files = products if dems == cells else dems
    # a source nowhere near the region (wrong CRS label, another place) would warp to nodata;
    # "near": what the region's stacks read, the stacked tiles with their DEM halos (a file of
    # DEM tiles chosen to cover the stacked tiles is near, however far the crops reach).
    # Not the elevation cells: each was checked against its own cell when it was fetched
    # (mapper.sources.cells.check_cell_raster).
    stacked = _stacks_read(region)
    dem_extents: list[tuple[float, ...] | None] = []
    for path in [*map(Path, sentinel2), *dems, *climates]:
        with open_raster(path) as src:
            check_crs(src, path)
            if path not in cells:
                check_overlap(src, path, stacked, region.lattice.crs, f"region {region.name}")
            if path in dems:
                _check_unpacked_dem(src, path)
                dem_extents.append(extent_in(src, region.lattice.crs))
    synthetic = region.synthetic or any_synthetic([*map(Path, sentinel2), *dems, *climates])
    return _Sources(s2_plans, dem_files, clim_plans, synthetic, dem_extents)


def _warn_short_dem(dems: list[Path], extents: list[tuple[float, ...] | None],
                    lattice: Lattice, tile_id: str, settings: StackSettings) -> None:
    """A WARNING when the DEM files (their extent together) stop short of what the tile's
    terrain reads (:func:`mapper.dem.dem_window`: the local-terrain halo and the hydrology
    blocks' halo, km beyond the tile): flow accumulation (TWI, SPI) is then cut at the files'
    edge, and the tile's values near it differ from what a DEM reaching further gives. Not an
    error: the files may stop at the coast, where nothing flows in. Asked for the mapped tiles
    (a context tile's hydrology near its far side is read by no crop)."""
    window = lattice.window_bounds(dem_window(lattice, tile_id, settings.halo_px,
                                              settings.hydro_block_px, settings.hydro_halo_px))
    if not extents or any(e is None for e in extents):
        return
    left, bottom = min(e[0] for e in extents), min(e[1] for e in extents)
    right, top = max(e[2] for e in extents), max(e[3] for e in extents)
    short = max(left - window[0], bottom - window[1], window[2] - right, window[3] - top)
    if short > lattice.res:
        logger.warning(
            "%s: the DEM stops %.1f km short of what tile %s's terrain reads (%.1f km beyond "
            "the tile, for the hydrology); its TWI and SPI near there miss the water flowing in "
            "from beyond the files (none is lost where they stop at the coast): give a DEM "
            "reaching that far", ", ".join(map(str, dems)), short / 1000, tile_id,
            (lattice.window_bounds(lattice.tile_window(tile_id))[0] - window[0]) / 1000)


def _stacks_read(region: Region) -> tuple[float, float, float, float]:
    """The bounds (EPSG:3338) of what the region's stacks read: the bounding box of its stacked
    tiles (:meth:`mapper.config.Region.stacked_tiles`) grown by their DEM windows
    (:func:`mapper.dem.dem_window`: the local-terrain halo and the hydrology blocks' halo)."""
    settings, lattice = stack_settings(region), region.lattice
    cells = [lattice.parse(tile) for tile in region.stacked_tiles()]
    corners = [Lattice.tile_id(min(r for r, _ in cells), min(c for _, c in cells)),
               Lattice.tile_id(max(r for r, _ in cells), max(c for _, c in cells))]
    first, last = (dem_window(lattice, tile, settings.halo_px, settings.hydro_block_px,
                              settings.hydro_halo_px) for tile in corners)
    left, top = lattice.window_bounds(first)[0], lattice.window_bounds(first)[3]
    right, bottom = lattice.window_bounds(last)[2], lattice.window_bounds(last)[1]
    return left, bottom, right, top


FEET_UNITS = {"ft", "foot", "feet", "usft", "ftus", "ussurveyfoot", "ussurveyfeet",
              "internationalfoot", "usfoot", "usfeet"}
"""Band units that say feet, in lower case without spaces, ``_`` and ``-``."""


def _check_unpacked_dem(src: DatasetReader, path: Path) -> None:
    """A DEM must hold metres as they are: one :class:`InputError` naming the file and the fix
    if its band says it is in feet (elevations, slope and TPI 3.28 times too high: Alaska's
    feet stay inside the fill-value check), or declares a scale or offset (packed integers,
    which would read 10 or 100 times too high). A DEM in feet that does not say so cannot be
    told from one in metres."""
    unit = (src.units[0] or "").strip()
    if re.sub(r"[\s_-]", "", unit.lower()) in FEET_UNITS:
        raise InputError(
            f"{path}: the DEM's band is in {unit} (its unit); elevations are read as metres, so "
            f"convert it (rio calc \"(* 0.3048 (read 1))\" -t float32 --profile nodata=-9999 "
            f"{path} <metres.tif>) and pass that file"
        )
    scale, offset = float(src.scales[0]), float(src.offsets[0])
    if (scale, offset) != (1.0, 0.0):
        raise InputError(
            f"{path}: the DEM declares scale {scale:g} and offset {offset:g} (packed values); "
            "elevations are read as metres as stored, so unpack it (gdal_translate -unscale -ot "
            f"Float32 {path} <unpacked.tif>) and pass that file"
        )


def _write_strips(
    dst: DatasetWriter,
    out: Path,
    sources: _Sources,
    lattice: Lattice,
    tile_window: Window,
    settings: StackSettings,
    strip_px: int,
    parts: tqdm,
) -> tuple[bool, bool]:
    """Write the Sentinel-2, local terrain and climate bands of the tile, ``strip_px`` rows at a
    time (one step of the ``parts`` bar each); return whether any pixel has data and whether any
    has an elevation."""
    p = lattice.tile_px
    s2_idx = [_BAND[name] for name, _ in S2_BANDS]
    clim_idx = [_BAND[name] for name in CLIMATE_BANDS]
    has_data = has_dem = False
    step = max(strip_px, 1)
    for r in range(0, p, step):
        rows = min(step, p - r)
        win = Window(tile_window.col_off, tile_window.row_off + r, p, rows)
        local = Window(0, r, p, rows)
        s2 = mosaic(sources.sentinel2, lattice, win)
        _write(dst, out, s2, s2_idx, local)
        has_data |= bool(np.isfinite(s2).any())
        del s2
        for name, arr in local_terrain(sources.dem, lattice, win, settings).items():
            _write(dst, out, arr.astype(np.float32), _BAND[name], local)
            has_data |= bool(np.isfinite(arr).any())
            has_dem |= name == "elevation" and bool(np.isfinite(arr).any())
        clim = climate_bands(sources.climate, lattice, win)
        _write(dst, out, clim, clim_idx, local)
        has_data |= bool(np.isfinite(clim).any())
        del clim
        parts.update()
    return has_data, has_dem


def _write_hydrology(
    dst: DatasetWriter,
    out: Path,
    dem: list[Path] | CellProducts,
    lattice: Lattice,
    tile_window: Window,
    settings: StackSettings,
    parts: tqdm,
) -> None:
    """Write the TWI and SPI bands of the tile, each part from the hydrology block holding it
    (one step of the ``parts`` bar each)."""
    for block in hydro_blocks(lattice, tile_window, settings.hydro_block_px):
        part = _intersect(block, tile_window)
        if part is None:
            parts.update()
            continue
        twi, spi = hydro_terrain(dem, lattice, block, settings)
        r0, c0 = int(part.row_off - block.row_off), int(part.col_off - block.col_off)
        sub = (slice(r0, r0 + int(part.height)), slice(c0, c0 + int(part.width)))
        local = Window(
            part.col_off - tile_window.col_off, part.row_off - tile_window.row_off,
            part.width, part.height,
        )
        _write(dst, out, twi[sub], _BAND["twi"], local)
        _write(dst, out, spi[sub], _BAND["spi"], local)
        parts.update()


def _write(dst: DatasetWriter, out: Path, data: np.ndarray, indexes: int | list[int],
           window: Window) -> None:
    """``dst.write``; a failed write (a full disk) is one InputError naming the stack ``out``
    and the fix (:func:`mapper.raster.writing`)."""
    with writing(out):
        dst.write(data, indexes=indexes, window=window)


def build_stack(
    region: Region,
    tile_id: str,
    sentinel2: list[Path],
    dem: Path | Sequence[Path],
    climate: Path | Sequence[Path],
    out_path: Path,
    *,
    strip_px: int = STRIP_PX,
) -> Path:
    """Write the stack GeoTIFF of ``tile_id`` to ``out_path`` (atomically) and return the path.

    Memory is bounded by the tile width times ``strip_px`` (S2, climate, local terrain) and by the
    hydrology window ``(hydro_block_px + 2 * hydro_halo_px)^2`` (about 160 bytes per pixel of it:
    0.65 GiB for the default 2048^2 window), independent of the region's size. See the module
    docstring for the conventions.
    """
    settings = stack_settings(region)
    lattice = region.lattice
    tile_window = _tile_window(lattice, tile_id)
    sources = _check_sources(region, sentinel2, dem, climate)
    if not isinstance(sources.dem, CellProducts) and tile_id in region.tiles():
        _warn_short_dem(sources.dem, sources.dem_extents, lattice, tile_id,
                        settings)  # a mapped tile's terrain
    p = lattice.tile_px
    with geotiff_writer(
        out_path,
        height=p,
        width=p,
        count=len(STACK_BANDS),
        dtype="float32",
        transform=lattice.tile_transform(tile_id),
        crs=lattice.crs,
        nodata=float("nan"),
        blocksize=min(BLOCK_PX, p),
        predictor=3,
    ) as dst:
        for i, name in enumerate(STACK_BANDS, start=1):
            dst.set_band_description(i, name)
        dst.units = tuple(UNITS[name] for name in STACK_BANDS)
        # the tile's parts: its strips, then its hydrology blocks (the job's console counts them)
        blocks = hydro_blocks(lattice, tile_window, settings.hydro_block_px)
        with progress_bar(-(-p // max(strip_px, 1)) + len(blocks), f"stack {tile_id}",
                          "part") as parts:
            has_data, has_dem = _write_strips(dst, Path(out_path), sources, lattice,
                                              tile_window, settings, strip_px, parts)
            if has_dem:  # TWI/SPI exist only where the elevation does
                _write_hydrology(dst, Path(out_path), sources.dem, lattice, tile_window,
                                 settings, parts)
            else:
                parts.update(len(blocks))  # nothing to compute: done
        dst.update_tags(
            MAPPER_TILE=tile_id,
            MAPPER_EMPTY=str(not has_data).lower(),
            MAPPER_SYNTHETIC=str(bool(sources.synthetic)).lower(),
            MAPPER_HALO_PX=str(settings.halo_px),
            MAPPER_TPI_RADIUS_M=str(settings.tpi_radius_m),
            MAPPER_HYDRO_BLOCK_PX=str(settings.hydro_block_px),
            MAPPER_HYDRO_HALO_PX=str(settings.hydro_halo_px),
            MAPPER_DEM_RESAMPLING=settings.dem_resampling,
            MAPPER_ASPECT_FROM=settings.aspect_from,
            MAPPER_DISTANCES=settings.distances,
        )
    logger.info("stack %s -> %s%s", tile_id, out_path, " (empty)" if not has_data else "")
    return Path(out_path)
