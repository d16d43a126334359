"""The folds file: drawn from the samples table's points with evaluation.folds and training.seed,
kept apart from it, and refused when drawn for other points, settings or region."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mapper.cli import main
from mapper.errors import InputError
from mapper.folds import FOLD_COLUMNS, build_folds, read_folds, samples_with_folds
from mapper.samples import SAMPLE_COLUMNS, read_samples, samples_metadata, write_samples
from mapper.splits import make_folds


@pytest.fixture
def tiny(training_region: dict, training_samples: dict) -> dict:
    """The training tests' region and its samples and folds files (tests/conftest.py)."""
    return {**training_region, **training_samples}


def _no_temporary_beside(out: Path) -> None:
    assert not out.exists()
    if out.parent.exists():
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_the_folds_file_holds_every_point_in_the_samples_order(tiny: dict) -> None:
    folds, meta = read_folds(tiny["folds"])
    table = read_samples(tiny["samples"])
    assert list(folds.columns) == ["obs_id", "x", "y", *FOLD_COLUMNS]
    assert list(folds["obs_id"]) == list(table["obs_id"])
    np.testing.assert_array_equal(folds[["x", "y"]].to_numpy(), table[["x", "y"]].to_numpy())
    settings = tiny["region"].settings
    drawn = make_folds(table[["x", "y"]].to_numpy(), settings["evaluation"]["folds"],
                       settings["training"]["seed"], table[["row", "col"]].to_numpy())
    shared = table.duplicated(["row", "col"], keep=False).to_numpy()
    assert shared.sum() >= 2  # the clustered points include some on one pixel: dealt together
    for _, rows in table[shared].groupby(["row", "col"]).groups.items():
        assert folds.loc[rows, "fold_random"].nunique() == 1
    for col in FOLD_COLUMNS:
        assert folds[col].dtype == np.int8
        np.testing.assert_array_equal(folds[col].to_numpy(), drawn[col])
        assert sorted(folds[col].unique()) == [0, 1, 2]
    assert meta["region"] == "tiny" and meta["synthetic"] is True
    assert (meta["folds"], meta["seed"]) == (3, settings["training"]["seed"])
    assert "SYNTHETIC" in meta["note"]
    # the samples table holds no fold: the maps' models do not depend on them
    assert not set(FOLD_COLUMNS) & set(table.columns) and "seed" not in samples_metadata(
        tiny["samples"])
    # what a fold reads: the samples with these columns
    folded = samples_with_folds(tiny["region"], tiny["samples"], tiny["folds"])
    assert list(folded.columns) == [*SAMPLE_COLUMNS, *FOLD_COLUMNS]
    pd.testing.assert_frame_equal(folded[SAMPLE_COLUMNS], table)


def test_the_cli_draws_the_same_folds_and_another_seed_others(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "cli" / "folds.parquet"
    code = main(["folds", "--config", str(tiny["config"]), "--region", "tiny", "--samples",
                 str(tiny["samples"]), "--out", str(out)])
    assert code == 0 and f"{out}: folds of " in capsys.readouterr().out
    pd.testing.assert_frame_equal(read_folds(out)[0], read_folds(tiny["folds"])[0])
    region = copy.deepcopy(tiny["region"])
    region.settings["training"]["seed"] += 1
    other = build_folds(region, tiny["samples"], tmp_path / "seed.parquet")
    assert not np.array_equal(other["fold_random"], read_folds(out)[0]["fold_random"])
    assert samples_with_folds(region, tiny["samples"], tmp_path / "seed.parquet") is not None


def test_folds_of_other_points_are_refused(tiny: dict, tmp_path: Path) -> None:
    """Samples remade since the folds were drawn (a point dropped, or moved by a corrected
    observation table): one line naming the folds file and the command that remakes it."""
    table = read_samples(tiny["samples"])
    meta = samples_metadata(tiny["samples"])
    fewer = write_samples(table.iloc[1:].reset_index(drop=True), tmp_path / "fewer.parquet", meta)
    moved = table.copy()
    moved.loc[3, "x"] += 10.0
    moved = write_samples(moved, tmp_path / "moved.parquet", meta)
    for samples in (fewer, moved):
        with pytest.raises(InputError) as info:
            samples_with_folds(tiny["region"], samples, tiny["folds"])
        assert str(info.value).startswith(
            f"{tiny['folds']}: drawn for other points than those of {samples} (")
        assert str(info.value).endswith(f"remake it: snakemake --cores 1 -f {tiny['folds']}")


def test_folds_of_another_region_or_no_folds_file_are_refused(tiny: dict, tmp_path: Path) -> None:
    meta = {**samples_metadata(tiny["samples"]), "region": "fairbanks"}
    samples = write_samples(read_samples(tiny["samples"]), tmp_path / "points.parquet", meta)
    other = tmp_path / "other.parquet"
    build_folds(dataclasses.replace(tiny["region"], name="fairbanks"), samples, other)
    with pytest.raises(InputError) as info:
        samples_with_folds(tiny["region"], tiny["samples"], other)
    assert str(info.value) == (f"{other}: folds of region fairbanks, not tiny; give "
                               "results/tiny/samples/folds.parquet")
    with pytest.raises(InputError) as info:
        samples_with_folds(tiny["region"], tiny["samples"], tiny["samples"])
    assert str(info.value) == (f"{tiny['samples']}: not a folds table (missing fold_random, "
                               "fold_sh1km, fold_sh10km); make it with `python -m mapper folds` "
                               "(the workflow's rule folds)")
    with pytest.raises(InputError, match="folds table not found"):
        read_folds(tmp_path / "none.parquet")


def test_too_few_points_for_the_folds_is_one_error_and_nothing_written(tiny: dict,
                                                                       tmp_path: Path) -> None:
    """The samples job checks it with the folds the samples were made with; a larger
    ``evaluation.folds`` since (the samples are not remade) is stopped here."""
    meta = samples_metadata(tiny["samples"])
    samples = write_samples(read_samples(tiny["samples"]).head(2), tmp_path / "two.parquet", meta)
    region = tiny["region"]
    assert region.settings["evaluation"]["folds"] == 3
    out = tmp_path / "out" / "folds.parquet"
    with pytest.raises(InputError) as info:
        build_folds(region, samples, out)
    counts = meta["counts"]
    assert str(info.value) == (
        f"{samples}: 2 points (dropped {counts['no_position']} without position, "
        f"{counts['outside']} outside region tiny, {counts['nodata']} on nodata) cannot fill "
        f"evaluation.folds 3 of {region.path}; add observations or lower it")
    _no_temporary_beside(out)


def test_too_few_pixels_for_the_random_split_names_the_samples_and_the_region(
    tiny: dict, tmp_path: Path
) -> None:
    """Enough points but on fewer pixels than folds (the Random split keeps a pixel's points
    together): the error names the samples table and the region file, and nothing is written."""
    meta = samples_metadata(tiny["samples"])
    table = read_samples(tiny["samples"]).head(4).copy()
    table[["row", "col"]] = table[["row", "col"]].iloc[[0, 0, 1, 1]].to_numpy()  # 2 pixels
    samples = write_samples(table, tmp_path / "two_pixels.parquet", meta)
    region = tiny["region"]
    out = tmp_path / "out" / "folds.parquet"
    with pytest.raises(InputError) as info:
        build_folds(region, samples, out)
    assert str(info.value) == (
        f"{samples}: 4 points on 2 pixels cannot fill 3 folds (the Random split keeps a pixel's "
        f"points together); add observations or lower evaluation.folds ({region.path})")
    _no_temporary_beside(out)
