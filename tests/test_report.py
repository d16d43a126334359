"""The report: files, every figure in JSON and Markdown, fold statistics, truth agreement."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import training_data as T

from mapper.bands import SOIL_ORDERS
from mapper.errors import InputError
from mapper.evaluate import _write
from mapper.metrics import classification_metrics
from mapper.raster import write_geotiff
from mapper.report import BESIDE, SUMMARY, report
from mapper.tasks import TASKS
from mapper.truth import RELIABILITY_BINS

LAT = T.lattice()


@pytest.fixture
def region(training_region: dict):  # noqa: ANN201
    return training_region["region"]


def _points(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    x = T.LEFT + rng.uniform(5, T.SIZE - 5, n)
    y = T.TOP - rng.uniform(5, T.SIZE - 5, n)
    return x, y


def _truth(path: Path) -> np.ndarray:
    """A truth probability raster over the tiny region: increasing west to east."""
    n = T.TILE_PX * T.N_TILES
    prob = np.tile(np.linspace(0.0, 1.0, n, dtype=np.float32), (n, 1))
    left_col = int((T.LEFT - LAT.origin_x) / LAT.res)
    top_row = int((LAT.origin_y - T.TOP) / LAT.res)
    from rasterio.windows import Window
    write_geotiff(path, prob[None], LAT.window_transform(Window(left_col, top_row, n, n)),
                  "EPSG:3338", nodata=float("nan"))
    return prob


def _fold_files(root: Path, task: str, n_classes: int) -> list[Path]:
    """Predictions of two models on two splits x 3 folds; SH-1km fold 2 has no training point.

    NSP: the "good" model predicts the truth probability (east = permafrost), the other noise.
    Drawn from a fixed seed: the same files whichever test asks first.
    """
    rng = np.random.default_rng(5)
    files = []
    for split in ("random", "sh1km"):
        for model in ("rf", "miso"):
            for fold in range(3):
                n = 40
                x, y = _points(rng, n)
                east = (x - T.LEFT) / T.SIZE
                if task == "nsp":
                    y_true = (rng.random(n) < east).astype(int)
                    p = east if model == "miso" else rng.random(n)
                    proba = np.stack([1 - p, p], axis=1)
                else:
                    y_true = rng.integers(0, n_classes, n)
                    proba = rng.dirichlet(np.ones(n_classes), n)
                    proba[np.arange(n), y_true] += 0.5 if model == "miso" else 0.0
                    proba /= proba.sum(axis=1, keepdims=True)
                n_train = 0 if (split, fold) == ("sh1km", 2) else 100
                if n_train == 0:
                    proba[:] = np.nan
                y_pred = np.where(np.isfinite(proba).all(axis=1),
                                  np.nan_to_num(proba).argmax(axis=1), -1)
                df = pd.DataFrame({"obs_id": [f"{split}{model}{fold}_{i}" for i in range(n)],
                                   "x": x, "y": y, "y_true": y_true})
                for i, col in enumerate(TASKS[task].probability_columns):
                    df[col] = proba[:, i]
                df["y_pred"] = y_pred
                df["task"], df["model"], df["split"] = task, model, split
                df["fold"], df["n_train"] = fold, n_train
                path = root / "cv" / task / f"{model}_{split}_f{fold}.parquet"
                counts = [70, 30] if task == "nsp" else [10] * n_classes
                _write(df, path, {"task": task, "model": model, "split": split, "fold": fold,
                                  "n_train": n_train, "n_test": n, "note": "",
                                  "train_counts": counts if n_train else [0] * n_classes,
                                  "classes": [], "region": "tiny"})
                files.append(path)
    return files


def test_nsp_report_files_figures_and_truth(region, tmp_path: Path) -> None:  # noqa: ANN001
    files = _fold_files(tmp_path, "nsp", 2)
    truth = tmp_path / "truth_nsp.tif"
    _truth(truth)
    out = tmp_path / "reports" / "nsp.md"
    with pytest.raises(InputError) as missing:  # a typo in --truth
        report(region, "nsp", files, out, truth=tmp_path / "truth_nps.tif")
    assert str(missing.value) == (
        f"{tmp_path / 'truth_nps.tif'}: truth raster not found; check the --truth path (this "
        "synthetic region's is resources/tiny/truth/nsp.tif, which its sources rule writes)")
    assert not out.parent.exists()
    report(region, "nsp", files, out, truth=truth)
    for name in ("nsp.md", "nsp.json", "nsp_splits.png", "nsp_confusion.png"):
        assert (out.parent / name).stat().st_size > 0
    assert (out.parent / "nsp_splits.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out.parent / "nsp.json").read_text())
    assert data["synthetic"] is True and len(data["folds"]) == 12
    md = out.read_text()
    assert "SYNTHETIC" in md
    for split, label in (("random", "Random"), ("sh1km", "SH-1km")):
        for model, name in (("rf", "Random Forest"), ("miso", "MiSo")):
            entry = data["summary"][split][model]
            assert entry["folds_used"] == (2 if split == "sh1km" else 3)
            for metric in SUMMARY["binary"]:
                assert entry[metric]["n"] == entry["folds_used"], metric
            # the mean +- sd in the table is over the per-fold figures
            accs = [f["metrics"]["accuracy"] for f in data["folds"] if f["split"] == split
                    and f["model"] == model and f["metrics"]]
            assert entry["accuracy"]["mean"] == pytest.approx(np.mean(accs))
            assert entry["accuracy"]["sd"] == pytest.approx(np.std(accs, ddof=1))
            row = [r for r in md.splitlines() if r.startswith(f"| {label} | {name} |")][0]
            assert f"{entry['accuracy']['mean']:.3f} ± {entry['accuracy']['sd']:.3f}" in row
            assert f"{entry['r1']['mean']:.3f}" in row and f"{entry['auc']['mean']:.3f}" in row
            # R1 at 0.5, R1 at the training prior and the prior side by side in the same row
            cells = [c.strip() for c in row.strip("|").split("|")]
            r1 = cells.index(f"{entry['r1']['mean']:.3f} ± {entry['r1']['sd']:.3f}")
            assert cells[r1 + 1] == (f"{entry['r1_at_prior']['mean']:.3f} ± "
                                     f"{entry['r1_at_prior']['sd']:.3f}")
            assert cells[r1 + 2].startswith("0.300")
    assert "| R1 at 0.5 | R1 at prior | prior |" in md
    # per-fold figures are the metrics of that fold's table
    fold = [f for f in data["folds"] if (f["split"], f["model"], f["fold"]) == ("random", "rf", 1)]
    df = pd.read_parquet(fold[0]["path"])
    ref = classification_metrics(df["y_true"], df["y_pred"], ["absent", "present"],
                                 df["p_present"])
    assert fold[0]["metrics"]["r1"] == pytest.approx(ref["r1"])
    # truth: the miso predictions are the truth probability itself
    t = data["truth"]["splits"]["random"]
    assert t["miso"]["corr_vs_truth"] == pytest.approx(1.0, abs=1e-3)
    assert t["miso"]["auc_vs_truth"] > 0.99 and abs(t["rf"]["auc_vs_truth"] - 0.5) < 0.2
    assert "Agreement with the hidden truth" in md and "chance" in md
    # calibration: recall at the training prior (0.3) of the perfectly ranked "miso" predictions
    cal = data["summary"]["random"]["miso"]
    assert cal["prior"]["mean"] == pytest.approx(0.3)
    fold_r1 = []
    for f in data["folds"]:
        if (f["split"], f["model"]) == ("random", "miso"):
            df = pd.read_parquet(f["path"])
            present = df["y_true"] == 1
            fold_r1.append(((df["p_present"] >= 0.3) & present).sum() / present.sum())
    assert cal["r1_at_prior"]["mean"] == pytest.approx(np.mean(fold_r1))
    assert cal["mean_p_present"]["mean"] > cal["mean_p_absent"]["mean"]
    assert "## Calibration (NSP)" in md


def test_truth_figures_undefined_for_one_class_of_labels_are_a_dash(
        region, tmp_path: Path) -> None:  # noqa: ANN001
    """Test points whose labels are all absent: the labels' correlation with the truth is
    undefined, "–" in the table and null in the JSON, without a numpy warning (their AUC, a
    constant score, is 0.5)."""
    import warnings

    from mapper.evaluate import read_fold

    files = _fold_files(tmp_path, "nsp", 2)
    for path in files:
        if "_random_" in path.name:
            df, info = read_fold(path)
            _write(df.assign(y_true=0), path, info)
    truth = tmp_path / "truth_nsp.tif"
    _truth(truth)
    out = tmp_path / "reports" / "nsp.md"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        content = report(region, "nsp", files, out, truth=truth)
    t = content["truth"]["splits"]["random"]["miso"]
    assert t["labels_auc_vs_truth"] == 0.5 and math.isnan(t["labels_corr_vs_truth"])
    assert t["corr_vs_truth"] == pytest.approx(1.0, abs=1e-3)
    md = out.read_text()
    assert "| Random | MiSo | 120 | 1.000 | 1.000 | 0.500 / – | 0.5 / 0.0 |" in md
    assert "nan" not in md
    assert json.loads(out.with_suffix(".json").read_text())["truth"]["splits"]["random"]["miso"][
        "labels_corr_vs_truth"] is None


def _rewrite_fold(source: Path, dest: Path, **meta: object) -> Path:
    from mapper.evaluate import read_fold

    df, info = read_fold(source)
    _write(df, dest, {**info, **meta})
    return dest


@pytest.mark.parametrize("case", ["region", "classes", "twice"])
def test_a_fold_of_another_region_or_classes_or_given_twice_is_one_error(
    region, tmp_path: Path, case: str  # noqa: ANN001
) -> None:
    """A fold file of another region, of another class order, or one fold given twice would be
    mislabelled or counted twice in every figure: one error naming the file, and no report."""
    files = _fold_files(tmp_path, "nsp", 2)
    odd = tmp_path / "odd" / files[0].name
    meta = {"region": {"region": "elsewhere"},
            "classes": {"classes": ["present", "absent"]}, "twice": {}}[case]
    files = [*files, _rewrite_fold(files[0], odd, **meta)]
    expected = {
        "region": f"{odd}: a fold of region elsewhere, not tiny; pass region tiny's folds",
        "classes": f"{odd}: a fold of the classes ['present', 'absent'], not nsp's ['absent', "
                   "'present']; delete it and run the same target again",
        "twice": f"{odd}: rf random fold 0 is given twice (also {files[0]}); pass each fold once",
    }[case]
    out = tmp_path / "reports" / "nsp.md"
    with pytest.raises(InputError) as caught:
        report(region, "nsp", files, out)
    assert str(caught.value) == expected
    assert not out.exists()


@pytest.mark.slow
def test_soil_order_report_has_every_class(region, tmp_path: Path) -> None:  # noqa: ANN001
    files = _fold_files(tmp_path, "soilorder", 7)
    out = tmp_path / "soilorder.md"
    content = report(region, "soilorder", files, out)
    md = out.read_text()
    assert all(name in md for name in SOIL_ORDERS)
    entry = content["summary"]["random"]["miso"]
    assert set(entry["per_class"]) == set(SOIL_ORDERS)
    assert "auc" not in entry and not math.isnan(entry["macro_f1"]["mean"])
    assert content["truth"] is None  # no truth raster at resources/tiny/truth
    assert (tmp_path / "soilorder_confusion.png").exists()


def _held_out(files: list[Path], split: str, model: str) -> pd.DataFrame:
    dfs = [pd.read_parquet(f) for f in files]
    df = pd.concat([d for d in dfs if (d["split"].iloc[0], d["model"].iloc[0]) == (split, model)])
    return df[df["y_pred"] >= 0]


def _loop_ece(p: np.ndarray, t: np.ndarray) -> tuple[float, int]:
    """ECE by a loop over ten bins [b/10, (b+1)/10), the last closed."""
    ece = 0.0
    for b in range(10):
        inside = (p >= b / 10) & ((p < (b + 1) / 10) | (b == 9))
        if inside.any():
            ece += inside.sum() / len(p) * abs(p[inside].mean() - t[inside].mean())
    return ece, len(p)


def _ece_by_hand(files: list[Path], split: str, model: str, n_px: int) -> tuple[float, int]:
    """ECE of a split and model from the fold files and the truth's formula (``_truth``: column
    c of the region holds c / (n_px - 1))."""
    df = _held_out(files, split, model)
    t = np.floor((df["x"].to_numpy() - T.LEFT) / LAT.res) / (n_px - 1)
    return _loop_ece(df["p_present"].to_numpy(), t)


def test_nsp_report_reliability_against_truth(region, tmp_path: Path) -> None:  # noqa: ANN001
    files = _fold_files(tmp_path, "nsp", 2)
    truth = tmp_path / "truth_nsp.tif"
    n_px = _truth(truth).shape[1]
    out = tmp_path / "reports" / "nsp.md"
    content = report(region, "nsp", files, out, truth=truth)
    png = out.parent / "nsp_reliability.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    md = out.read_text()
    assert "## Reliability against the hidden truth (NSP)" in md and "nsp_reliability.png" in md
    for split, label in (("random", "Random"), ("sh1km", "SH-1km")):
        for model, name in (("rf", "Random Forest"), ("miso", "MiSo")):
            t = content["truth"]["splits"][split][model]
            ece, n = _ece_by_hand(files, split, model, n_px)
            assert t["ece"] == pytest.approx(ece, abs=1e-6) and t["n"] == n  # float32 truth
            assert len(t["reliability"]["count"]) == RELIABILITY_BINS
            assert sum(t["reliability"]["count"]) == n
            assert f"| {label} | {name} | {n} | {t['ece']:.3f} |" in md
    # "miso" predicts the truth's gradient itself (up to the 10 m pixel), RF uniform noise
    assert content["truth"]["splits"]["random"]["miso"]["ece"] < 0.02
    assert content["truth"]["splits"]["random"]["rf"]["ece"] > 0.15
    # the bins of each split: ten rows, the last closed
    truth_md = md[md.index("## Reliability against the hidden truth"):]
    rows = [r for r in truth_md.splitlines() if r.startswith("| [")]
    assert len(rows) == 2 * RELIABILITY_BINS
    assert rows[0].startswith("| [0.0, 0.1) |") and rows[9].startswith("| [0.9, 1.0] |")
    miso = content["truth"]["splits"]["random"]["miso"]["reliability"]
    assert (f"{miso['mean_pred'][0]:.3f} / {miso['mean_truth'][0]:.3f} ({miso['count'][0]})"
            in rows[0])
    assert json.loads((out.parent / "nsp.json").read_text())["truth"]["splits"]["sh1km"]["rf"][
        "ece"] == pytest.approx(content["truth"]["splits"]["sh1km"]["rf"]["ece"])


def _label_ece_by_hand(files: list[Path], split: str, model: str, task: str
                      ) -> tuple[float, int]:
    """ECE against the observed labels: NSP's probability of present against present; soil
    order's top-class probability against a right prediction."""
    df = _held_out(files, split, model)
    if task == "nsp":
        return _loop_ece(df["p_present"].to_numpy(), (df["y_true"] == 1).to_numpy())
    p = df[TASKS[task].probability_columns].to_numpy().max(axis=1)
    return _loop_ece(p, (df["y_pred"] == df["y_true"]).to_numpy())


@pytest.mark.parametrize("task", ["nsp", "soilorder"])
def test_every_report_has_the_reliability_against_the_labels(
    region, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str  # noqa: ANN001
) -> None:
    """Without a truth (a real region): the section and the figure from the observed labels."""
    monkeypatch.chdir(tmp_path)  # no resources/tiny/truth here
    files = _fold_files(tmp_path, task, 2 if task == "nsp" else 7)
    out = tmp_path / "reports" / f"{task}.md"
    content = report(region, task, files, out)
    md = out.read_text()
    assert content["truth"] is None and "hidden truth" not in md
    assert (out.parent / f"{task}_reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert "## Reliability against the observed labels" in md
    assert f"`{task}_reliability.png`" in md
    for split, label in (("random", "Random"), ("sh1km", "SH-1km")):
        for model, name in (("rf", "Random Forest"), ("miso", "MiSo")):
            r = content["label_reliability"][split][model]
            ece, n = _label_ece_by_hand(files, split, model, task)
            assert r["ece"] == pytest.approx(ece, abs=1e-9) and r["n"] == n
            assert n == (120 if split == "random" else 80)  # SH-1km fold 2 had no training
            assert f"| {label} | {name} | {n} | {r['ece']:.3f} |" in md
    rows = [r for r in md.splitlines() if r.startswith("| [")]
    assert len(rows) == 2 * RELIABILITY_BINS and rows[9].startswith("| [0.9, 1.0] |")
    if task == "nsp":  # the labels are drawn from the probability "miso" predicts
        rel = content["label_reliability"]["random"]
        assert rel["miso"]["ece"] < rel["rf"]["ece"]
        assert "| R1 at 0.5 | R1 at prior | prior |" in md


def test_a_figure_on_fewer_folds_than_its_row_says_how_many(region, tmp_path: Path  # noqa: ANN001
                                                            ) -> None:
    """AUC and R1 are undefined in a fold whose test points are one class: their mean rests on
    fewer folds than the row's count, and the table says how many beside them (the JSON's n)."""
    from mapper.evaluate import read_fold

    files = _fold_files(tmp_path, "nsp", 2)
    one_class = next(f for f in files if f.name == "rf_random_f0.parquet")
    df, info = read_fold(one_class)
    df["y_true"] = 0
    _write(df, one_class, info)
    out = tmp_path / "reports" / "nsp.md"
    report(region, "nsp", files, out)
    entry = json.loads(out.with_suffix(".json").read_text())["summary"]["random"]["rf"]
    assert entry["folds_used"] == 3 and entry["accuracy"]["n"] == 3
    assert entry["auc"]["n"] == entry["r1"]["n"] == 2
    row = next(r for r in out.read_text().splitlines()
               if r.startswith("| Random | Random Forest |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2] == "3/3"
    assert f"{entry['auc']['mean']:.3f} ± {entry['auc']['sd']:.3f} (2 folds)" in cells
    assert f"{entry['accuracy']['mean']:.3f} ± {entry['accuracy']['sd']:.3f}" in cells
    shown = [c for m in SUMMARY["binary"] for c in (m, *BESIDE.get(m, []))]
    assert sum("folds)" in c for c in cells) == sum(entry[m]["n"] < 3 for m in shown) >= 2
    other = next(r for r in out.read_text().splitlines() if r.startswith("| Random | MiSo |"))
    assert "folds)" not in other


def test_a_class_never_predicted_has_no_precision_not_nan(region, tmp_path: Path  # noqa: ANN001
                                                          ) -> None:
    """A class in the test points that no fold predicts has a recall and F1 (0) but no
    precision: its cell shows "–" for it, never "nan"."""
    from mapper.evaluate import read_fold

    files = _fold_files(tmp_path, "soilorder", 7)
    for path in files:
        if path.name.startswith("rf_random_"):
            df, info = read_fold(path)
            df.loc[df["y_pred"] == 0, "y_pred"] = 1  # Andisols never predicted
            _write(df, path, info)
    out = tmp_path / "reports" / "soilorder.md"
    report(region, "soilorder", files, out)
    md = out.read_text()
    assert "nan" not in md
    row = next(r for r in md.splitlines() if r.startswith("| Random | Random Forest |")
               and "(n=" in r)
    first = [c.strip() for c in row.strip("|").split("|")][2]
    assert first.startswith("– / 0.00 / 0.00 (n=")


def test_a_split_and_model_missing_a_fold_is_one_error(region, tmp_path: Path  # noqa: ANN001
                                                       ) -> None:
    """A report of some folds only (a file left out of a hand-run report) would read as the
    whole cross-validation: it is refused, naming the split, model and fold, and nothing is
    written."""
    files = _fold_files(tmp_path, "nsp", 2)
    given = [f for f in files if f.name != "miso_sh1km_f1.parquet"]
    out = tmp_path / "reports" / "nsp.md"
    with pytest.raises(InputError, match=r"^miso sh1km lacks fold\(s\) 1 of region tiny's 3 "
                                         r"\(evaluation\.folds of .*\); pass every fold"):
        report(region, "nsp", given, out)
    assert not out.parent.exists() or not any(out.parent.iterdir())


def test_the_report_does_not_depend_on_the_order_of_the_fold_files(
        region, tmp_path: Path) -> None:  # noqa: ANN001
    """The same folds in another order (a hand-run report, a shell glob) give the same figures,
    to the last bit, in the same order."""
    files = _fold_files(tmp_path, "nsp", 2)
    one = report(region, "nsp", files, tmp_path / "a" / "nsp.md")
    other = report(region, "nsp", files[::-1], tmp_path / "b" / "nsp.md")
    for key in ("summary", "label_reliability", "truth", "zones"):
        assert json.dumps(one[key], sort_keys=False) == json.dumps(other[key], sort_keys=False)


def test_a_fold_without_predicted_test_points_is_left_out_as_such(region, tmp_path: Path  # noqa: ANN001
                                                                   ) -> None:
    """A fold that trained but has no predicted test point (every test point off the stacks) is
    counted and left out of the means, and the report says the means are over the folds with
    training and test points, not only training points."""
    from mapper.evaluate import read_fold

    files = _fold_files(tmp_path, "nsp", 2)
    unpredicted = next(f for f in files if f.name == "miso_random_f1.parquet")
    df, info = read_fold(unpredicted)
    df["y_pred"] = -1
    df[list(TASKS["nsp"].probability_columns)] = np.nan
    _write(df, unpredicted, info)
    out = tmp_path / "reports" / "nsp.md"
    report(region, "nsp", files, out)
    entry = json.loads(out.with_suffix(".json").read_text())["summary"]["random"]["miso"]
    assert entry["folds"] == 3 and entry["folds_used"] == 2 and entry["accuracy"]["n"] == 2
    md = out.read_text()
    assert "mean ± sd over the folds with training and test points" in md
    row = next(r for r in md.splitlines() if r.startswith("| Random | MiSo |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # the test points of the folds the figures rest on, not of the fold left out
    used = sum(len(read_fold(f)[0]) for f in files
               if f.name.startswith("miso_random_") and f != unpredicted)
    assert cells[2] == "2/3" and cells[3] == str(used) == str(entry["n_test"])
    assert used < sum(len(read_fold(f)[0]) for f in files if f.name.startswith("miso_random_"))
    assert "## Per class (precision / recall / F1, means over the folds; sd in the JSON; " in md
