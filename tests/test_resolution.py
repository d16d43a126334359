"""Resolution consistency: aggregation and agreement on arrays with known answers, coarse tiles
against 10 m tiles through the report, and the predict logs' seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from mapper.blending import CropLattice
from mapper.config import load_config, load_region
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.raster import write_geotiff
from mapper.resolution import (
    agreement,
    block_mean,
    logged_costs,
    resolution_figures,
    summarise,
    write_resolution_report,
)

ORIGIN = (-2_600_000.0, 2_600_000.0)
TILE = 64


def test_block_mean_ignores_nodata_and_keeps_empty_blocks_nodata() -> None:
    fine = np.array([[0.0, 1.0, 0.5, np.nan],
                     [1.0, 0.0, np.nan, np.nan],
                     [0.2, 0.2, 0.9, 0.9],
                     [0.2, 0.6, 0.9, 0.9]])[None]
    coarse = block_mean(fine, 2)[0]
    assert coarse[0, 0] == pytest.approx(0.5) and coarse[0, 1] == pytest.approx(0.5)
    assert coarse[1, 0] == pytest.approx(0.3) and coarse[1, 1] == pytest.approx(0.9)
    assert np.isnan(block_mean(np.full((1, 2, 2), np.nan), 2)).all()


def test_binary_agreement_known_answer() -> None:
    coarse = np.array([[[0.6, 0.4], [0.9, np.nan]]])
    aggregated = np.array([[[0.7, 0.6], [0.8, 0.1]]])
    figures = summarise(agreement(coarse, aggregated, binary=True))
    assert figures["cells"] == 3  # the nodata cell is left out
    assert figures["class_agreement"] == pytest.approx(2 / 3)
    assert figures["mean_abs_diff"] == pytest.approx((0.1 + 0.2 + 0.1) / 3)


def test_multiclass_agreement_known_answer() -> None:
    coarse = np.array([[0.7, 0.2], [0.2, 0.7], [0.1, 0.1]])[:, None, :]  # classes 0, 1
    aggregated = np.array([[0.5, 0.5], [0.3, 0.1], [0.2, 0.4]])[:, None, :]  # classes 0, 0
    figures = summarise(agreement(coarse, aggregated, binary=False))
    assert figures == {"cells": 2, "class_agreement": 0.5}


def write_tiles(root: Path, task: str, res: float, values: np.ndarray) -> list[Path]:
    """Two 64 px tiles side by side of ``values`` [bands, h, 2h] at ``res``, tagged as predict
    tags them."""
    lattice = Lattice(*ORIGIN, 10.0, TILE)
    size = values.shape[1]
    paths = []
    for k, tile in enumerate(["R0100C0100", "R0100C0101"]):
        path = root / f"predict_{res:g}m" / task / f"{tile}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        left, _, _, top = lattice.tile_bounds(tile)
        write_geotiff(path, values[:, :, k * size:(k + 1) * size].astype(np.float32),
                      Affine(res, 0, left, 0, -res, top), "EPSG:3338", nodata=np.nan,
                      tags={"MAPPER_TASK": task, "MAPPER_OUT_RES": f"{res:g}"})
        paths.append(path)
    return paths


def write_log(path: Path, tile: str, queries: int, seconds: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "predict R: 100%|##########| 9/9 [00:01<00:00]\n"
        f"2026-01-01 00:00:00,000 INFO mapper.predict: {tile}: 9 crops (0 skipped), {queries} "
        f"queries, {seconds:.1f} s (decode 1.0); 4096 of 4096 cells valid\n"
        f"results/x/{tile}.tif: 9 crops, 4096/4096 valid cells, {seconds:.1f} s (1 cells/s)\n")
    return path


def test_report_compares_coarse_tiles_with_the_aggregated_10m_tiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fine = rng.uniform(0, 1, (1, 64, 128))
    coarse = block_mean(fine, 2)  # a perfectly consistent 20 m map ...
    flipped = np.zeros(coarse.shape, dtype=bool)
    flipped[0, :8, :] = True  # ... but for 8 of its 32 rows, given the other class
    coarse = np.where(flipped, 1.0 - coarse, coarse)
    tiles = write_tiles(tmp_path, "nsp", 10.0, fine) + write_tiles(tmp_path, "nsp", 20.0, coarse)
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 4096 if i < 2 else 1024,
                      10.0 if i < 2 else 3.0) for i, p in enumerate(tiles)]
    figures = resolution_figures(tiles, logs, tmp_path)
    at20 = figures["tasks"]["nsp"]["20"]
    expected_same = ((coarse[0] > 0.5) == (block_mean(fine, 2)[0] > 0.5)).mean()
    assert at20["cells"] == 32 * 64
    assert at20["class_agreement"] == pytest.approx(expected_same)
    assert 0.70 < at20["class_agreement"] <= 0.80  # the flipped quarter (less its 0.5s) disagrees
    assert at20["mean_abs_diff"] == pytest.approx(
        np.abs(coarse - block_mean(fine, 2)).mean())
    assert at20["seconds"] == 6.0 and at20["queries"] == 2048 and at20["jobs"] == 2
    assert figures["tasks"]["nsp"]["10"] == {"crops": 18, "queries": 8192, "seconds": 20.0,
                                             "jobs": 2}


def test_50m_cells_straddling_the_tiles_are_compared_where_wholly_on_the_10m_map(
        tmp_path: Path) -> None:
    """Two 64 px tiles at 10 m and at 50 m as predict writes them (a tile holds the 50 m cells
    whose centre lies in it: 13 columns each, reaching 2 px past the 10 m tiles): the cells
    wholly on the 10 m map, 12 rows by 25 columns, are compared, and no other."""
    lattice = Lattice(*ORIGIN, 10.0, TILE)
    fine = np.random.default_rng(2).uniform(0, 1, (1, 64, 128))
    tiles = write_tiles(tmp_path, "nsp", 10.0, fine)
    coarse = np.ones((1, 13, 26))  # cells off the 10 m map: 1, far from most block means
    coarse[:, :12, :25] = block_mean(fine[:, :60, :125], 5)
    cells = CropLattice(32, 16, factor=5)
    first = cells.out_window(lattice.tile_window("R0100C0100"))
    for tile in ["R0100C0100", "R0100C0101"]:
        ow = cells.out_window(lattice.tile_window(tile))
        assert (ow.width, ow.height) == (13, 13)
        path = tmp_path / "predict_50m" / "nsp" / f"{tile}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        c = int(ow.col_off - first.col_off)
        write_geotiff(path, coarse[:, :, c:c + 13].astype(np.float32),
                      Affine(50.0, 0, ORIGIN[0] + ow.col_off * 50.0, 0, -50.0,
                             ORIGIN[1] - ow.row_off * 50.0),
                      "EPSG:3338", nodata=np.nan,
                      tags={"MAPPER_TASK": "nsp", "MAPPER_OUT_RES": "50"})
        tiles.append(path)
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 100, 1.0)
            for i, p in enumerate(tiles)]
    at50 = resolution_figures(tiles, logs, tmp_path)["tasks"]["nsp"]["50"]
    assert at50["cells"] == 12 * 25
    assert at50["class_agreement"] == 1.0 and at50["mean_abs_diff"] < 1e-6


def test_report_files(tmp_path: Path) -> None:
    from tiny_region import write_tiny_region

    config = write_tiny_region(tmp_path, (0, 1_000_000, 1280, 1_001_280), TILE)
    region = load_region(load_config(config), "tiny")
    fine = np.random.default_rng(1).dirichlet(np.ones(7), size=(64, 128)).transpose(2, 0, 1)
    tiles = (write_tiles(tmp_path, "soilorder", 10.0, fine)
             + write_tiles(tmp_path, "soilorder", 40.0, block_mean(fine, 4)))
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 100, 1.0 if i < 2 else 0.5)
            for i, p in enumerate(tiles)]
    md, js = write_resolution_report(region, tiles, logs, tmp_path / "reports" / "resolution.md")
    figures = json.loads(js.read_text())
    assert figures["tasks"]["soilorder"]["40"]["class_agreement"] == 1.0
    table = md.read_text()
    assert ("| out_res | NSP class agreement | NSP mean abs. prob. difference | soil order "
            "agreement | cells | predict seconds (NSP + soil order) | queries | time vs 10 m |"
            ) in table
    assert "| 10 m | n/a | n/a | (reference) |  | 2.0 | 200 | 1.00 |" in table
    assert "| 40 m | n/a | n/a | 100.0 % | 512 | 1.0 | 200 | 0.50 |" in table
    assert not list((tmp_path / "reports").glob(".*")), "no temporary files left behind"


def test_the_report_has_a_column_per_task_of_the_registry(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The columns come from mapper.tasks (as README "Adding a task" says): with soil order the
    only task, the table has its agreement and no NSP column."""
    from tiny_region import write_tiny_region

    import mapper.resolution
    from mapper.tasks import TASKS

    monkeypatch.setattr(mapper.resolution, "TASKS", {"soilorder": TASKS["soilorder"]})
    config = write_tiny_region(tmp_path, (0, 1_000_000, 1280, 1_001_280), TILE)
    region = load_region(load_config(config), "tiny")
    fine = np.random.default_rng(1).dirichlet(np.ones(7), size=(64, 128)).transpose(2, 0, 1)
    tiles = (write_tiles(tmp_path, "soilorder", 10.0, fine)
             + write_tiles(tmp_path, "soilorder", 40.0, block_mean(fine, 4)))
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 100, 1.0) for i, p in
            enumerate(tiles)]
    md, _ = write_resolution_report(region, tiles, logs, tmp_path / "reports" / "resolution.md")
    lines = md.read_text().splitlines()
    head = lines.index("| out_res | soil order agreement | cells | predict seconds (soil order) | "
                       "queries | time vs 10 m |")
    assert lines[head + 1] == "| --- | --- | --- | --- | --- | --- |"
    assert lines[head + 3] == "| 40 m | 100.0 % | 512 | 2.0 | 200 | 1.00 |"


@pytest.mark.parametrize("tiles_synthetic", [True, False])
def test_the_report_of_synthetic_tiles_says_so_though_the_region_does_not(
        tmp_path: Path, tiles_synthetic: bool) -> None:
    """Tiles predicted from a synthetic file (the demo's, given to a real region) make a
    synthetic report, as they make synthetic products; the reference named is the map's."""
    import dataclasses

    from tiny_region import write_tiny_region

    config = write_tiny_region(tmp_path, (0, 1_000_000, 1280, 1_001_280), TILE)
    region = load_region(load_config(config), "tiny")
    real = dataclasses.replace(region, settings={**region.settings, "synthetic": False})
    fine = np.random.default_rng(1).uniform(0, 1, (1, 64, 128))
    tiles = write_tiles(tmp_path, "nsp", 10.0, fine)
    tiles += write_tiles(tmp_path, "nsp", 20.0, block_mean(fine, 2))
    for path in tiles[:1]:
        with rasterio.open(path, "r+") as ds:
            ds.update_tags(MAPPER_SYNTHETIC=str(tiles_synthetic).lower())
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 100, 1.0)
            for i, p in enumerate(tiles)]
    md, js = write_resolution_report(real, tiles, logs, tmp_path / "reports" / "resolution.md")
    assert json.loads(js.read_text())["synthetic"] is tiles_synthetic
    assert ("SYNTHETIC" in md.read_text()) is tiles_synthetic
    assert "compared with the 10 m map aggregated" in md.read_text()


def test_coarse_tiles_off_the_lattice_are_named_by_a_tile_with_the_fix(tmp_path: Path) -> None:
    fine = write_tiles(tmp_path, "nsp", 10.0, np.full((1, 64, 128), 0.25))
    coarse = write_tiles(tmp_path, "nsp", 20.0, np.full((1, 32, 64), 0.25))
    for path in coarse:  # shifted by 5 m: not cells of the 10 m lattice
        with rasterio.open(path, "r+") as ds:
            ds.transform = ds.transform * Affine.translation(0.25, 0)
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 10, 1.0)
            for i, p in enumerate(fine + coarse)]
    with pytest.raises(InputError) as info:
        resolution_figures(fine + coarse, logs, tmp_path)
    assert str(info.value) == (
        f"{coarse[0]} (a nsp tile at 20 m): the coarse tiles are not cells of the reference "
        "tiles' lattice (same region and lattice, an out_res a multiple of the map's); delete "
        "that tile and run the same target again (its predict job makes it again)")


def test_logs_must_hold_the_predict_line(tmp_path: Path) -> None:
    good = write_log(tmp_path / "a.log", "R0001C0002", 5, 2.5)
    assert logged_costs([good]) == [{"tile": "R0001C0002", "crops": 9, "queries": 5,
                                     "seconds": 2.5}]
    with pytest.raises(InputError, match=r"missing.log: no such predict log; rerun"):
        logged_costs([tmp_path / "missing.log"])
    (tmp_path / "cut.log").write_text("predict R: 10%|#\n")
    with pytest.raises(InputError, match=r"cut.log: no '<tile>: N crops"):
        logged_costs([tmp_path / "cut.log"])


def test_a_tile_that_is_not_a_predicted_tile_is_named(tmp_path: Path) -> None:
    """A raster without predict's tags, or no raster at all, is one InputError naming it."""
    tiles = write_tiles(tmp_path, "nsp", 10.0, np.zeros((1, 64, 128)))
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 10, 1.0)
            for i, p in enumerate(tiles)]
    untagged = tmp_path / "other" / tiles[0].name
    untagged.parent.mkdir()
    write_geotiff(untagged, np.zeros((1, 64, 64), np.float32),
                  Affine(10.0, 0, 0, 0, -10.0, 0), "EPSG:3338")
    with pytest.raises(InputError, match=rf"{untagged}: no MAPPER_TASK tag: not a raster the "
                                         r"workflow's predict or mosaic made"):
        resolution_figures([untagged, tiles[1]], logs, tmp_path)
    tiles[0].write_bytes(b"not a raster")
    with pytest.raises(InputError, match=rf"{tiles[0]}: cannot be read as a raster"):
        resolution_figures(tiles, logs, tmp_path)


def test_a_tile_whose_blocks_fail_to_read_is_named(tmp_path: Path) -> None:
    """GDAL names a failed block's file by its base name, which the 10 m and coarse tiles
    share: the error lists both paths."""
    from damage import zero_blocks

    fine = write_tiles(tmp_path, "nsp", 10.0, np.full((1, 64, 128), 0.25))
    coarse = write_tiles(tmp_path, "nsp", 20.0, np.full((1, 32, 64), 0.25))
    logs = [write_log(tmp_path / "logs" / f"{i}.log", p.stem, 10, 1.0)
            for i, p in enumerate(fine + coarse)]
    zero_blocks(coarse[0], coarse[0])
    with pytest.raises(InputError) as info:
        resolution_figures(fine + coarse, logs, tmp_path)
    assert str(info.value).startswith(
        f"a predicted nsp tile, one of {fine[0]} and {coarse[0]}: damaged or truncated, read "
        f"failed ({coarse[0].name}, band 1: IReadBlock failed")


def test_the_cells_column_gives_each_tasks_count_where_they_differ() -> None:
    """Tasks that compared different cells (a task's tiles with more nodata) show each count, in
    the columns' order; the same count shows once."""
    from mapper.resolution import _markdown

    def figures(soil_cells: int) -> dict:
        entry = {"class_agreement": 1.0, "mean_abs_diff": 0.0, "seconds": 1.0, "queries": 10}
        return {"region": "x", "synthetic": False, "tasks": {
            "nsp": {"10": {"seconds": 2.0, "queries": 20}, "40": {**entry, "cells": 1200}},
            "soilorder": {"10": {"seconds": 2.0, "queries": 20},
                          "40": {**entry, "cells": soil_cells}}}}

    assert "| 40 m | 100.0 % | 0.0000 | 100.0 % | 1,200 / 900 | 2.0 | 20 | 0.50 |" in _markdown(
        figures(900))
    assert "| 40 m | 100.0 % | 0.0000 | 100.0 % | 1,200 | 2.0 | 20 | 0.50 |" in _markdown(
        figures(1200))
