"""Cost of deciding, per pixel, which elevation product serves it, at a statewide tile's size.

Usage::

    python benchmarks/bench_cell_owner.py               # a 4096 px tile's DEM window (5120 px)
    python benchmarks/bench_cell_owner.py --side 2048   # a smaller window

Where a tile's elevation cells come from more than one product (3DEP 1 arc-second and its
fallbacks: the Aleutians, St. Lawrence Island, the Pribilofs), :func:`mapper.dem.warp_dem` warps
each product on its own and gives each pixel the value of the product that serves the cell the
pixel lies in (:func:`mapper.dem.cell_owner`: the pixel centres taken to NAD83 longitude and
latitude). Only such tiles pay this; a tile of one product does not. Printed: the wall time and
the peak memory of :func:`mapper.dem.cell_owner` over a ``side`` px square window of the lattice
at 63 N, 170 W (St. Lawrence Island), split between two products, and the time per million pixels.
A statewide tile (4096 px, hydrology halo 512 px) reads a 5120 px DEM window once for its
hydrology blocks and about once more, in strips with their halos, for local terrain.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyproj import Transformer  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from mapper.dem import cell_owner  # noqa: E402
from mapper.grid import Lattice  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=5120, help="window side, px (default 5120)")
    args = parser.parse_args()
    lattice = Lattice(-2_600_000.0, 2_600_000.0, 10.0, 4096)
    x, y = Transformer.from_crs("EPSG:4269", "EPSG:3338", always_xy=True).transform(-170.0, 63.0)
    half = args.side * lattice.res / 2
    start = lattice.bounds_window((x - half, y - half, x + half, y + half))
    window = Window(int(start.col_off), int(start.row_off), args.side, args.side)
    products = [frozenset({(62, -171), (63, -171)}), frozenset({(62, -170), (63, -170)})]
    t0 = time.perf_counter()
    owner = cell_owner(lattice, window, products)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    shares = [float((owner == k).mean()) for k in range(len(products))]
    print(f"cell_owner over {args.side} x {args.side} px: {seconds:.2f} s "
          f"({seconds / (args.side ** 2 / 1e6):.3f} s per million pixels), peak memory "
          f"{peak_mb:.0f} MB (process); pixels per product: "
          + ", ".join(f"{s:.1%}" for s in shares))


if __name__ == "__main__":
    main()
