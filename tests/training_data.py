"""A tiny SYNTHETIC region for the samples, training, evaluation, report and error tests.

4 x 4 tiles of 64 px (2.56 km square) on the project lattice, and the ring of 20 context tiles
the crops reach around them (their fields the mapped tiles' mirrored at the edge), stacks written
per the stack contract (19 float32 bands, NaN nodata, band descriptions STACK_BANDS, MAPPER_*
tags) from smooth seeded fields, with a cloud hole (Sentinel-2 NaN) in one tile. Observations:
clustered and scattered points with NSP from a rule on the fields (so a model can learn
something), soil orders from elevation bands, a few points outside the region and a few in the
hole. The fixture ``training_region`` (tests/conftest.py) writes it once per test session.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pyproj import Transformer
from scipy.ndimage import gaussian_filter
from tiny_region import ORIGIN, RES, write_tiny_region

from mapper.bands import STACK_BANDS
from mapper.grid import Lattice
from mapper.raster import write_geotiff

LEFT, TOP = 241_600.0, 1_647_680.0  # on the 64 px tile lattice
TILE_PX = 64
N_TILES = 4
SIZE = TILE_PX * N_TILES * RES  # 2560 m
HOLE = (TOP - 400.0, LEFT + 2000.0, 120.0)  # (y, x, radius m): Sentinel-2 missing

TRAINING = {
    "crop_px": 32, "batch_size": 4, "random_points": 4, "grid_points": 4, "pretrain_epochs": 1,
    "pretrain_lr": 1.0e-3, "pretrain_crops": 8, "finetune_epochs": 2, "lr_max": 1.0e-3,
    "lr_min": 1.0e-4, "warmup_lr": 1.0e-5, "seed": 3,
}
EVALUATION = {"folds": 3, "epochs": 1, "rf_trees": 20, "rf_max_depth": 8}
PREDICTION = {"crop_px": 32, "stride_px": 16, "sigma_scale": 0.125}


def lattice() -> Lattice:
    return Lattice(ORIGIN[0], ORIGIN[1], RES, TILE_PX)


def fields(seed: int = 0) -> np.ndarray:
    """The region's 19 stack bands [19, 256, 256] (physical units), NaN in the cloud hole."""
    rng = np.random.default_rng(seed)
    n = TILE_PX * N_TILES
    smooth = [gaussian_filter(rng.standard_normal((n, n)), 12) for _ in range(4)]
    smooth = [f / f.std() for f in smooth]
    rough = gaussian_filter(rng.standard_normal((n, n)), 1.5)
    rough /= rough.std()
    elev, wet, veg, clim = smooth
    out = np.empty((19, n, n), dtype=np.float32)
    for b in range(9):  # reflectance 0..1
        out[b] = 0.08 + 0.03 * b + 0.04 * veg + 0.01 * rough * (b % 3) + 0.01 * wet
    out[9] = 200 + 60 * elev  # elevation m
    out[10] = np.abs(gaussian_filter(elev, 2) * 8)  # slope deg
    out[11] = (np.degrees(np.arctan2(wet, veg)) + 360) % 360  # aspect
    out[12] = 0.001 * rough  # curvature
    out[13] = 3 * rough  # tpi
    out[14] = 6 + 2 * wet  # twi
    out[15] = 2 + wet  # spi
    out[16] = 400 + 50 * clim  # precip
    out[17] = 1500 + 100 * clim  # summer warmth
    out[18] = -25 + 2 * clim  # jan tmin
    ys = TOP - (np.arange(n) + 0.5) * RES
    xs = LEFT + (np.arange(n) + 0.5) * RES
    hy, hx, hr = HOLE
    hole = (ys[:, None] - hy) ** 2 + (xs[None, :] - hx) ** 2 < hr**2
    out[:9, hole] = np.nan
    out[12, :3, :] = np.nan  # a covariate missing on its own (pixel stays valid)
    return out


def nsp_truth(f: np.ndarray) -> np.ndarray:
    """Permafrost where it is high and wet, or in rough texture (a context signal)."""
    return ((f[9] - 200) / 60 + (f[14] - 6) / 2 + 0.5 * np.sign(f[13]) > 0.3).astype(np.int8)


def write_stacks(root: Path, seed: int = 0) -> list[Path]:
    """The stacks of the region's mapped tiles and of its ring of context tiles (the fields
    mirrored past the area's edge, so the mapped tiles' pixels are :func:`fields`')."""
    lat = lattice()
    ring = 1  # the crops (32 px) reach one 64 px tile beyond the area
    data = np.pad(fields(seed), ((0, 0), (ring * TILE_PX,) * 2, (ring * TILE_PX,) * 2),
                  mode="reflect")
    c0 = int((LEFT - ORIGIN[0]) / RES) // TILE_PX - ring
    r0 = int((ORIGIN[1] - TOP) / RES) // TILE_PX - ring
    (root / "stack").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(N_TILES + 2 * ring):
        for j in range(N_TILES + 2 * ring):
            tile = lat.tile_id(r0 + i, c0 + j)
            block = data[:, i * TILE_PX : (i + 1) * TILE_PX, j * TILE_PX : (j + 1) * TILE_PX]
            path = root / "stack" / f"{tile}.tif"
            write_geotiff(
                path, np.ascontiguousarray(block), lat.tile_transform(tile), "EPSG:3338",
                nodata=float("nan"), descriptions=STACK_BANDS, predictor=3,
                tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "false", "MAPPER_SYNTHETIC": "true"},
            )
            paths.append(path)
    return paths


def observations(seed: int = 0, n_cluster: int = 90, n_scatter: int = 50) -> pd.DataFrame:
    """Points (x, y in EPSG:3338) with labels; 4 outside the region and 3 in the cloud hole."""
    rng = np.random.default_rng(seed + 10)
    f = fields(seed)
    centres = np.array([[LEFT + 600, TOP - 700], [LEFT + 1900, TOP - 1800],
                        [LEFT + 700, TOP - 2000]])
    pick = rng.integers(0, len(centres), n_cluster)
    xy = np.concatenate([
        centres[pick] + rng.normal(0, 90, (n_cluster, 2)),
        rng.uniform([LEFT + 20, TOP - SIZE + 20], [LEFT + SIZE - 20, TOP - 20], (n_scatter, 2)),
    ])
    hy, hx, _ = HOLE
    xy = np.concatenate([xy, [[hx, hy], [hx + 30, hy], [hx, hy - 30]]])
    xy = np.concatenate([xy, [[LEFT - 500, TOP - 100], [LEFT + SIZE + 300, TOP - 900],
                              [LEFT + 100, TOP + 800], [LEFT + 1000, TOP - SIZE - 50]]])
    col = np.clip(((xy[:, 0] - LEFT) / RES).astype(int), 0, 255)
    row = np.clip(((TOP - xy[:, 1]) / RES).astype(int), 0, 255)
    nsp = nsp_truth(f)[row, col].astype(float)
    elev = f[9, row, col]
    soil = np.where(nsp == 1, "Gelisols", np.where(elev > 200, "Spodosols", "Inceptisols"))
    soil = soil.astype(object)
    soil[(f[14, row, col] > 7.5) & (nsp == 0)] = "Histosols"
    nsp[rng.random(len(nsp)) < 0.15] = np.nan
    soil[rng.random(len(soil)) < 0.1] = ""
    lon, lat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True).transform(
        xy[:, 0], xy[:, 1])
    return pd.DataFrame({
        "obs_id": [f"P{i:04d}" for i in range(len(xy))],
        "lon": np.round(lon, 7), "lat": np.round(lat, 7),
        "date": "2020-07-01",
        "nsp": pd.array(nsp, dtype="Int8"),
        "soil_order": soil,
        "x": xy[:, 0], "y": xy[:, 1],
    })


def write_region(root: Path, seed: int = 0) -> dict:
    """Config, region file (region ``tiny``), stacks and observations.csv under ``root``;
    returns their paths and the observations with their EPSG:3338 ``x``, ``y`` (``observed``).

    The region carries training, evaluation and prediction settings small enough for tests.
    """
    config = write_tiny_region(
        root, (LEFT, TOP - SIZE, LEFT + SIZE, TOP), TILE_PX,
        description="tiny SYNTHETIC training test region", model={"size": "demo"},
        training=TRAINING, evaluation=EVALUATION, prediction=PREDICTION,
    )  # fmt: skip
    stacks = write_stacks(root, seed)
    obs = observations(seed)
    obs.drop(columns=["x", "y"]).to_csv(root / "observations.csv", index=False)
    return {"config": config, "stacks": stacks, "observations": root / "observations.csv",
            "observed": obs}
