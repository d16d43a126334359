"""Cost of the per-item offset check against compositing the same item, at full granule size.

Usage::

    python benchmarks/bench_offset_check.py            # a full 109.8 km granule, 1024 px block
    python benchmarks/bench_offset_check.py --side 2745  # a quarter granule (quicker)

A SYNTHETIC granule in Earth Search's file layout (uint16 COGs in UTM 6N, DEFLATE, 1024 px
internal tiles with overviews; 10 m bands 10980 px a side, 20 m bands and SCL 5490; smooth
tundra reflectance with lakes) is served by the tests' loopback HTTP server on 127.0.0.1. Printed,
in this order in one process (the check first, so it finds nothing cached; the composite then
finds the files' headers in /vsicurl's cache):

- :func:`mapper.sources.s2_items.check_offset` on the item: wall time, HTTP requests and bytes
  read, and its verdict;
- :func:`mapper.sources.composite.composite_tile` of one ``block_px`` block of the same item
  inside the granule (harmonized, the check off): the same figures, i.e. what one block of a
  tile costs per item without the check.

A tile job checks each of its items once, whatever the number of its blocks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from httpserver import LoopbackServer  # noqa: E402

from mapper.bands import S2_BANDS  # noqa: E402
from mapper.grid import Lattice  # noqa: E402


def _cog(data: np.ndarray, transform, path: Path) -> bytes:
    import rasterio

    with rasterio.open(path, "w", driver="COG", width=data.shape[1], height=data.shape[0],
                       count=1, dtype="uint16", crs="EPSG:32606", transform=transform, nodata=0,
                       blocksize=1024, compress="deflate", overview_resampling="nearest") as dst:
        dst.write(data, 1)
    return path.read_bytes()


def granule(side: int, folder: Path) -> dict[str, tuple[bytes, int]]:
    """SYNTHETIC 10 m and 20 m bands and SCL of one granule of ``side`` 10 m pixels: bytes and
    resolution per band code."""
    from affine import Affine
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    coarse = rng.random((side // 183 + 2, side // 183 + 2))
    field = zoom(coarse, 183, order=3)[:side, :side]  # smooth, 1.8 km features
    lakes = field < 0.2
    refl10 = np.where(lakes, 0.02, 0.03 + 0.05 * field)
    out = {}
    for res, values in ((10, refl10), (20, refl10[::2, ::2])):
        dn = np.round(values * 10000).astype("uint16")
        t = Affine(res, 0, 399960.0, 0, -res, 7300020.0)
        out[res] = _cog(dn, t, folder / f"{res}.tif")
    scl = np.where(lakes[::2, ::2], 6, 4).astype("uint16")
    t20 = Affine(20, 0, 399960.0, 0, -20, 7300020.0)
    out["SCL"] = _cog(scl, t20, folder / "scl.tif")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=10980, help="granule side, 10 m pixels")
    parser.add_argument("--block-px", type=int, default=1024)
    args = parser.parse_args()

    import pystac
    import rasterio
    from pyproj import Transformer

    from mapper.raster import GDAL_HTTP_ENV
    from mapper.sources.composite import GDAL_CACHE_ENV, composite_tile
    from mapper.sources.s2_items import check_offset

    with tempfile.TemporaryDirectory() as tmp, LoopbackServer() as server:
        t0 = time.perf_counter()
        files = granule(args.side, Path(tmp))
        print(f"granule of {args.side} px a side written in {time.perf_counter() - t0:.0f} s "
              f"(10 m band {len(files[10]) / 1e6:.0f} MB, 20 m {len(files[20]) / 1e6:.0f} MB)")
        assets = {}
        for _, code in [*S2_BANDS, ("scl", "SCL")]:
            res = 10 if code in ("B02", "B03", "B04", "B08") else 20
            data = files["SCL"] if code == "SCL" else files[res]
            assets[code] = pystac.Asset(server.add_file(f"/g/{code}.tif", data))
        item = pystac.Item("S2B_6WVC_20230801_0_L2A", None, None,
                           datetime(2023, 8, 1, 21, 30, tzinfo=UTC),
                           {"s2:processing_baseline": "05.09", "eo:cloud_cover": 1.0},
                           assets=assets)

        def measured(label: str, fn) -> None:  # noqa: ANN001
            before = len(server.log)
            with rasterio.Env(**GDAL_HTTP_ENV, **GDAL_CACHE_ENV):
                t = time.perf_counter()
                result = fn()
                wall = time.perf_counter() - t
            log = server.log[before:]
            gets = [r for r in log if r["method"] == "GET"]
            read = sum(_range_bytes(r) for r in gets)
            print(f"{label}: {wall:.2f} s, {len(log)} requests ({len(gets)} GET), "
                  f"{read / 1e6:.1f} MB read -> {result}")

        measured("offset check, whole granule", lambda: check_offset(item))
        # a block of the lattice well inside the granule
        cx, cy = Transformer.from_crs(32606, 3338, always_xy=True).transform(
            399960.0 + args.side * 5.0, 7300020.0 - args.side * 5.0)
        lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, args.block_px)
        tile = lattice.tile_of_xy(cx, cy)
        with tempfile.TemporaryDirectory() as out:
            def block() -> str:
                summary = composite_tile({tile: [item]}, lattice, tile, Path(out) / "c.tif",
                                         block_px=args.block_px, harmonized=True, check=False)
                return f"{summary['valid_fraction']:.3f} of the block valid"

            measured(f"composite of one {args.block_px} px block", block)


def _range_bytes(request: dict) -> int:
    wanted = request["headers"].get("Range", "")
    if wanted.startswith("bytes=") and "-" in wanted:
        start, _, end = wanted[6:].partition("-")
        if start and end:
            return int(end) - int(start) + 1
    return 0


if __name__ == "__main__":
    main()
