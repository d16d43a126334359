"""Cost of fitting the normalisation at Alaska's settings: crops read, pixels kept, fit time.

Usage::

    python benchmarks/bench_normaliser.py                # 256 crops of 256 px from 4096 px tiles
    python benchmarks/bench_normaliser.py --crops 4096   # all of Alaska's crops (slower)

Alaska's mapped area gives :func:`mapper.train.normaliser_crops` 4096 crops of its 256 px
(``training.crop_px``), each giving ``NORMALISER_PIXELS / 4096`` = 1024 random pixels. Here four
SYNTHETIC stack tiles of Alaska's 4096 px (``tile_px``; 19 float32 bands, DEFLATE and predictor
3 in 256 px blocks, as the stage writes them; smooth fields so compression is realistic) are
written to a temporary folder, and ``--crops`` crops at random places over them are read through
:class:`mapper.windows.StackReader` and sampled as :meth:`mapper.dataset.CropDataset.
normaliser_pixels` does; then :meth:`mapper.normalise.Normaliser.fit` runs on the table with
Alaska's aspect encoding (``model.aspect``) and each Sentinel-2 scaling (``s2_scaling``;
Alaska's, the one its model's start gives, is marked). The crop and tile sizes are read from
``config/regions/alaska.yaml`` unless given. Printed: seconds per crop (first touch of each
block: decompression), the time for 4096 crops at that rate, the table's size and, per scaling,
the fit's time and peak memory (tracemalloc).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import project_region, region_model_config  # noqa: E402

from mapper.bands import STACK_BANDS  # noqa: E402
from mapper.grid import Lattice  # noqa: E402
from mapper.normalise import S2_SCALINGS, Normaliser, s2_scaling_for  # noqa: E402
from mapper.raster import write_geotiff  # noqa: E402
from mapper.train import NORMALISER_MAX_CROPS, NORMALISER_PIXELS  # noqa: E402
from mapper.windows import StackReader  # noqa: E402


def write_tiles(folder: Path, lattice: Lattice, tiles: list[str]) -> dict[str, Path]:
    from scipy.ndimage import zoom

    rng = np.random.default_rng(0)
    out = {}
    n = lattice.tile_px
    for tile in tiles:
        coarse = rng.random((len(STACK_BANDS), n // 256 + 2, n // 256 + 2)).astype(np.float32)
        data = zoom(coarse, (1, 256, 256), order=1)[:, :n, :n]
        data += rng.normal(0, 0.01, data.shape).astype(np.float32)  # texture
        path = folder / f"{tile}.tif"
        write_geotiff(path, data, lattice.tile_transform(tile), lattice.crs, nodata=float("nan"),
                      descriptions=list(STACK_BANDS),
                      tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "false",
                            "MAPPER_SYNTHETIC": "true"})
        out[tile] = path
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=int, default=256)
    parser.add_argument("--crop-px", type=int, help="default: Alaska's training.crop_px")
    parser.add_argument("--tile-px", type=int, help="default: Alaska's tile_px")
    args = parser.parse_args()
    from rasterio.windows import Window

    alaska = project_region("alaska")
    cfg = region_model_config(alaska)
    crop_px, tile_px = int(alaska.settings["training"]["crop_px"]), alaska.lattice.tile_px
    args.crop_px, args.tile_px = args.crop_px or crop_px, args.tile_px or tile_px
    print(f"{args.crop_px} px crops, {args.tile_px} px tiles (Alaska's: {crop_px} and {tile_px}); "
          f"Alaska's aspect as {cfg.aspect}, Sentinel-2 scaling "
          f"{s2_scaling_for(cfg.satlas_weights)}")
    lattice = replace(alaska.lattice, tile_px=args.tile_px)
    tiles = ["R0100C0100", "R0100C0101", "R0101C0100", "R0101C0101"]
    k = max(1, NORMALISER_PIXELS // NORMALISER_MAX_CROPS)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        stacks = write_tiles(Path(tmp), lattice, tiles)
        print(f"{len(tiles)} SYNTHETIC stack tiles of {args.tile_px} px written in "
              f"{time.perf_counter() - t0:.0f} s")
        rng = np.random.default_rng(1)
        row0, col0 = 100 * args.tile_px, 100 * args.tile_px
        span = 2 * args.tile_px - args.crop_px
        area = args.crop_px ** 2
        parts = []
        with StackReader(stacks, lattice) as reader:
            t0 = time.perf_counter()
            for _ in range(args.crops):
                r, c = (int(v) for v in rng.integers(0, span, 2))
                crop = reader.read(Window(col0 + c, row0 + r, args.crop_px, args.crop_px))
                parts.append(crop.reshape(len(crop), area)[:, rng.choice(area, k, False)].T)
            per_crop = (time.perf_counter() - t0) / args.crops
        table = np.concatenate(parts)
        print(f"read and sampled {args.crops} crops of {args.crop_px} px: {per_crop * 1e3:.1f} ms "
              f"a crop; {NORMALISER_MAX_CROPS} crops (Alaska) at that rate: "
              f"{per_crop * NORMALISER_MAX_CROPS:.0f} s")
        full = np.concatenate([table] * (NORMALISER_MAX_CROPS // args.crops or 1))
        print(f"table for {NORMALISER_MAX_CROPS} crops: {full.shape[0]} pixels x "
              f"{full.shape[1]} bands, {full.nbytes / 1e6:.0f} MB")
        for scaling in S2_SCALINGS:  # the fixed SatlasPretrain one fits the covariates only
            tracemalloc.start()
            t0 = time.perf_counter()
            norm = Normaliser.fit(full, seed=0, s2_scaling=scaling, aspect=cfg.aspect)
            fit = time.perf_counter() - t0
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            mark = " (Alaska's)" if scaling == s2_scaling_for(cfg.satlas_weights) else ""
            print(f"Normaliser.fit on it, aspect as {cfg.aspect}, s2_scaling {scaling}{mark}: "
                  f"{fit:.1f} s, peak {peak / 1e6:.0f} MB, {norm.n_pixels} pixels used")


if __name__ == "__main__":
    main()
