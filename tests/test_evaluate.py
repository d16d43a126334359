"""CV folds: RF and MiSo on identical folds, prediction tables, empty training sets, CLI."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mapper.evaluate as evaluate_module
from mapper.bands import STACK_BANDS
from mapper.cli import main
from mapper.errors import ConfigError, InputError, TrainingError
from mapper.evaluate import FoldSpec, cv_fold, read_fold
from mapper.folds import read_folds
from mapper.splits import train_test_indices


@pytest.fixture
def tiny(training_region: dict, training_samples: dict) -> dict:
    """The training region and its samples (read only)."""
    return {**training_region, **training_samples}


def test_random_forest_fold_predicts_the_fold_test_points(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "cv" / "rf_random_f1.parquet"
    df = cv_fold(tiny["region"], FoldSpec("soilorder", "rf", "random", 1), samples=tiny["samples"],
                 folds=tiny["folds"], stacks=tiny["stacks"], out=out)
    back, meta = read_fold(out)
    pd.testing.assert_frame_equal(df, back)
    train, test = train_test_indices(tiny["folded"], "random", 1, "soilorder")
    assert list(df["obs_id"]) == list(tiny["table"]["obs_id"].iloc[test])
    probs = df[[c for c in df.columns if c.startswith("p_")]].to_numpy()
    assert probs.shape[1] == 7
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(df["y_pred"], probs.argmax(axis=1))
    np.testing.assert_array_equal(df["y_true"], tiny["table"]["soil_order"].iloc[test])
    assert meta["n_train"] == len(train) and meta["classes"][2] == "Gelisols"
    assert meta["train_counts"] == np.bincount(
        tiny["table"]["soil_order"].iloc[train].astype(int), minlength=7).tolist()
    assert (df["n_train"] == len(train)).all() and (df["model"] == "rf").all()
    # seeded: the same fold twice gives the same probabilities
    again = cv_fold(tiny["region"], FoldSpec("soilorder", "rf", "random", 1),
                    samples=tiny["samples"], folds=tiny["folds"], stacks=tiny["stacks"],
                    out=tmp_path / "cv" / "again.parquet")
    pd.testing.assert_frame_equal(df, again)


def test_random_forest_fits_on_the_jobs_threads_with_the_same_probabilities(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The forest is grown on the job's threads (OMP_NUM_THREADS, the rule's threads) and gives
    the same probabilities, to the bit, as grown on one."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(400, 6))
    labels = (features[:, 0] + 0.5 * rng.normal(size=400) > 0).astype(np.int64)
    test = rng.normal(size=(300, 6))
    evaluation = {"rf_trees": 64, "rf_max_depth": None, "rf_min_samples_split": 2}
    seen = []
    from sklearn.ensemble import RandomForestClassifier

    original = RandomForestClassifier.fit

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append(self.n_jobs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RandomForestClassifier, "fit", spy)
    got = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("OMP_NUM_THREADS", threads)
        got[threads] = evaluate_module.random_forest_probabilities(
            features, labels, test, 2, evaluation, seed=7)
    assert seen == [1, 2]
    np.testing.assert_array_equal(got["1"], got["2"])


def test_random_forest_takes_the_aspect_as_the_region_says(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``model.aspect`` is one setting for both models: with ``components`` the forest's
    features hold cos and sin of the aspect (0 on flat ground) in its place, the other columns
    as they were."""
    seen: list[np.ndarray] = []
    forest = evaluate_module.random_forest_probabilities

    def spy(features: np.ndarray, *args: object, **kwargs: object) -> np.ndarray:
        seen.append(features)
        return forest(features, *args, **kwargs)

    monkeypatch.setattr(evaluate_module, "random_forest_probabilities", spy)
    region = copy.deepcopy(tiny["region"])
    for aspect in ("number", "components"):
        region.settings["model"]["aspect"] = aspect
        df = cv_fold(region, FoldSpec("nsp", "rf", "random", 0), samples=tiny["samples"],
                     folds=tiny["folds"], stacks=tiny["stacks"], out=tmp_path / f"{aspect}.parquet")
        assert np.isfinite(df[["p_absent", "p_present"]].to_numpy()).all()
    number, components = seen
    i = STACK_BANDS.index("aspect")
    train, _ = train_test_indices(tiny["folded"], "random", 0, "nsp")
    degrees = tiny["table"]["aspect"].to_numpy()[train]
    assert number.shape[1] == 19 and components.shape[1] == 20
    np.testing.assert_array_equal(number[:, i], degrees)
    sloped = np.isfinite(degrees)
    np.testing.assert_allclose(components[sloped, i], np.cos(np.radians(degrees[sloped])),
                               atol=1e-6)
    np.testing.assert_allclose(components[sloped, i + 1], np.sin(np.radians(degrees[sloped])),
                               atol=1e-6)
    np.testing.assert_array_equal(np.delete(components, [i, i + 1], axis=1),
                                  np.delete(number, [i], axis=1))


@pytest.mark.slow
def test_miso_and_random_forest_see_identical_folds(tiny: dict, tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    data = {"samples": tiny["samples"], "folds": tiny["folds"], "stacks": tiny["stacks"]}
    rf = cv_fold(tiny["region"], FoldSpec("nsp", "rf", "sh1km", 0), **data,
                 out=cv / "rf_sh1km_f0.parquet")
    miso = cv_fold(tiny["region"], FoldSpec("nsp", "miso_nopretrain", "sh1km", 0), **data,
                   out=cv / "miso_nopretrain_sh1km_f0.parquet")
    assert list(rf["obs_id"]) == list(miso["obs_id"])
    assert rf["n_train"].iloc[0] == miso["n_train"].iloc[0] > 0
    np.testing.assert_array_equal(rf["y_true"], miso["y_true"])
    p = miso[["p_absent", "p_present"]].to_numpy()
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(miso["y_pred"], (p[:, 1] > 0.5).astype(int))


def test_a_fold_without_training_points_keeps_its_test_rows(tiny: dict, tmp_path: Path) -> None:
    # SH-10km in a 2.56 km region: every training point lies in the dead zone
    df = cv_fold(tiny["region"], FoldSpec("nsp", "rf", "sh10km", 0), samples=tiny["samples"],
                 folds=tiny["folds"], stacks=tiny["stacks"],
                 out=tmp_path / "cv" / "rf_sh10km_f0.parquet")
    _, meta = read_fold(tmp_path / "cv" / "rf_sh10km_f0.parquet")
    assert len(df) > 0 and meta["n_train"] == 0 and "no training point" in meta["note"]
    assert df["p_present"].isna().all() and (df["y_pred"] == -1).all()


def test_a_diverged_miso_fold_is_an_error_not_an_empty_fold(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Non-finite probabilities from a fold's model (a diverged fine-tuning) stop the job; the
    report would otherwise drop the fold as it drops an empty holdout, and MiSo's means would be
    those of the folds that trained."""
    import mapper.evaluate as evaluate_module

    def diverged(region, task, table, train, test, *rest):
        proba = np.full((len(test), len(task.classes)), 0.5)
        proba[1] = np.nan
        return proba

    monkeypatch.setattr(evaluate_module, "miso_probabilities", diverged)
    out = tmp_path / "cv" / "miso_nopretrain_random_f0.parquet"
    with pytest.raises(TrainingError, match=r"random fold 0: 1 of \d+ test points .*lr_max"):
        cv_fold(tiny["region"], FoldSpec("nsp", "miso_nopretrain", "random", 0),
                samples=tiny["samples"], folds=tiny["folds"], stacks=tiny["stacks"], out=out)
    assert not out.exists()


def test_a_test_point_the_stacks_now_leave_without_data_is_refused(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tile stacked again after the samples (a new cloud gap over a test point): MiSo would be
    scored on a crop of zeros there, so the fold stops, naming the samples and the fix, before
    any training; Random Forest (the stored values) still runs."""
    import rasterio

    from mapper.folds import samples_with_folds

    region = tiny["region"]
    table = samples_with_folds(region, tiny["samples"], tiny["folds"])
    _, test = train_test_indices(table, "random", 0, "nsp")
    x, y = table["x"].to_numpy()[test[0]], table["y"].to_numpy()[test[0]]
    row, col = region.lattice.pixels_of(np.array([x]), np.array([y]))
    tile = region.lattice.tile_of_xy(x, y)
    stacks = []
    for path in map(Path, tiny["stacks"]):
        copy_path = tmp_path / "stacks" / path.name
        copy_path.parent.mkdir(exist_ok=True)
        copy_path.write_bytes(path.read_bytes())
        stacks.append(copy_path)
        if path.stem == tile:
            with rasterio.open(copy_path, "r+") as dst:
                window = dst.window(*region.lattice.window_bounds(
                    rasterio.windows.Window(int(col[0]), int(row[0]), 1, 1)))
                band = dst.read(1, window=window)
                dst.write(np.full_like(band, np.nan), 1, window=window)
    monkeypatch.setattr(evaluate_module, "miso_probabilities",
                        lambda *a, **k: pytest.fail("trained on stale samples"))
    out = tmp_path / "cv" / "miso_nopretrain_random_f0.parquet"
    with pytest.raises(InputError) as err:
        cv_fold(region, FoldSpec("nsp", "miso_nopretrain", "random", 0), samples=tiny["samples"],
                folds=tiny["folds"], stacks=stacks, out=out)
    assert str(err.value).startswith(
        f"{tiny['samples']}: miso_nopretrain on nsp, random fold 0: 1 of {len(test)} test points "
        f"(obs_id {table['obs_id'].iloc[test[0]]}) lie on pixels the stacks now leave without data")
    assert str(err.value).endswith(f"make the samples again (snakemake --cores 1 -f "
                                   f"{tiny['samples']}), then run the same target again")
    assert not out.exists()
    rf = cv_fold(region, FoldSpec("nsp", "rf", "random", 0), samples=tiny["samples"],
                 folds=tiny["folds"], stacks=stacks, out=tmp_path / "cv" / "rf_random_f0.parquet")
    assert len(rf) == len(test)


@pytest.mark.parametrize(("section", "key", "value"),
                         [("evaluation", "folds", 4), ("training", "seed", 99)])
def test_folds_drawn_with_other_settings_are_refused(
    tiny: dict, tmp_path: Path, section: str, key: str, value: int
) -> None:
    """A folds file drawn before evaluation.folds or training.seed changed would test on the old
    folds (or ask for a fold that does not exist): one line naming the file and the command that
    remakes it, nothing written."""
    region = copy.deepcopy(tiny["region"])
    region.settings[section][key] = value
    out = tmp_path / "cv" / "rf_random_f0.parquet"
    with pytest.raises(InputError) as info:
        cv_fold(region, FoldSpec("nsp", "rf", "random", 0), samples=tiny["samples"],
                folds=tiny["folds"], stacks=tiny["stacks"], out=out)
    message, made = str(info.value), read_folds(tiny["folds"])[1]
    assert made[key] != value
    assert message.startswith(f"{tiny['folds']}: drawn with folds {made['folds']}, seed "
                              f"{made['seed']}; ")
    assert f"{key} {value}" in message and f"snakemake --cores 1 -f {tiny['folds']}" in message
    assert not out.exists() and not out.parent.exists()


def test_bad_model_choices_are_refused(tiny: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs --pretrained"):
        cv_fold(tiny["region"], FoldSpec("nsp", "miso", "random", 0), samples=tiny["samples"],
                folds=tiny["folds"], stacks=tiny["stacks"], out=tmp_path / "x.parquet")
    assert not (tmp_path / "x.parquet").exists()
    with pytest.raises(ConfigError, match="model miso_nopretrain reads the region's stacks"):
        cv_fold(tiny["region"], FoldSpec("nsp", "miso_nopretrain", "random", 0),
                samples=tiny["samples"], folds=tiny["folds"], stacks=[],
                out=tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="unknown model 'svm'; choose one of rf, miso"):
        FoldSpec("nsp", "svm", "random", 0)
    with pytest.raises(ConfigError, match="unknown split 'sh5km'"):
        FoldSpec("nsp", "rf", "sh5km", 0)
    with pytest.raises(ConfigError, match="unknown task 'ph'; choose one of nsp, soilorder"):
        FoldSpec("ph", "rf", "random", 0)
    with pytest.raises(TypeError):  # everything after the fold is passed by name
        cv_fold(tiny["region"], FoldSpec("nsp", "rf", "random", 0), tiny["samples"],  # type: ignore[misc]
                tiny["stacks"], tmp_path / "x.parquet")


def test_cli_cv_fold_writes_the_table(tiny: dict, tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli" / "rf_sh1km_f2.parquet"
    code = main(["cv-fold", "--config", str(tiny["config"]), "--region", "tiny", "--task", "nsp",
                 "--model", "rf", "--split", "sh1km", "--fold", "2", "--samples",
                 str(tiny["samples"]), "--folds", str(tiny["folds"]), "--out", str(out)])
    assert code == 0 and out.exists()  # a forest reads no stack (the workflow gives it none)
    assert "test points" in capsys.readouterr().out
