"""Prediction per tile: tiling invariance, output resolutions, direct-query agreement, nodata,
the empty-tile fast path, determinism and the neighbour check, on tiny stacks and a demo model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.windows import Window
from tiny_region import ORIGIN, changed_copy, write_config, write_region_file

from mapper.bands import SOIL_ORDERS, STACK_BANDS
from mapper.cli import main
from mapper.config import Region, load_config, load_region
from mapper.errors import ConfigError, InputError
from mapper.grid import Lattice
from mapper.models.checkpoint import save_checkpoint
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo
from mapper.normalise import Normaliser
from mapper.predict import PredictOptions, predict_tile
from mapper.raster import write_geotiff
from mapper.windows import StackReader

LEFT, TOP = 241_600.0, 1_646_400.0  # on the 64, 128 and 160 px tile lattices alike
WORLD_PX = 160
HOLE = (slice(40, 46), slice(60, 70))  # cloud gap (Sentinel-2 NaN) across two 64 px tiles
PREDICTION = {"crop_px": 32, "stride_px": 12, "sigma_scale": 0.25, "support_px": 24,
              "stagger_px": 8}
REGIONS = {  # name: (tile_px, region size in px, out_res)
    "tiny64": (64, 128, 10.0),
    "tiny128": (128, 128, 10.0),
    "tiny64m20": (64, 128, 20.0),
    "tiny160m50": (160, 160, 50.0),
}


def world() -> np.ndarray:
    """[19, 160, 160] stack values in physical units starting at (LEFT, TOP); a NaN hole."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:WORLD_PX, 0:WORLD_PX] / WORLD_PX
    bands = []
    for _ in range(len(STACK_BANDS)):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6)
        smooth = 0.5 + 0.4 * np.sin(2 * np.pi * fx * xx + ph) * np.cos(2 * np.pi * fy * yy)
        bands.append(smooth + 0.1 * rng.standard_normal(smooth.shape))
    data = np.stack(bands).astype(np.float32)
    data[:9] *= 0.4  # reflectance 0..0.4
    data[9] *= 800.0  # elevation (m)
    data[:9, HOLE[0], HOLE[1]] = np.nan
    return data


def normalisation() -> dict:
    """A fake fitted normalisation: elevation 0..800 m, the other covariates 0..1."""
    return Normaliser(lo=(0.0,) * 10, hi=(800.0,) + (1.0,) * 9, mean=(0.5,) * 10,
                      std=(0.2,) * 10).to_dict()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Regions of REGIONS over the same square of :func:`world`, their stacks
    (``stacks[region]``: the lattice and tile -> stack) and demo models of both tasks."""
    root = tmp_path_factory.mktemp("predict")
    data = world()
    regions, region_stacks = {}, {}
    for name, (tile_px, size, out_res) in REGIONS.items():
        span = size * 10.0
        regions[name] = write_region_file(
            root, name, (LEFT, TOP - span, LEFT + span, TOP), tile_px, model={"size": "demo"},
            prediction={**PREDICTION, "out_res": out_res},
        )  # fmt: skip
        lattice = Lattice(*ORIGIN, 10.0, tile_px)
        r0 = round((ORIGIN[1] - TOP) / 10.0)
        c0 = round((LEFT - ORIGIN[0]) / 10.0)
        stacks = {}
        for tile in lattice.tiles_in_window(Window(c0, r0, size, size)):
            w = lattice.tile_window(tile)
            r, c = int(w.row_off) - r0, int(w.col_off) - c0
            path = root / name / "stack" / f"{tile}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_geotiff(path, data[:, r:r + tile_px, c:c + tile_px], lattice.tile_transform(tile),
                          "EPSG:3338", nodata=np.nan, descriptions=STACK_BANDS,
                          tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "false",
                                "MAPPER_SYNTHETIC": "true"})
            stacks[tile] = path
        region_stacks[name] = (lattice, stacks)
    config = write_config(root / "config.yaml", regions)
    models = {}
    for task, n_out in (("nsp", 1), ("soilorder", 7)):
        torch.manual_seed(3)
        model = MiSo(ModelConfig.named("demo"), n_out=n_out)
        models[task] = save_checkpoint(
            root / f"{task}.pt", model, task=task, bands=STACK_BANDS,
            normalisation=normalisation(), classes=SOIL_ORDERS if n_out == 7 else ["nsp"])
    return {"root": root, "config": config, "models": models, "data": data,
            "stacks": region_stacks}


def region_of(setup: dict, name: str) -> Region:
    return load_region(load_config(setup["config"]), name)


def quiet(batch_size: int = 16) -> PredictOptions:
    return PredictOptions(batch_size=batch_size, progress=False)


def predict_region(setup: dict, region: str, out_dir: Path, task: str = "nsp") -> dict[str, Path]:
    """Predict every tile of a region (each with its neighbours' stacks) into ``out_dir``;
    tile -> output."""
    lattice, stacks = setup["stacks"][region]
    outs = {}
    for tile in stacks:
        given = [stacks[t] for t in [tile, *lattice.neighbours(tile)] if t in stacks]
        out = out_dir / region / task / f"{tile}.tif"
        predict_tile(region_of(setup, region), task, tile, setup["models"][task], given, out,
                     options=quiet(8))
        outs[tile] = out
    return outs


def assemble(outs: dict[str, Path]) -> tuple[np.ndarray, tuple]:
    """Mosaic tile outputs into one array [bands, H, W] over their union (NaN elsewhere)."""
    profiles = {}
    for tile, path in outs.items():
        with rasterio.open(path) as ds:
            profiles[tile] = (ds.read(), ds.transform)
    res = next(iter(profiles.values()))[1].a
    left = min(t.c for _, t in profiles.values())
    top = max(t.f for _, t in profiles.values())
    right = max(t.c + a.shape[2] * res for a, t in profiles.values())
    bottom = min(t.f - a.shape[1] * res for a, t in profiles.values())
    n = next(iter(profiles.values()))[0].shape[0]
    out = np.full((n, round((top - bottom) / res), round((right - left) / res)), np.nan, np.float32)
    for a, t in profiles.values():
        r, c = round((top - t.f) / res), round((t.c - left) / res)
        out[:, r:r + a.shape[1], c:c + a.shape[2]] = a
    return out, (left, bottom, right, top)


@pytest.fixture(scope="module")
def nsp64(setup: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return predict_region(setup, "tiny64", tmp_path_factory.mktemp("nsp64"))


def test_tiling_invariance_and_nodata(setup: dict, nsp64: dict[str, Path],
                                      tmp_path: Path) -> None:
    """64 px and 128 px tiles over the same lattice give one mosaic; the cloud gap is nodata."""
    a, bounds_a = assemble(nsp64)
    b, bounds_b = assemble(predict_region(setup, "tiny128", tmp_path))
    assert bounds_a == bounds_b and a.shape == b.shape == (1, 128, 128)
    hole = np.zeros((128, 128), dtype=bool)
    hole[HOLE] = True
    assert np.isnan(a[0][hole]).all() and np.isnan(b[0][hole]).all()
    assert np.isfinite(a[0][~hole]).all()
    assert np.nanmax(np.abs(a - b)) <= 1e-5
    assert np.nanstd(a) > 1e-3, "the model's output varies over the region (a meaningful test)"
    assert np.nanmin(a) >= 0 and np.nanmax(a) <= 1


def crop_start(i: int) -> int:
    """Start of crop ``i`` along an axis, written out: the stride plus the offset that puts it on
    the residue (bit-reversed i mod 16) * stagger / 16 modulo the stagger."""
    stride, stagger = PREDICTION["stride_px"], PREDICTION["stagger_px"]
    residue = int(format(i % 16, "04b")[::-1], 2) * stagger // 16
    return i * stride + (residue - i * stride) % stagger


def direct_blend(setup: dict, region: str, task: str, cell: tuple[int, int]) -> np.ndarray:
    """Blended probability at a global out cell, computed from direct queries of every crop
    whose support holds the cell's centre (independent of mapper.blending)."""
    from mapper.models.checkpoint import load_checkpoint

    lattice, stacks = setup["stacks"][region]
    tile_px, _, out_res = REGIONS[region]
    k = round(out_res / 10.0)
    crop, stride, support = PREDICTION["crop_px"], PREDICTION["stride_px"], PREDICTION["support_px"]
    sigma = PREDICTION["sigma_scale"] * crop
    margin = (crop - support) // 2
    cy, cx = (cell[0] + 0.5) * k, (cell[1] + 0.5) * k  # centre in lattice pixels
    model, meta = load_checkpoint(setup["models"][task])
    norm = Normaliser.from_dict(meta.normalisation)

    def weight(d: float) -> float:  # Gaussian less its value at the support's edge
        return math.exp(-(d**2) / (2 * sigma**2)) - math.exp(-((support / 2) ** 2) / (2 * sigma**2))

    num, den, used = 0.0, 0.0, 0
    with StackReader(stacks, lattice) as reader, torch.inference_mode():
        for i in range(math.floor((cy - crop) / stride) - 2, math.floor(cy / stride) + 2):
            for j in range(math.floor((cx - crop) / stride) - 2, math.floor(cx / stride) + 2):
                r0, c0 = crop_start(i), crop_start(j)
                if not (r0 + margin <= cy < r0 + margin + support
                        and c0 + margin <= cx < c0 + margin + support):
                    continue
                s2, cov = norm(reader.read(Window(c0, r0, crop, crop))[None])
                coords = torch.tensor([[[-1 + 2 * (cx - c0) / crop, -1 + 2 * (cy - r0) / crop]]],
                                      dtype=torch.float32)
                logits = model.predict(model.encode(torch.from_numpy(s2), torch.from_numpy(cov)),
                                       coords, coords)[0, 0]
                p = torch.sigmoid(logits) if task == "nsp" else torch.softmax(logits, -1)
                w = weight(cy - r0 - crop / 2) * weight(cx - c0 - crop / 2)
                num, den, used = num + w * p.double().numpy(), den + w, used + 1
    assert used >= 1
    return num / den


@pytest.mark.parametrize(("region", "shape"), [("tiny64m20", (32, 32)), ("tiny160m50", (32, 32))])
def test_coarser_output_is_the_decoder_at_coarse_centres(
    setup: dict, region: str, shape: tuple[int, int], tmp_path: Path
) -> None:
    lattice, stacks = setup["stacks"][region]
    _, _, out_res = REGIONS[region]
    tile = min(stacks)
    given = [stacks[t] for t in [tile, *lattice.neighbours(tile)] if t in stacks]
    out = tmp_path / f"{tile}.tif"
    predict_tile(region_of(setup, region), "nsp", tile, setup["models"]["nsp"], given, out,
                 options=quiet())
    with rasterio.open(out) as ds:
        data, transform = ds.read(1), ds.transform
        assert ds.crs.to_epsg() == 3338 and ds.dtypes[0] == "float32"
        assert ds.tags()["MAPPER_OUT_RES"] == f"{out_res:g}"
    assert data.shape == shape
    left, _, _, top = lattice.tile_bounds(tile)
    assert tuple(transform)[:6] == (out_res, 0.0, left, 0.0, -out_res, top)
    k = round(out_res / 10.0)
    tw = lattice.tile_window(tile)
    for r, c in [(0, 0), (5, 17), (31, 31)]:
        cell = (int(tw.row_off) // k + r, int(tw.col_off) // k + c)
        expected = direct_blend(setup, region, "nsp", cell)
        assert abs(data[r, c] - expected[0]) <= 1e-5, (r, c, data[r, c], expected)
    if region == "tiny64m20":  # a 20 m cell is nodata only when all its 10 m pixels are
        # the hole's 10 m rows 40-45 and cols 60-63 of this tile: 20 m rows 20-22, cols 30-31
        assert np.isnan(data).sum() == 3 * 2 and np.isnan(data[20:23, 30:32]).all()


def test_soilorder_probabilities(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = max(stacks)
    out = tmp_path / f"{tile}.tif"
    given = [stacks[t] for t in [tile, *lattice.neighbours(tile)] if t in stacks]
    predict_tile(region_of(setup, "tiny64"), "soilorder", tile, setup["models"]["soilorder"],
                 given, out, options=quiet(5))
    with rasterio.open(out) as ds:
        assert list(ds.descriptions) == SOIL_ORDERS and ds.count == 7
        p = ds.read()
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
    tw = lattice.tile_window(tile)
    expected = direct_blend(setup, "tiny64", "soilorder", (int(tw.row_off) + 10,
                                                           int(tw.col_off) + 20))
    np.testing.assert_allclose(p[:, 10, 20], expected, atol=1e-5)


def test_rerun_is_byte_identical(setup: dict, nsp64: dict[str, Path], tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = min(stacks)
    given = [stacks[t] for t in [tile, *lattice.neighbours(tile)] if t in stacks]
    again = tmp_path / "again.tif"
    predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"], given[::-1],
                 again, options=quiet(8))
    assert again.read_bytes() == nsp64[tile].read_bytes()
    assert not list(again.parent.glob(".again.tif*")), "no temporary file left"
    # another batch size changes only float rounding in the batched matrix products
    other = tmp_path / "other.tif"
    predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"], given, other,
                 options=quiet(3))
    with rasterio.open(other) as a, rasterio.open(again) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-6)


def test_empty_tile_is_nodata_without_the_model(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = min(stacks)
    empty = tmp_path / f"{tile}.tif"
    write_geotiff(empty, np.full((19, 64, 64), np.nan, np.float32), lattice.tile_transform(tile),
                  "EPSG:3338", nodata=np.nan, descriptions=STACK_BANDS,
                  tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "true", "MAPPER_SYNTHETIC": "true"})
    not_a_model = tmp_path / "garbage.pt"
    not_a_model.write_bytes(b"loading this would fail")
    out = tmp_path / "out.tif"
    # an empty tile never loads the model (this one would fail)
    predict_tile(region_of(setup, "tiny64"), "soilorder", tile, not_a_model, [empty], out,
                 options=quiet())
    with rasterio.open(out) as ds:
        assert ds.count == 7 and np.isnan(ds.read()).all() and ds.tags()["MAPPER_EMPTY"] == "true"


def test_missing_region_neighbour_is_an_error(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = min(stacks)
    with pytest.raises(InputError, match="but their stacks were not given"):
        predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"],
                     [stacks[tile]], tmp_path / "x.tif", options=quiet())
    assert not (tmp_path / "x.tif").exists()


def test_cli_and_bad_out_res(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = min(stacks)
    out = tmp_path / "cli.tif"
    args = ["predict", "--config", str(setup["config"]), "--region", "tiny64", "--task", "nsp",
            "--tile", tile, "--model", str(setup["models"]["nsp"]), "--batch-size", "4",
            "--out", str(out), "--no-progress", *[str(p) for p in stacks.values()]]
    assert main(args) == 0 and out.exists()
    bad = changed_copy(setup["config"], "tiny64", tmp_path / "bad",
                       lambda s: s["prediction"].update(out_res=50.0))
    with pytest.raises(ConfigError, match="does not divide tile_px 64"):
        predict_tile(load_region(load_config(bad), "tiny64"), "nsp", tile,
                     setup["models"]["nsp"], list(stacks.values()), tmp_path / "y.tif",
                     options=quiet())
