"""Uncertainty measures on inputs with known answers, against scipy's entropy, and the error by
decile of uncertainty."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy

from mapper.uncertainty import (
    class_probabilities,
    disagreement,
    ensemble_spread,
    error_by_decile,
    most_probable,
    normalised_entropy,
    rank_correlation,
)


def test_binary_entropy_known_values() -> None:
    p = np.array([[0.0, 1.0, 0.5, 0.25, np.nan]])
    h = normalised_entropy(class_probabilities(p, binary=True))
    expected = [0.0, 0.0, 1.0, -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)]
    assert h[:4] == pytest.approx(expected, abs=1e-12)
    assert h[3] == pytest.approx(0.8112781244591328)
    assert np.isnan(h[4])


def test_seven_class_entropy_known_values_and_scipy() -> None:
    uniform = np.full((7, 1), 1 / 7)
    one_hot = np.eye(7)[:, :1]
    halves = np.array([0.5, 0.5, 0, 0, 0, 0, 0])[:, None]
    h = normalised_entropy(np.concatenate([uniform, one_hot, halves], axis=1))
    assert h == pytest.approx([1.0, 0.0, math.log(2) / math.log(7)], abs=1e-12)
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.full(7, 0.7), size=200).T  # [7, 200]
    assert normalised_entropy(p) == pytest.approx(entropy(p, base=7, axis=0), abs=1e-12)
    p[2, 5] = np.nan
    assert np.isnan(normalised_entropy(p)[5]) and np.isfinite(normalised_entropy(p)[4])


def test_ensemble_spread_and_disagreement() -> None:
    members = np.array([[0.2, 0.0, 0.3, np.nan], [0.4, 1.0, 0.3, 0.5]])
    spread = ensemble_spread(members)
    assert spread[:3] == pytest.approx([0.1, 0.5, 0.0])
    assert np.isnan(spread[3])
    with pytest.raises(ValueError, match="at least 2"):
        ensemble_spread(members[:1])
    map_class = np.array([2, 0, 4, -1])
    member_classes = np.array([[2, 1, 4, 3], [3, 1, 4, 3], [3, 1, 4, 3], [2, 0, 4, 3]])
    d = disagreement(map_class, member_classes)
    assert d[:3] == pytest.approx([0.5, 0.75, 0.0])
    assert np.isnan(d[3])
    p = np.array([[0.1, np.nan], [0.7, 0.2], [0.2, 0.8]])
    assert most_probable(p).tolist() == [1, -1]


def test_error_rises_by_decile_only_where_it_is_made_to() -> None:
    rng = np.random.default_rng(0)
    u = rng.permutation(1000) / 1000.0
    error = (u >= 0.9).astype(float)  # wrong exactly in the most uncertain tenth
    rows = error_by_decile(u, error)
    assert [r["pixels"] for r in rows] == [100] * 10
    assert [r["error"] for r in rows] == [0.0] * 9 + [1.0]
    assert rows[0]["uncertainty_min"] == 0.0 and rows[-1]["uncertainty_max"] == 0.999
    assert rank_correlation(error_by_decile(u, u)) == pytest.approx(1.0)
    assert math.isnan(rank_correlation(error_by_decile(u, np.zeros_like(u))))


def test_deciles_of_equal_error_share_their_rank() -> None:
    """Deciles inside one run of equal stored values take the run's mean error: a flat error
    then a rise is not a rise at every decile, and a flat error then a fall is a fall
    (scipy.stats.spearmanr, which averages tied ranks, gives the same)."""
    from scipy.stats import spearmanr

    def table(errors: list[float]) -> list[dict]:
        return [{"error": e} for e in errors]

    flat_then_rise = [0.217] * 8 + [0.2333, 0.5135]
    flat_then_fall = [0.2] * 9 + [0.1]
    for errors in (flat_then_rise, flat_then_fall):
        assert rank_correlation(table(errors)) == pytest.approx(spearmanr(range(10), errors)[0])
    assert rank_correlation(table(flat_then_rise)) == pytest.approx(0.701, abs=1e-3)
    assert rank_correlation(table(flat_then_fall)) < 0


def test_deciles_leave_out_nodata_and_keep_equal_counts_through_ties() -> None:
    u = np.array([0.5] * 95 + [np.nan] * 5)  # every stored value the same
    e = np.r_[np.zeros(50), np.ones(45), np.ones(5)]
    rows = error_by_decile(u, e)
    assert sum(r["pixels"] for r in rows) == 95
    assert max(r["pixels"] for r in rows) - min(r["pixels"] for r in rows) <= 1


def test_the_truth_is_aggregated_to_a_coarser_maps_cells(tmp_path) -> None:
    """A map at out_res 20 m is compared with the 10 m truth's cell means (NSP) or most frequent
    class (soil order); a pixel size that does not divide the map's is refused."""
    import rasterio
    from affine import Affine

    from mapper.errors import InputError
    from mapper.raster import write_geotiff
    from mapper.uncertainty_report import read_on_grid

    x0, y0 = 1000.0, 5000.0
    truth = np.array([[0.1, 0.3, 0.5, 0.5],
                      [0.5, 0.7, np.nan, 0.9],
                      [0.2, 0.2, 1.0, 0.0],
                      [0.2, 0.6, 0.0, 1.0]], dtype=np.float32)  # fmt: skip
    classes = np.array([[1, 1, 2, 3],
                        [1, 4, 3, 255],
                        [5, 5, 6, 6],
                        [0, 0, 255, 255]], dtype=np.uint8)  # fmt: skip
    crs = "EPSG:3338"
    write_geotiff(tmp_path / "nsp.tif", truth[None], Affine(10, 0, x0, 0, -10, y0), crs,
                  nodata=np.nan)
    write_geotiff(tmp_path / "soil.tif", classes[None], Affine(10, 0, x0, 0, -10, y0), crs,
                  nodata=255)
    write_geotiff(tmp_path / "map.tif", np.zeros((1, 2, 2), np.uint8),
                  Affine(20, 0, x0, 0, -20, y0), crs, nodata=255)
    write_geotiff(tmp_path / "odd.tif", np.zeros((1, 2, 2), np.uint8),
                  Affine(15, 0, x0, 0, -15, y0), crs, nodata=255)
    with rasterio.open(tmp_path / "map.tif") as like:
        np.testing.assert_allclose(read_on_grid(tmp_path / "nsp.tif", like),
                                   [[0.4, 1.9 / 3], [0.3, 0.5]], atol=1e-6)
        np.testing.assert_array_equal(read_on_grid(tmp_path / "soil.tif", like, classes=True),
                                      [[1, 3], [0, 6]])  # ties: the lowest class
    with rasterio.open(tmp_path / "odd.tif") as like, pytest.raises(InputError,
                                                                    match="divides the map's"):
        read_on_grid(tmp_path / "nsp.tif", like)


def test_inputs_out_of_order_are_refused_with_nothing_written(tmp_path) -> None:
    """Truth rasters or uncertainty products given in another order than the maps would be read
    as the wrong task's: one error naming the file, and no report."""
    from pathlib import Path

    from affine import Affine

    from mapper.config import load_config, load_region
    from mapper.errors import InputError
    from mapper.raster import write_geotiff
    from mapper.uncertainty_report import write_uncertainty_report

    region = load_region(load_config(Path(__file__).resolve().parent.parent / "config"
                                     / "config.yaml"), "demo")
    at = (Affine(10, 0, 1000.0, 0, -10, 5000.0), "EPSG:3338")
    rng = np.random.default_rng(0)
    write_geotiff(tmp_path / "nsp.tif", rng.integers(0, 101, (1, 20, 20)).astype(np.uint8), *at,
                  nodata=255, tags={"MAPPER_TASK": "nsp"})
    for task in ("nsp", "soilorder"):
        write_geotiff(tmp_path / f"{task}_uncertainty.tif",
                      rng.integers(0, 101, (1, 20, 20)).astype(np.uint8), *at, nodata=255,
                      descriptions=["entropy"], tags={"MAPPER_TASK": task})
    write_geotiff(tmp_path / "truth_nsp.tif", rng.random((1, 20, 20)).astype(np.float32), *at,
                  nodata=np.nan)
    write_geotiff(tmp_path / "truth_soilorder.tif",
                  rng.integers(0, 7, (1, 20, 20)).astype(np.uint8), *at, nodata=255)
    out = tmp_path / "report" / "uncertainty.md"
    out.parent.mkdir()
    m = [str(tmp_path / "nsp.tif")]
    with pytest.raises(InputError, match=r"truth_soilorder\.tif: a class index raster, not the "
                                         r"truth of nsp .*in the order of the maps"):
        write_uncertainty_report(region, m, [str(tmp_path / "nsp_uncertainty.tif")],
                                 [str(tmp_path / "truth_soilorder.tif")], out)
    with pytest.raises(InputError, match=r"soilorder_uncertainty\.tif: the uncertainty of "
                                         r"soilorder, not of nsp"):
        write_uncertainty_report(region, m, [str(tmp_path / "soilorder_uncertainty.tif")],
                                 [str(tmp_path / "truth_nsp.tif")], out)
    for maps, uncertainty in (([str(tmp_path / "absent.tif")], "nsp_uncertainty.tif"),
                              (m, "absent_uncertainty.tif")):  # a missing file: one error
        with pytest.raises(InputError, match=r"absent(_uncertainty)?\.tif: not found; check the "
                                             "path, or make the file first"):
            write_uncertainty_report(region, maps, [str(tmp_path / uncertainty)],
                                     [str(tmp_path / "truth_nsp.tif")], out)
    with pytest.raises(InputError, match=r"nsp\.tif: a second nsp map; give each task's map once"):
        write_uncertainty_report(region, m * 2, [str(tmp_path / "nsp_uncertainty.tif")] * 2,
                                 [str(tmp_path / "truth_nsp.tif")] * 2, out)
    stale = tmp_path / "stale_uncertainty.tif"  # of a model the map was since remade without
    write_geotiff(stale, rng.integers(0, 101, (1, 20, 20)).astype(np.uint8), *at, nodata=255,
                  descriptions=["entropy"], tags={"MAPPER_TASK": "nsp",
                                                  "MAPPER_MODEL_SHA256": "b" * 64})
    write_geotiff(tmp_path / "nsp.tif", rng.integers(0, 101, (1, 20, 20)).astype(np.uint8), *at,
                  nodata=255, tags={"MAPPER_TASK": "nsp", "MAPPER_MODEL_SHA256": "a" * 64})
    with pytest.raises(InputError, match=r"stale_uncertainty\.tif: made with model b{12}\.\.\., "
                                         r"but .*nsp\.tif with a{12}\.\.\.: one of them is "
                                         r"older"):
        write_uncertainty_report(region, m, [str(stale)], [str(tmp_path / "truth_nsp.tif")], out)
    assert list(out.parent.iterdir()) == []
    written = write_uncertainty_report(region, m, [str(tmp_path / "nsp_uncertainty.tif")],
                                       [str(tmp_path / "truth_nsp.tif")], out)
    assert all(p.is_file() for p in written)


def test_a_run_of_equal_values_cut_by_a_decile_edge_is_shared_at_its_mean_error() -> None:
    """Ten pixels, deciles of one: the three of value 0.2 (errors 1, 0, 0) straddle three
    deciles, each taking a third of an error; any order of the pixels gives the same table."""
    u = np.array([0.1, 0.2, 0.2, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    e = np.array([0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    rows = error_by_decile(u, e)
    assert [r["error"] for r in rows] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1, 0, 0, 1, 1, 1])
    assert [r["uncertainty_mean"] for r in rows] == pytest.approx(np.sort(u))
    rng = np.random.default_rng(1)
    u = np.round(rng.beta(2, 5, 5000), 2)  # stored percent: long runs of equal values
    e = (rng.random(5000) < u).astype(float)
    table = error_by_decile(u, e)
    order = rng.permutation(5000)
    shuffled = error_by_decile(u[order], e[order])
    for key in table[0]:
        assert [r[key] for r in shuffled] == pytest.approx([r[key] for r in table], abs=1e-12)
    assert [r["pixels"] for r in table] == [500] * 10
    assert sum(r["error"] * r["pixels"] for r in table) == pytest.approx(e.sum())
