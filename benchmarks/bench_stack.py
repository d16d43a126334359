"""Stack throughput for one demo tile: seconds, pixels per second, peak memory, time per part.

Usage::

    python benchmarks/bench_stack.py                 # demo sources if present, else synthetic
    python benchmarks/bench_stack.py --tile-px 1024  # same region settings, bigger tiles
    python benchmarks/bench_stack.py --synthetic     # always synthesize demo-like sources

Sources: ``resources/demo/sources/{sentinel2,dem,climate}.tif`` when they exist (``python -m mapper
demo`` writes them); otherwise demo-like SYNTHETIC sources are made in a temporary folder in their
native CRSs and resolutions (UTM 6N 10 m uint16 Sentinel-2 with 9 described bands, a geographic
1-arc-second DEM of hills and hollows, a 1 km climate grid), covering the tile's hydrology window.
Settings are the demo region's (``config/regions/demo.yaml``, defaults filled).

Figures printed: wall time of ``build_stack`` for the first tile (a cold run with the region's
settings, then warm runs with ``stack.distances`` grid and ground, the cost of the ground frame
of :mod:`mapper.ground` being their difference), pixels per second,
peak Python/numpy memory (tracemalloc) and the process's peak resident set (getrusage; includes
GDAL's caches), and the time of each part (Sentinel-2 warp, local terrain, hydrology, the rest).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli_errors import run_main  # noqa: E402

from mapper import stack as stack_mod  # noqa: E402
from mapper.config import load_region, read_yaml, resolve_config  # noqa: E402
from mapper.grid import Lattice  # noqa: E402


def synthesize(
    folder: Path, lattice: Lattice, tile: str, settings: stack_mod.StackSettings
) -> dict:
    """Demo-like synthetic sources around ``tile`` (its hydrology window plus 2 km)."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer
    from scipy.ndimage import gaussian_filter

    blocks = stack_mod.hydro_blocks(lattice, lattice.tile_window(tile), settings.hydro_block_px)
    h = settings.hydro_halo_px + 200
    left = min(lattice.window_bounds(b)[0] for b in blocks) - h * lattice.res
    bottom = min(lattice.window_bounds(b)[1] for b in blocks) - h * lattice.res
    right = max(lattice.window_bounds(b)[2] for b in blocks) + h * lattice.res
    top = max(lattice.window_bounds(b)[3] for b in blocks) + h * lattice.res
    rng = np.random.default_rng(20260101)

    def bbox(crs: str, l: float, b: float, r: float, t: float) -> tuple:  # noqa: E741
        tr = Transformer.from_crs("EPSG:3338", crs, always_xy=True)
        xs = np.r_[np.linspace(l, r, 64), np.linspace(l, r, 64), np.full(64, l), np.full(64, r)]
        ys = np.r_[np.full(64, b), np.full(64, t), np.linspace(b, t, 64), np.linspace(b, t, 64)]
        u, v = tr.transform(xs, ys)
        return min(u), min(v), max(u), max(v)

    # Sentinel-2: the tile plus 1 km, UTM 6N 10 m
    tl, tb, tr_, tt = lattice.tile_bounds(tile)
    ul, ub, ur, ut = bbox("EPSG:32606", tl - 1000, tb - 1000, tr_ + 1000, tt + 1000)
    ul, ut = np.floor(ul / 10) * 10, np.ceil(ut / 10) * 10
    w, hgt = int(np.ceil((ur - ul) / 10)), int(np.ceil((ut - ub) / 10))
    s2 = np.empty((9, hgt, w), dtype=np.uint16)
    for b in range(9):
        field = gaussian_filter(rng.normal(size=(hgt, w)), 8) * 5000 + rng.normal(0, 200, (hgt, w))
        s2[b] = np.clip(1200 + 250 * b + field, 1, 10000).astype(np.uint16)
    s2[:, hgt // 3 : hgt // 3 + 40, w // 2 : w // 2 + 60] = 0  # a cloud gap
    paths = {"sentinel2": folder / "sentinel2.tif", "dem": folder / "dem.tif",
             "climate": folder / "climate.tif"}
    with rasterio.open(paths["sentinel2"], "w", driver="GTiff", width=w, height=hgt, count=9,
                       dtype="uint16", crs="EPSG:32606", transform=Affine(10, 0, ul, 0, -10, ut),
                       nodata=0, tiled=True, compress="deflate") as dst:
        dst.write(s2)
        for i, code in enumerate(["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12"]):
            dst.set_band_description(i + 1, code)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    # DEM: geographic 1 arc-second, hills and hollows on a regional tilt
    sec = 1 / 3600
    lon0, lat0, lon1, lat1 = bbox("EPSG:4326", left, bottom, right, top)
    lon0, lat1 = np.floor(lon0 / sec) * sec, np.ceil(lat1 / sec) * sec
    w, hgt = int(np.ceil((lon1 - lon0) / sec)), int(np.ceil((lat1 - lat0) / sec))
    tr = Affine(sec, 0, lon0, 0, -sec, lat1)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(hgt) + 0.5)
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True).transform(
        tr.c + tr.a * cols, tr.f + tr.e * rows
    )
    z = 150 + 0.01 * (x - left) + 0.004 * (y - bottom)
    z += gaussian_filter(rng.normal(size=(hgt, w)), (6, 15)) * 2500
    with rasterio.open(paths["dem"], "w", driver="GTiff", width=w, height=hgt, count=1,
                       dtype="float32", crs="EPSG:4326", transform=tr, nodata=-9999) as dst:
        dst.write(z.astype(np.float32), 1)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    # climate: 1 km EPSG:3338 off the lattice
    cl, ct = np.floor(left / 1000) * 1000 - 2000 + 370, np.ceil(top / 1000) * 1000 + 2000 + 130
    w, hgt = int((right - cl) // 1000 + 4), int((ct - bottom) // 1000 + 4)
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(hgt) + 0.5)
    clim = np.stack([400 + 20 * cols, 1100 - 10 * rows, -25 + 0.2 * cols]).astype(np.float32)
    with rasterio.open(paths["climate"], "w", driver="GTiff", width=w, height=hgt, count=3,
                       dtype="float32", crs="EPSG:3338",
                       transform=Affine(1000, 0, cl, 0, -1000, ct), nodata=-9999) as dst:
        dst.write(clim)
        for i, name in enumerate(["precip_annual", "summer_warmth", "jan_tmin"], start=1):
            dst.set_band_description(i, name)
        dst.update_tags(MAPPER_SYNTHETIC="true")
    return paths


class _Timer:
    """Wraps module functions to add up their wall time; the originals are put back on exit.

    Wrap the name the caller looks up when it calls (``mapper.stack`` calls ``mosaic``,
    ``local_terrain`` and ``hydro_terrain`` as its own globals), not the function's home module.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._saved: list[tuple[object, str, object]] = []

    def wrap(self, module: object, name: str, label: str) -> None:
        fn = getattr(module, name)

        def timed(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0

        self._saved.append((module, name, fn))
        setattr(module, name, timed)

    def __enter__(self) -> _Timer:
        return self

    def __exit__(self, *exc: object) -> None:
        for module, name, fn in reversed(self._saved):
            setattr(module, name, fn)
        self._saved.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--region", default="demo")
    parser.add_argument("--tile-px", type=int, default=None, help="override the region's tile_px")
    parser.add_argument("--synthetic", action="store_true", help="always synthesize sources")
    parser.add_argument("--sources", default=None,
                        help="folder with sentinel2.tif, dem.tif, climate.tif (default: the "
                             "demo's resources/demo/sources when present)")
    args = parser.parse_args()

    raw = read_yaml(args.config)
    if args.tile_px:  # as a user would: a region override, checked with the rest of the region
        raw.setdefault("region_overrides", {})[args.region] = {"tile_px": args.tile_px}
    region = load_region(resolve_config(raw, args.config), args.region)
    settings = stack_mod.stack_settings(region)
    tile = region.tiles()[0]
    demo = Path(args.sources) if args.sources else ROOT / "resources" / "demo" / "sources"
    tmp = tempfile.TemporaryDirectory(prefix="bench_stack_")
    if not args.synthetic and (demo / "dem.tif").exists():
        sources = {k: demo / f"{k}.tif" for k in ("sentinel2", "dem", "climate")}
        kind = f"demo sources in {demo}"
    else:
        sources = synthesize(Path(tmp.name), region.lattice, tile, settings)
        kind = "synthetic demo-like sources"
    p = region.lattice.tile_px
    hw = settings.hydro_block_px + 2 * settings.hydro_halo_px
    print(f"stack benchmark: region {region.name}, tile {tile} ({p} x {p} px), {kind}")
    print(f"settings: halo {settings.halo_px} px, TPI radius {settings.tpi_radius_m} m, hydrology "
          f"blocks {settings.hydro_block_px} px + halo {settings.hydro_halo_px} px "
          f"(window {hw} x {hw} px)")

    out = Path(tmp.name) / "stack.tif"
    runs = [("cold", region)] + [
        (f"warm, distances {d}", replace(region, settings={
            **region.settings, "stack": {**region.settings["stack"], "distances": d}}))
        for d in ("grid", "ground")
    ]  # fmt: skip
    with _Timer() as timer:  # mosaic is mapper.stack_bands.mosaic, as mapper.stack calls it
        timer.wrap(stack_mod, "mosaic", "sentinel-2 warp")
        timer.wrap(stack_mod, "local_terrain", "local terrain (DEM warp + derivatives)")
        timer.wrap(stack_mod, "hydro_terrain", "hydrology (DEM warp + fill/route/accumulate)")
        for run, variant in runs:
            timer.totals.clear()
            tracemalloc.start()
            t0 = time.perf_counter()
            stack_mod.build_stack(variant, tile, [sources["sentinel2"]], sources["dem"],
                                  sources["climate"], out)
            dt = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{run}: {dt:.2f} s, {p * p / dt / 1e6:.3f} Mpx/s, peak traced "
                  f"{peak / 2**20:.0f} MiB, peak RSS so far {rss:.0f} MiB, "
                  f"output {out.stat().st_size / 2**20:.1f} MiB")
            timer.totals["other (climate warp, writing)"] = dt - sum(timer.totals.values())
            for label, secs in sorted(timer.totals.items(), key=lambda kv: -kv[1]):
                print(f"    {label:48s} {secs:6.2f} s")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    run_main(main)
