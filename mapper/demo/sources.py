"""The demo region's sources, SYNTHETIC: made offline and deterministically from one seed.

``synthesize_demo(region, out_dir)`` writes, under ``out_dir`` (``resources/<region>``)::

    sources/sentinel2.tif     EPSG:32606 (UTM 6N), 10 m, 9 x uint16 reflectance x 1e4, bands
                              B02 B03 B04 B05 B06 B07 B08 B11 B12 (native order), nodata 0,
                              with an irregular cloud gap (all bands 0)
    sources/dem.tif           EPSG:4326, 1 arc-second, float32 metres, nodata -9999
    sources/climate.tif       EPSG:3338, 1 km, origin 371 m off the lattice, float32 bands
                              precip_annual (mm), summer_warmth (degree-days), jan_tmin (deg C),
                              nodata -9999
    sources/observations.csv  obs_id, lon, lat (WGS84), date (ISO), nsp (0/1/empty),
                              soil_order (name/empty)
    sources/manifest.json     every file above and below: path, size, sha256, seed
    truth/nsp.tif             EPSG:3338 10 m lattice, float32 NSP probability, NaN on open water
    truth/soilorder.tif       EPSG:3338 10 m lattice, uint8 index into SOIL_ORDERS, 255 on water

Every raster covers the region's bounding box plus at least 2 km on each side and is tagged
``SYNTHETIC=true``/``MAPPER_SYNTHETIC=true``; nothing here describes a real place. All sources are
views of one world (:mod:`mapper.demo.world`) sampled on their own grids
(:mod:`mapper.demo.grids`, :mod:`mapper.demo.render`); the observations are drawn
from the truth (:mod:`mapper.demo.survey`). The seed is the region's
``sources.sentinel2.seed``. Reruns are byte-identical: no timestamps in files or manifest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from rasterio.windows import Window

from mapper.bands import CLASS_NODATA, CLIMATE_BANDS, SOIL_ORDERS
from mapper.config import Region
from mapper.demo.fields import Layout
from mapper.demo.grids import (
    ALBERS,
    NativeGrid,
    buffered,
    climate_grid,
    dem_grid,
    sentinel2_grid,
    world_grid_for,
)
from mapper.demo.render import (
    S2_NATIVE,
    S2_WAVELENGTH_NM,
    render_climate,
    render_dem,
    render_sentinel2,
)
from mapper.demo.survey import survey, write_observations
from mapper.demo.world import World, build_world
from mapper.errors import ConfigError
from mapper.files import file_sha256
from mapper.raster import write_geotiff
from mapper.sources.manifest import make_manifest, write_manifest

logger = logging.getLogger(__name__)

MARGIN = 2000.0
"""Metres every source extends beyond the region's bounding box (the contract's minimum)."""
NODATA_FLOAT = -9999.0
SOURCES = ("sentinel2", "dem", "climate", "observations")
FILES = {
    "sentinel2": "sources/sentinel2.tif",
    "dem": "sources/dem.tif",
    "climate": "sources/climate.tif",
    "observations": "sources/observations.csv",
    "truth_nsp": "truth/nsp.tif",
    "truth_soilorder": "truth/soilorder.tif",
}
NOTICE = "SYNTHETIC demo data made by mapper.demo.sources; it describes no real place"


def demo_seed(region: Region) -> int:
    """The world's seed: ``sources.sentinel2.seed`` of the region (every source must be demo)."""
    sources = region.settings["sources"]
    for name in SOURCES:
        if sources[name]["kind"] != "demo":
            raise ConfigError(
                f"{region.path}: sources.{name}.kind is {sources[name]['kind']!r}; "
                "the demo synthesis needs every source of kind 'demo'"
            )
    seed = sources["sentinel2"].get("seed")
    if seed is None:
        raise ConfigError(f"{region.path}: sources.sentinel2 has no 'seed'; add seed: <integer>")
    others = {name: sources[name].get("seed") for name in SOURCES[1:]}
    if any(s is not None and s != seed for s in others.values()):
        logger.warning(
            "%s: demo sources are one world made from sources.sentinel2.seed (%d); "
            "the other sources' seeds (%s) are not used", region.path, seed, others,
        )  # fmt: skip
    if not region.synthetic:
        raise ConfigError(
            f"{region.path}: demo sources are synthetic; set 'synthetic: true' in the region "
            "so that every product says so"
        )
    return int(seed)


def _tags(region: Region, seed: int, what: str, **extra: str) -> dict[str, str]:
    return {
        "SYNTHETIC": "true",
        "MAPPER_SYNTHETIC": "true",
        "MAPPER_REGION": region.name,
        "MAPPER_SOURCE": what,
        "MAPPER_SEED": str(seed),
        "DESCRIPTION": NOTICE,
        **extra,
    }


@dataclass(frozen=True)
class DemoGrids:
    """Where the demo sources of a region lie: the covered box and each source's native grid."""

    coverage: tuple[float, float, float, float]  # region bounding box + MARGIN, EPSG:3338
    sentinel2: NativeGrid
    dem: NativeGrid
    climate: NativeGrid
    truth: Window  # lattice window of the truth rasters


def demo_grids(region: Region) -> DemoGrids:
    """The native grids of a region's demo sources (see :mod:`mapper.demo.grids`)."""
    boundary = region.boundary()
    if boundary.is_empty:
        raise ConfigError(f"{region.settings['boundary']}: the region's boundary is empty")
    coverage = buffered(boundary.bounds, MARGIN)
    return DemoGrids(
        coverage,
        sentinel2_grid(coverage),
        dem_grid(coverage),
        climate_grid(coverage),
        region.lattice.bounds_window(coverage),
    )


def demo_world(region: Region, grids: DemoGrids | None = None) -> World:
    """The region's synthetic world, on a lattice-aligned grid covering every source's grid."""
    grids = grids or demo_grids(region)
    lattice = region.lattice
    world_grid = world_grid_for(
        [grids.sentinel2, grids.dem, grids.climate], (lattice.origin_x, lattice.origin_y),
        lattice.res,
    )  # fmt: skip
    left, bottom, right, top = region.boundary().bounds
    half = max(right - left, top - bottom) / 2.0
    layout = Layout((left + right) / 2.0, (bottom + top) / 2.0, half)
    return build_world(world_grid, layout, demo_seed(region))


def world_window(world: World, region: Region, window: Window) -> tuple[slice, slice]:
    """Row and column slices of the world's arrays holding a lattice window."""
    lattice = region.lattice
    left, _, _, top = lattice.window_bounds(window)
    r0 = int(round((world.grid.y0 - top) / lattice.res))
    c0 = int(round((left - world.grid.x0) / lattice.res))
    if r0 < 0 or c0 < 0 or r0 + window.height > world.grid.shape[0] or (
        c0 + window.width > world.grid.shape[1]
    ):
        raise ValueError(f"lattice window {window} is not inside the demo world")
    return slice(r0, r0 + int(window.height)), slice(c0, c0 + int(window.width))


def synthesize_demo(region: Region, out_dir: Path = Path("resources/demo")) -> dict[str, Path]:
    """Write every demo source, the truth maps and the manifest; return ``what -> path``.

    Keys: sentinel2, dem, climate, observations, truth_nsp, truth_soilorder, manifest.
    """
    start = time.perf_counter()
    seed = demo_seed(region)
    out_dir = Path(out_dir)
    paths = {what: out_dir / rel for what, rel in FILES.items()}
    grids = demo_grids(region)
    s2_grid, d_grid, c_grid = grids.sentinel2, grids.dem, grids.climate
    world = demo_world(region, grids)
    logger.info("demo world %s px built in %.1f s", world.grid.shape, time.perf_counter() - start)

    _write_truth(region, seed, world, grids.truth, paths)
    write_geotiff(
        paths["sentinel2"],
        render_sentinel2(world, s2_grid, seed),
        s2_grid.transform,
        s2_grid.crs,
        nodata=0,
        descriptions=list(S2_NATIVE),
        tags=_tags(
            region, seed, "sentinel2",
            PRODUCT="Sentinel-2 L2A-like midsummer composite (SYNTHETIC)",
            BOA_QUANTIFICATION_VALUE="10000",
            BOA_ADD_OFFSET="0",
            UNITS="surface reflectance x 10000",
            WAVELENGTH_NM=",".join(str(w) for w in S2_WAVELENGTH_NM),
        ),
    )  # fmt: skip
    write_geotiff(
        paths["dem"],
        render_dem(world, d_grid),
        d_grid.transform,
        d_grid.crs,
        nodata=NODATA_FLOAT,
        descriptions=["elevation"],
        tags=_tags(region, seed, "dem", UNITS="m", PRODUCT="1 arc-second DEM (SYNTHETIC)"),
    )
    write_geotiff(
        paths["climate"],
        render_climate(world, c_grid),
        c_grid.transform,
        c_grid.crs,
        nodata=NODATA_FLOAT,
        descriptions=list(CLIMATE_BANDS),
        tags=_tags(
            region, seed, "climate",
            UNITS="mm/year,degree-days above 0 C,degrees C",
            PRODUCT="1 km climate normals (SYNTHETIC)",
        ),
    )  # fmt: skip
    table = survey(world, region.boundary(), seed, where=str(region.settings["boundary"]))
    write_observations(paths["observations"], table)
    paths["manifest"] = _write_manifest(region, seed, out_dir, paths)
    logger.info("demo sources of %s written to %s in %.1f s", region.name, out_dir,
                time.perf_counter() - start)  # fmt: skip
    return paths


def _write_truth(
    region: Region, seed: int, world: World, window: Window, paths: dict[str, Path]
) -> None:
    """Crop the truth rasters from the world over a lattice window."""
    rows, cols = world_window(world, region, window)
    transform = region.lattice.window_transform(window)
    write_geotiff(
        paths["truth_nsp"],
        world.nsp[rows, cols][None].astype("float32"),
        transform,
        ALBERS,
        nodata=float("nan"),
        descriptions=["nsp_probability"],
        tags=_tags(region, seed, "truth_nsp", UNITS="probability of near-surface permafrost"),
    )
    write_geotiff(
        paths["truth_soilorder"],
        world.soilorder[rows, cols][None],
        transform,
        ALBERS,
        nodata=CLASS_NODATA,
        descriptions=["soil_order"],
        tags=_tags(region, seed, "truth_soilorder", CLASS_NAMES=",".join(SOIL_ORDERS)),
    )


def _write_manifest(region: Region, seed: int, out_dir: Path, paths: dict[str, Path]) -> Path:
    items = [
        {
            "what": what,
            "path": str(paths[what]),
            "size": paths[what].stat().st_size,
            "sha256": file_sha256(paths[what]),
            "synthetic": True,
            "seed": seed,
        }
        for what in FILES
    ]
    manifest = make_manifest(
        region.name, "demo", "demo", items, synthetic=True, seed=seed,
        generator="mapper.demo.sources", notice=NOTICE,
    )  # fmt: skip
    manifest["created"] = None  # no timestamp: reruns are byte-identical
    return write_manifest(out_dir / "sources" / "manifest.json", manifest)
