"""scripts/map_vs_truth.py on tiny maps and truth: its lines, the NSP map's ECE, the figure."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from mapper.products.cog import PERCENT_NODATA
from mapper.products.mosaic import to_percent

ROOT = Path(__file__).resolve().parents[1]
SCALE = 0.01
"""The NSP product's band scale: UInt8 percent 0..100 (:func:`mapper.products.mosaic.to_percent`),
probability = value x 0.01, 255 nodata (mapper states the scale in place, no constant)."""


def _write(path: Path, data: np.ndarray, nodata: float, scale: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype,
        "crs": "EPSG:3338",
        "nodata": nodata,
        "transform": Affine(10.0, 0.0, 100_000.0, 0.0, -10.0, 1_500_000.0),
    }
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data, 1)
        ds.scales = (scale,)


def _world(root: Path, offset: float) -> np.ndarray:
    """Truth probability in [0.05, 0.85] (west to east) and an NSP map ``offset`` above it."""
    rng = np.random.default_rng(0)
    truth = np.tile(np.linspace(0.05, 0.85, 80), (60, 1)).astype(np.float32)
    _write(root / "resources/demo/truth/nsp.tif", truth, float("nan"))
    mapped = to_percent(truth + offset)  # as the mosaic stores it
    assert mapped.max() <= 100
    mapped[:5, :5] = PERCENT_NODATA  # nodata corner
    _write(root / "maps/nsp_demo.tif", mapped, PERCENT_NODATA, SCALE)
    classes = rng.integers(0, 7, truth.shape).astype(np.uint8)
    _write(root / "resources/demo/truth/soilorder.tif", classes, 255)
    _write(root / "maps/soilorder_demo.tif", classes, 255)
    return truth


@pytest.mark.parametrize("offset", [0.0, 0.1])
def test_map_vs_truth_prints_ece_and_writes_figure(tmp_path: Path, offset: float) -> None:
    _world(tmp_path, offset)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/map_vs_truth.py"),
            "--figure",
            "rel.png",
            "--json",
            "fig.json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = run.stdout.splitlines()
    # the lines quoted in the README keep their place and form; ECE comes last
    assert lines[0].startswith("NSP map vs truth (4,775 of 4,800 pixels valid): AUC ")
    assert lines[1].startswith("soil order map vs truth (4,800 pixels): accuracy 1.000")
    # the map's offset, to within the stored percent's rounding (half a percent)
    ece = re.fullmatch(r"NSP map calibration vs truth probability: ECE (\d\.\d{3}) "
                       r"\(10 equal-width bins\)", lines[-1])
    assert ece and float(ece[1]) == pytest.approx(offset, abs=SCALE / 2), lines[-1]
    figures = json.loads((tmp_path / "fig.json").read_text())  # strict: empty bins are null
    assert figures["nsp"]["ece"] == pytest.approx(offset, abs=SCALE / 2 + 1e-6)
    # an empty bin: no map value in [0.9, 1] at offset 0, none in [0, 0.1) at offset 0.1
    assert None in figures["nsp"]["reliability"]["mean_pred"]
    assert (tmp_path / "rel.png").read_bytes()[:4] == b"\x89PNG"


def test_map_vs_truth_replaces_its_json_whole(tmp_path: Path) -> None:
    """Written under a temporary name and renamed: a file hard-linked to the old figures keeps its
    bytes (a write in place would change both), and no temporary file is left beside it."""
    _world(tmp_path, 0.0)
    (tmp_path / "old.json").write_text("{}\n")
    os.link(tmp_path / "old.json", tmp_path / "fig.json")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "scripts/map_vs_truth.py"), "--json", "fig.json"],
                   cwd=tmp_path, env=env, capture_output=True, text=True, check=True)  # fmt: skip
    assert (tmp_path / "old.json").read_text() == "{}\n"
    assert set(json.loads((tmp_path / "fig.json").read_text())) == {"nsp", "soilorder"}
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["fig.json", "old.json"]


def test_a_coarser_map_is_compared_with_the_truth_aggregated_to_its_cells(tmp_path: Path) -> None:
    """A 20 m map (prediction.out_res 20) against the 10 m truth: the mean truth probability and
    the majority class of each map cell's 4 truth cells, said on a line of its own; a map off
    the truth's grid is one error."""
    truth = _world(tmp_path, 0.0)
    coarse = truth.reshape(30, 2, 40, 2).mean(axis=(1, 3))
    truth[-2:, -2:] = np.nan  # a map cell whose truth cells have no data: left out
    truth[-4, -4] = np.nan  # one of 4 without: the mean of the other 3
    coarse[-2, -2] = np.mean([truth[-4, -3], truth[-3, -4], truth[-3, -3]])
    _write(tmp_path / "resources/demo/truth/nsp.tif", truth, float("nan"))
    profile = {"driver": "GTiff", "height": 30, "width": 40, "count": 1, "dtype": "uint8",
               "crs": "EPSG:3338", "nodata": PERCENT_NODATA,
               "transform": Affine(20.0, 0.0, 100_000.0, 0.0, -20.0, 1_500_000.0)}
    with rasterio.open(tmp_path / "maps/nsp_demo.tif", "w", **profile) as ds:
        ds.write(to_percent(coarse + 0.1), 1)
        ds.scales = (SCALE,)
    classes = np.repeat(np.repeat(np.arange(1200).reshape(30, 40) % 7, 2, 0), 2, 1)
    # one truth cell of 4 differs, the one a nearest-neighbour read of 2 x 2 cells would take
    classes[1::2, 1::2] = (classes[1::2, 1::2] + 1) % 7
    classes[:2, :2] = 255  # a map cell whose truth cells have no class: left out
    _write(tmp_path / "resources/demo/truth/soilorder.tif", classes.astype(np.uint8), 255)
    with rasterio.open(tmp_path / "maps/soilorder_demo.tif", "w", **profile) as ds:
        ds.write((np.arange(1200).reshape(30, 40) % 7).astype(np.uint8), 1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = [sys.executable, str(ROOT / "scripts/map_vs_truth.py"), "--json", "fig.json"]
    run = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True)
    lines = run.stdout.splitlines()
    assert lines[0].startswith("NSP map vs truth (1,199 of 1,200 pixels valid): AUC ")
    assert lines[1].startswith("soil order map vs truth (1,199 pixels): accuracy 1.000")
    assert lines[-2] == ("(maps coarser than the truth: each map pixel against the mean truth "
                         "probability of its 4 truth cells, and their most frequent class)")
    figures = json.loads((tmp_path / "fig.json").read_text())
    assert figures["nsp"]["ece"] == pytest.approx(0.1, abs=SCALE / 2 + 1e-6)
    assert figures["nsp"]["mean_abs_diff"] == pytest.approx(0.1, abs=SCALE / 2 + 1e-6)
    # off the grid: a 20 m map shifted by 5 m
    profile["transform"] = Affine(20.0, 0.0, 100_005.0, 0.0, -20.0, 1_500_000.0)
    with rasterio.open(tmp_path / "maps/nsp_demo.tif", "w", **profile) as ds:
        ds.write(np.zeros((30, 40), np.uint8), 1)
    run = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip() == (
        "error: maps/nsp_demo.tif: not on the grid of resources/demo/truth/nsp.tif (nor on whole "
        "multiples of its 10 m cells); give the map of this region's lattice")
