"""Prediction per tile: tiling invariance, output resolutions, direct-query agreement, nodata,
the empty-tile fast path, determinism and the neighbour check, on tiny stacks and a demo model."""

from __future__ import annotations

import logging
import math
import re
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
from mapper.errors import CheckpointError, ConfigError, InputError
from mapper.grid import Lattice
from mapper.models.checkpoint import save_checkpoint
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo
from mapper.normalise import Normaliser
from mapper.predict import PredictOptions, predict_tile
from mapper.raster import write_geotiff
from mapper.resolution import logged_costs
from mapper.windows import StackReader

LEFT, TOP = 241_600.0, 1_646_400.0  # on the 64, 128 and 160 px tile lattices alike
WORLD_PX = 160
PAD = 256  # context tiles reach at most one 160 px tile beyond the world
HOLE = (slice(40, 46), slice(60, 70))  # cloud gap (Sentinel-2 NaN) across two 64 px tiles
PREDICTION = {"crop_px": 32, "stride_px": 12, "sigma_scale": 0.25, "support_px": 24,
              "stagger_px": 8}
REGIONS = {  # name: (tile_px, region size in px, out_res)
    "tiny64": (64, 128, 10.0),
    "tiny128": (128, 128, 10.0),
    "tiny64m20": (64, 128, 20.0),
    "tiny160m50": (160, 160, 50.0),
    "tiny64m50": (64, 160, 50.0),  # 50 m cells straddle the 64 px tiles' edges
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
            prediction={**PREDICTION, "out_res": out_res}, training={"crop_px": 32},
            stack={"hydro_block_px": 32},  # nests with every tile size here (never stacked)
        )  # fmt: skip
        lattice = Lattice(*ORIGIN, 10.0, tile_px)
        r0 = round((ORIGIN[1] - TOP) / 10.0)
        c0 = round((LEFT - ORIGIN[0]) / 10.0)
        stacks = {}
        # the mapped tiles and the context tiles around them (NaN beyond the world: no source)
        padded = np.full((len(STACK_BANDS), WORLD_PX + 2 * PAD, WORLD_PX + 2 * PAD), np.nan,
                         dtype=np.float32)
        padded[:, PAD:PAD + WORLD_PX, PAD:PAD + WORLD_PX] = data
        config = write_config(root / f"{name}.config.yaml", {name: regions[name]})
        for tile in load_region(load_config(config), name).stacked_tiles():
            w = lattice.tile_window(tile)
            r, c = int(w.row_off) - r0 + PAD, int(w.col_off) - c0 + PAD
            path = root / name / "stack" / f"{tile}.tif"
            path.parent.mkdir(parents=True, exist_ok=True)
            write_geotiff(path, padded[:, r:r + tile_px, c:c + tile_px],
                          lattice.tile_transform(tile),
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


def context(setup: dict, region: str, tile: str) -> list[Path]:
    """The stacks the workflow gives a tile's predict job (its own and those within reach)."""
    _, stacks = setup["stacks"][region]
    return [stacks[t] for t in region_of(setup, region).tile_context(tile)]


def first_tile(setup: dict, region: str) -> str:
    return min(region_of(setup, region).tiles())


def quiet(batch_size: int = 16) -> PredictOptions:
    return PredictOptions(batch_size=batch_size, progress=False)


def predict_region(setup: dict, region: str, out_dir: Path, task: str = "nsp") -> dict[str, Path]:
    """Predict every mapped tile of a region (each with the stacks within reach) into ``out_dir``;
    tile -> output."""
    outs = {}
    for tile in region_of(setup, region).tiles():
        given = context(setup, region, tile)
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
    np.testing.assert_array_equal(a, b)  # bit for bit, NaN where NaN
    assert np.nanstd(a) > 1e-3, "the model's output varies over the region (a meaningful test)"
    assert np.nanmin(a) >= 0 and np.nanmax(a) <= 1


def crop_start(i: int) -> int:
    """Start of crop ``i`` along an axis, written out: the stride plus the offset that puts it on
    the residue (bit-reversed i mod 16) * stagger / 16 modulo the stagger."""
    stride, stagger = PREDICTION["stride_px"], PREDICTION["stagger_px"]
    residue = int(format(i % 16, "04b")[::-1], 2) * stagger // 16
    return i * stride + (residue - i * stride) % stagger


def support_queries(mapped: np.ndarray, left: float, top: float) -> int:
    """Pairs (crop, cell) with the cell ``mapped`` (a 10 m grid whose corner is ``left``, ``top``)
    and its centre inside the crop's support: the queries the decoder runs for those cells."""
    crop, stride = PREDICTION["crop_px"], PREDICTION["stride_px"]
    margin = (crop - PREDICTION["support_px"]) // 2
    row0, col0 = round((ORIGIN[1] - top) / 10.0), round((left - ORIGIN[0]) / 10.0)
    total = np.pad(mapped.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))

    def spans(first: int, n: int) -> list[tuple[int, int]]:  # supports along an axis, clipped
        out = []
        for i in range(math.floor((first - crop) / stride) - 2,
                       math.floor((first + n) / stride) + 2):
            lo = max(crop_start(i) + margin - first, 0)
            hi = min(crop_start(i) + margin + PREDICTION["support_px"] - first, n)
            if lo < hi:
                out.append((lo, hi))
        return out

    rows, cols = spans(row0, mapped.shape[0]), spans(col0, mapped.shape[1])
    return sum(int(total[r1, c1] - total[r0, c1] - total[r1, c0] + total[r0, c0])
               for r0, r1 in rows for c0, c1 in cols)


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
    tile = first_tile(setup, region)
    given = context(setup, region, tile)
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


def test_50m_cells_straddling_tiles_mosaic_to_the_one_tile_map(setup: dict,
                                                              tmp_path: Path) -> None:
    """50 m cells on 64 px tiles (a ratio of 5 that does not divide the tile): each tile holds the
    cells whose centre lies in it, so its cell count varies, some cells read pixels of the next
    tile, and the tiles mosaic, bit for bit, to the map of one 160 px tile over the same region."""
    lattice, _ = setup["stacks"]["tiny64m50"]
    outs = predict_region(setup, "tiny64m50", tmp_path)
    widths = set()
    for tile, path in outs.items():
        with rasterio.open(path) as ds:
            widths.add(ds.width)
            ow = region_of(setup, "tiny64m50").crop_lattice().out_window(
                lattice.tile_window(tile))
            assert (ds.width, ds.height) == (ow.width, ow.height)
            assert ds.transform.c == lattice.origin_x + ow.col_off * 50.0
            assert ds.transform.f == lattice.origin_y - ow.row_off * 50.0
    assert len(widths) == 2, widths  # 13 and 12 cells, or 12 and 13, by the tile's position
    a, bounds_a = assemble(outs)
    b, bounds_b = assemble(predict_region(setup, "tiny160m50", tmp_path))
    left, top = bounds_b[0], bounds_b[3]
    r, c = round((bounds_a[3] - top) / 50.0), round((left - bounds_a[0]) / 50.0)
    assert b.shape == (1, 32, 32) and np.isfinite(b).any()
    np.testing.assert_array_equal(a[:, r:r + 32, c:c + 32], b)
    outside = np.ones(a.shape[1:], dtype=bool)
    outside[r:r + 32, c:c + 32] = False
    assert np.isnan(a[0][outside]).all(), "cells outside the region are nodata"


def test_soilorder_probabilities(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = max(region_of(setup, "tiny64").tiles())
    out = tmp_path / f"{tile}.tif"
    given = context(setup, "tiny64", tile)
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
    tile = first_tile(setup, "tiny64")
    given = context(setup, "tiny64", tile)
    again = tmp_path / "again.tif"
    predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"], given[::-1],
                 again, options=quiet(8))
    assert again.read_bytes() == nsp64[tile].read_bytes()
    assert not list(again.parent.glob(".again.tif*")), "no temporary file left"
    # another batch size (other encoder shapes) changes only the last bits of a float
    other = tmp_path / "other.tif"
    predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"], given, other,
                 options=quiet(3))
    with rasterio.open(other) as a, rasterio.open(again) as b:
        np.testing.assert_allclose(a.read(), b.read(), atol=1e-6)


def mode_config(setup: dict, region: str, folder: Path, precision: str, min_weight: float) -> Path:
    return changed_copy(setup["config"], region, folder,
                        lambda s: s["prediction"].update(precision=precision,
                                                         min_weight=min_weight))


@pytest.mark.parametrize(("precision", "min_weight"),
                         [("bfloat16", 0.0), ("float32", 0.05), ("bfloat16", 0.05)])
def test_every_mode_keeps_tiling_invariance_and_reruns(
    setup: dict, nsp64: dict[str, Path], precision: str, min_weight: float, tmp_path: Path
) -> None:
    """bfloat16 and skipped negligible weights: 64 px and 128 px tiles still give one mosaic bit
    for bit, a rerun is byte-identical, the products record the mode, and
    the maps stay close to the exact path (a skipped weight moves a cell by less than its share)."""
    outs, queries = {}, {}
    for region in ("tiny64", "tiny128"):
        config = mode_config(setup, region, tmp_path / region, precision, min_weight)
        outs[region], queries[region] = {}, 0
        for tile in region_of(setup, region).tiles():
            out = tmp_path / region / f"{tile}.tif"
            stats = predict_tile(load_region(load_config(config), region), "nsp", tile,
                                 setup["models"]["nsp"], context(setup, region, tile), out,
                                 options=quiet(8))
            outs[region][tile], queries[region] = out, queries[region] + stats.queries
    a, _ = assemble(outs["tiny64"])
    b, _ = assemble(outs["tiny128"])
    np.testing.assert_array_equal(a, b)
    exact, _ = assemble(nsp64)
    assert np.array_equal(np.isnan(a), np.isnan(exact))
    diff = np.nanmax(np.abs(a - exact))
    # at most 8 crops are skipped at a cell (support 24, stride 12: up to 3 per axis), each with
    # less than min_weight of the cell's weight; bfloat16 adds its rounding (8 bits of mantissa)
    assert diff < 8 * min_weight + (0.02 if precision == "bfloat16" else 1e-6), diff
    assert diff > 0, "the mode changes the computation (a meaningful test)"
    tile = first_tile(setup, "tiny64")
    with rasterio.open(outs["tiny64"][tile]) as ds:
        assert ds.tags()["MAPPER_PRECISION"] == precision
        assert float(ds.tags()["MAPPER_MIN_WEIGHT"]) == min_weight
    again = tmp_path / "again.tif"
    config = mode_config(setup, "tiny64", tmp_path / "tiny64", precision, min_weight)
    stats = predict_tile(load_region(load_config(config), "tiny64"), "nsp", tile,
                         setup["models"]["nsp"], context(setup, "tiny64", tile)[::-1], again,
                         options=quiet(8))
    assert again.read_bytes() == outs["tiny64"][tile].read_bytes()
    if min_weight:  # fewer decodes: crops' far corners are skipped
        full = predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"],
                            context(setup, "tiny64", tile), tmp_path / "full.tif",
                            options=quiet(8))
        assert stats.queries < 0.9 * full.queries, (stats.queries, full.queries)


def test_a_min_weight_that_skips_every_crop_is_refused_when_the_config_is_read(
    setup: dict, tmp_path: Path
) -> None:
    """Where crops overlap most, no crop weighs more than about a third of a cell here: a
    min_weight above that leaves cells without a crop, which the crop lattice alone tells, so
    reading the config (a dry run) names the file, the key and the largest workable value."""
    config = mode_config(setup, "tiny64", tmp_path / "cfg", "float32", 0.9)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'cfg' / 'tiny64.yaml'}: prediction.min_weight 0.9 "
                              "skips every crop at some cells")
    lowest = float(re.search(r"give a min_weight of at most ([0-9.]+)", message).group(1))
    assert 0.02 < lowest < 0.9
    load_config(mode_config(setup, "tiny64", tmp_path / "ok", "float32", lowest))
    with pytest.raises(ConfigError, match="skips every crop"):
        load_config(mode_config(setup, "tiny64", tmp_path / "no", "float32", lowest * 1.01))


def test_empty_tile_is_nodata_without_the_model(setup: dict, tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = first_tile(setup, "tiny64")
    empty = tmp_path / f"{tile}.tif"
    write_geotiff(empty, np.full((19, 64, 64), np.nan, np.float32), lattice.tile_transform(tile),
                  "EPSG:3338", nodata=np.nan, descriptions=STACK_BANDS,
                  tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "true", "MAPPER_SYNTHETIC": "true"})
    out = tmp_path / "out.tif"
    # an empty tile builds no model, but refuses the checkpoints the model's tiles refuse: its
    # nodata would otherwise record a junk file or another task's model as the one used
    not_a_model = tmp_path / "garbage.pt"
    not_a_model.write_bytes(b"loading this would fail")
    region = region_of(setup, "tiny64")
    for bad, says in ((not_a_model, "unreadable checkpoint"),
                      (setup["models"]["nsp"], "checkpoint is for task 'nsp'")):
        with pytest.raises(CheckpointError, match=says):
            predict_tile(region, "soilorder", tile, bad, [empty], out, options=quiet())
        assert not out.exists()
    with caplog.at_level(logging.INFO, logger="mapper.predict"):
        predict_tile(region, "soilorder", tile, setup["models"]["soilorder"], [empty], out,
                     options=quiet())
    with rasterio.open(out) as ds:
        assert ds.count == 7 and np.isnan(ds.read()).all() and ds.tags()["MAPPER_EMPTY"] == "true"
    # its job logs the cost line every predict job logs, which the resolution report reads
    log = tmp_path / "predict.log"
    log.write_text(caplog.text)
    assert logged_costs([log]) == [{"tile": tile, "crops": 0, "queries": 0,
                                    "seconds": pytest.approx(0.0, abs=0.1)}]


@pytest.mark.parametrize("stack_synthetic", [True, False])
def test_a_tile_is_synthetic_when_a_stack_it_reads_is(setup: dict, tmp_path: Path,
                                                      stack_synthetic: bool) -> None:
    """A region that is not synthetic but is given a synthetic file (the demo's DEM): its stacks
    say so (mapper.stack), and so must the tiles predicted from them, which the products read."""
    import dataclasses

    lattice, _ = setup["stacks"]["tiny64"]
    tile = first_tile(setup, "tiny64")
    stack = tmp_path / f"{tile}.tif"
    write_geotiff(stack, np.full((19, 64, 64), np.nan, np.float32), lattice.tile_transform(tile),
                  "EPSG:3338", nodata=np.nan, descriptions=STACK_BANDS,
                  tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "true",
                        "MAPPER_SYNTHETIC": str(stack_synthetic).lower()})
    region = region_of(setup, "tiny64")
    real = dataclasses.replace(region, settings={**region.settings, "synthetic": False})
    out = tmp_path / "out.tif"
    predict_tile(real, "nsp", tile, setup["models"]["nsp"], [stack], out, options=quiet())
    with rasterio.open(out) as ds:
        assert ds.tags()["MAPPER_SYNTHETIC"] == str(stack_synthetic).lower()


def test_a_checkpoint_of_other_bands_is_refused_by_name(setup: dict, tmp_path: Path) -> None:
    """A checkpoint whose input bands are not the stack's as its model takes them (a stack of
    another band order, when it was trained): one error naming it, and no map."""
    def change(payload: dict) -> None:
        payload["bands"] = [*payload["bands"][1:], payload["bands"][0]]

    assert_altered_checkpoint_refused(setup, tmp_path, change,
                                      r": trained on bands \['s2_green'.*, not the stack's as "
                                      r"its model takes them, \['s2_red'.*; retrain")


def assert_altered_checkpoint_refused(setup: dict, tmp_path: Path, change, says: str) -> None:
    """The nsp checkpoint after ``change(payload)``: its tile is refused with one error naming
    the file and saying ``says`` (a pattern), and no map is written."""
    payload = torch.load(setup["models"]["nsp"], map_location="cpu", weights_only=True)
    change(payload)
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    tile = first_tile(setup, "tiny64")
    out = tmp_path / "x.tif"
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(other))}{says}"):
        predict_tile(region_of(setup, "tiny64"), "nsp", tile, other,
                     context(setup, "tiny64", tile), out, options=quiet())
    assert not out.exists()


def test_a_checkpoint_whose_normalisation_encodes_another_aspect_is_refused(
    setup: dict, tmp_path: Path
) -> None:
    """Normalisation and model must take the aspect the same way (training makes them so): a
    checkpoint put together otherwise is refused by name before any tile is read, not at the
    first batch as a stack problem."""
    def change(payload: dict) -> None:
        other_aspect = {"number": "components", "components": "number"}
        normalisation = payload["normalisation"]
        normalisation["aspect"] = other_aspect[normalisation.get("aspect", "number")]

    assert_altered_checkpoint_refused(setup, tmp_path, change,
                                      r": its normalisation encodes the aspect as .* but its "
                                      r"model takes it as .*; retrain$")


def test_a_min_weight_that_skips_every_crop_fails_before_any_crop_runs(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The predict job checks min_weight too (settings given past the config's check), before
    running the model (statewide, before a GPU hour per tile), naming the setting."""
    from mapper.predictor import TilePredictor

    region = region_of(setup, "tiny64")
    region.settings["prediction"]["min_weight"] = 0.9  # past the config's check: a backstop
    tile = first_tile(setup, "tiny64")

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a crop ran")

    monkeypatch.setattr(TilePredictor, "_run", never)
    out = tmp_path / "x.tif"
    with pytest.raises(InputError, match=rf"tile {tile}: prediction.min_weight 0.9 skips every "
                                         r"crop at some cells \(no crop weighs more than 0\.\d+"):
        predict_tile(region, "nsp", tile, setup["models"]["nsp"], context(setup, "tiny64", tile),
                     out, options=quiet())
    assert not out.exists()


CUDA_OOM = "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 39.4 GiB total)"
CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
           "memory: you tried to allocate 100000000000000 bytes. Error code 12 (Cannot allocate "
           "memory)")  # torch's own, as torch.empty(10**14, dtype=torch.uint8) raises it


@pytest.mark.parametrize(("error", "reason"), [
    (torch.OutOfMemoryError(CUDA_OOM), "CUDA out of memory"),
    (MemoryError(CUDA_OOM), "CUDA out of memory"),
    # on the CPU torch reports host memory exhausted as a RuntimeError
    (RuntimeError(CPU_OOM), "can't allocate memory: you tried to allocate 100000000000000 bytes"),
    # cuBLAS and cuDNN out of GPU memory for a handle or workspace: a plain RuntimeError
    (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
     "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"),
    (RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
     "cuDNN error: CUDNN_STATUS_ALLOC_FAILED"),
    (RuntimeError("shape mismatch"), None),  # any other RuntimeError is no memory error
])
def test_out_of_memory_is_one_error_naming_the_batch_size(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException,
    reason: str | None
) -> None:
    """A predict job out of GPU (or host) memory says which knob to turn, the batch size, in
    the CLI's and the workflow's words, and leaves no tile."""
    from mapper.predictor import TilePredictor

    def exhausted(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(TilePredictor, "predict", exhausted)
    tile = first_tile(setup, "tiny64")
    out = tmp_path / "x.tif"
    with pytest.raises(InputError if reason else RuntimeError) as err:
        predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"],
                     context(setup, "tiny64", tile), out, options=quiet(3))
    if reason:
        assert str(err.value) == (  # on the CPU more host memory helps too
            f"tile {tile}: out of memory on cpu with batch size 3 ({reason}); lower the batch "
            "size: --batch-size N, in the workflow the batch_size resource of rules predict, "
            "predict_member and predict_at_res (predict:batch_size=N), or give the job more "
            "memory (predict:mem_mb=N), in the set-resources of a copy of the profile "
            "(--set-resources on the command line replaces the profile's whole set-resources); "
            "the map does not depend on the batch size beyond the last bit of a float")
    else:
        assert err.value is error
    assert not out.exists()


def test_the_model_runs_in_ieee_float32(setup: dict, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile's crops run with cuDNN's TF32 convolutions off (on by default: on a GPU the float32
    map would differ from the CPU's by far more than the last bit), and the flag is back after."""
    from mapper.predictor import TilePredictor

    seen = []
    real_run = TilePredictor._run

    def spy(self: TilePredictor, *args: object, **kwargs: object) -> None:
        seen.append((torch.backends.cudnn.conv.fp32_precision,
                     torch.backends.cuda.matmul.fp32_precision))
        real_run(self, *args, **kwargs)

    monkeypatch.setattr(TilePredictor, "_run", spy)
    tile = first_tile(setup, "tiny64")
    before = torch.backends.cudnn.conv.fp32_precision
    predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"],
                 context(setup, "tiny64", tile), tmp_path / "x.tif", options=quiet())
    assert seen == [("ieee", "ieee")]
    assert torch.backends.cudnn.conv.fp32_precision == before == "tf32"
    assert (tmp_path / "x.tif").exists()


def test_missing_region_neighbour_is_an_error(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = first_tile(setup, "tiny64")
    with pytest.raises(InputError, match="but their stacks were not given"):
        predict_tile(region_of(setup, "tiny64"), "nsp", tile, setup["models"]["nsp"],
                     [stacks[tile]], tmp_path / "x.tif", options=quiet())
    assert not (tmp_path / "x.tif").exists()


def test_cli_and_bad_out_res(setup: dict, tmp_path: Path) -> None:
    lattice, stacks = setup["stacks"]["tiny64"]
    tile = first_tile(setup, "tiny64")
    out = tmp_path / "cli.tif"
    args = ["predict", "--config", str(setup["config"]), "--region", "tiny64", "--task", "nsp",
            "--tile", tile, "--model", str(setup["models"]["nsp"]), "--batch-size", "4",
            "--out", str(out), "--no-progress", *[str(p) for p in stacks.values()]]
    assert main(args) == 0 and out.exists()
    bad = changed_copy(setup["config"], "tiny64", tmp_path / "bad",
                       lambda s: s["prediction"].update(out_res=15.0))
    with pytest.raises(ConfigError, match="out_res 15 m is not a whole multiple"):
        predict_tile(load_region(load_config(bad), "tiny64"), "nsp", tile,
                     setup["models"]["nsp"], list(stacks.values()), tmp_path / "y.tif",
                     options=quiet())


def test_polygon_region_is_the_square_map_clipped(setup: dict, nsp64: dict[str, Path],
                                                  tmp_path: Path) -> None:
    """An irregular polygon given in EPSG:4326, buffered by 50 m, inside the square region: its
    map is the square's map where a cell's centre lies in the buffered polygon (tested here with
    shapely on the centres, not with mapper.grid) and nodata elsewhere; cells outside are never
    decoded. Its edge cells equal the square's interior cells: their crops read the same stacks."""
    import shapely
    from tiny_region import lonlat_boundary, pentagon

    from mapper.config import read_boundary

    span = 1280.0
    corners = pentagon((LEFT + span / 2, TOP - span / 2), 560.0)
    region_file = write_region_file(
        tmp_path, "poly", None, 64, geojson=lonlat_boundary(corners), buffer_m=50.0,
        model={"size": "demo"}, prediction={**PREDICTION, "out_res": 10.0},
        training={"crop_px": 32},
    )  # fmt: skip
    config = write_config(tmp_path / "config.yaml", {"poly": region_file})
    region = load_region(load_config(config), "poly")
    _, stacks = setup["stacks"]["tiny64"]
    assert set(region.stacked_tiles()) <= set(stacks)
    outs, decoded, queries = {}, 0, 0
    for tile in region.tiles():
        out = tmp_path / "poly" / f"{tile}.tif"
        stats = predict_tile(region, "nsp", tile, setup["models"]["nsp"],
                             [stacks[t] for t in region.tile_context(tile)], out,
                             options=quiet(8))
        outs[tile], decoded, queries = out, decoded + stats.valid_cells, queries + stats.queries
    poly, (left, bottom, right, top) = assemble(outs)
    square, square_bounds = assemble(nsp64)
    # the polygon's tiles are square tiles: cut the square's map to them
    r0, c0 = round((square_bounds[3] - top) / 10.0), round((left - square_bounds[0]) / 10.0)
    square = square[:, r0:r0 + poly.shape[1], c0:c0 + poly.shape[2]]
    yy, xx = np.mgrid[0:poly.shape[1], 0:poly.shape[2]]
    area = shapely.buffer(read_boundary(region_file.with_suffix(".geojson")), 50.0, quad_segs=8)
    inside = shapely.contains_xy(area, left + (xx + 0.5) * 10.0, top - (yy + 0.5) * 10.0)
    hole = np.isnan(square[0])
    assert inside.sum() > 1000 and (~inside).sum() > 1000
    assert np.isnan(poly[0][~inside]).all()
    bad = np.isnan(poly[0]) != hole
    assert not (bad & inside).any(), (np.argwhere(bad & inside)[:5], (bad & inside).sum())
    np.testing.assert_allclose(poly[0][inside & ~hole], square[0][inside & ~hole], atol=1e-6)
    assert decoded == int((inside & ~hole).sum())  # only mapped valid cells are decoded
    # the decoder's queries: one per crop and mapped cell of its support (counted here from the
    # crop lattice written out), none for a cell outside
    assert queries == support_queries(inside & ~hole, left, top)
    assert queries < support_queries(np.ones_like(inside), left, top) / 2  # the tiles': 66,300
