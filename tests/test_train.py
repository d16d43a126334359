"""Training: schedule, checkpoints that carry their spec, resume equals straight run, same seed."""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch
from rasterio.windows import Window
from tiny_region import square_boundary

import mapper.training_loop as training_loop
from mapper.bands import input_bands
from mapper.errors import CheckpointError, InputError, TrainingError
from mapper.models.checkpoint import load_checkpoint
from mapper.normalise import Normaliser
from mapper.predict import PredictOptions, predict_tile
from mapper.samples import build_samples
from mapper.schedule import Schedule
from mapper.train import finetune, pretrain


def test_schedule_warms_up_then_follows_a_cosine() -> None:
    s = Schedule.of(total=100, warmup_fraction=0.1, warmup_lr=1e-6, lr_max=1e-3, lr_min=1e-4)
    assert s.warmup == 10
    assert s.lr(0) == pytest.approx(1e-6)
    assert s.lr(5) == pytest.approx(1e-6 + (1e-3 - 1e-6) / 2)
    assert s.lr(10) == pytest.approx(1e-3)
    assert s.lr(99) == pytest.approx(1e-4)
    mid = 10 + (99 - 10) / 2
    assert s.lr(int(mid)) == pytest.approx(1e-4 + 0.45e-3 * (1 + np.cos(np.pi * 44 / 89)), rel=1e-6)
    lrs = [s.lr(i) for i in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))  # monotone decay
    assert Schedule.of(1, 0.05, 1e-6, 1e-3, 1e-4).lr(0) == pytest.approx(1e-3)


@pytest.mark.parametrize("fraction", [0.995, 1.0])
def test_a_warm_up_of_nearly_every_step_still_ends_at_lr_min(fraction: float) -> None:
    """The region schema allows warmup_fraction up to 1: the warm-up then leaves the cosine its
    last 2 steps, so the run still ends at lr_min, not at lr_max."""
    s = Schedule.of(total=100, warmup_fraction=fraction, warmup_lr=1e-6, lr_max=5e-5,
                    lr_min=5e-6)
    assert s.warmup == 98
    assert s.lr(97) < s.lr(98) == pytest.approx(5e-5)
    assert s.lr(99) == pytest.approx(5e-6)
    assert Schedule.of(2, 1.0, 1e-6, 5e-5, 5e-6).lr(1) == pytest.approx(5e-6)


@pytest.fixture(scope="module")
def tiny(training_region: dict, training_samples: dict,
         tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The training region and its samples; ``root`` is this module's folder for checkpoints."""
    rows = np.flatnonzero(training_samples["table"]["nsp"].notna().to_numpy())[:30]  # short runs
    return {**training_region, **training_samples, "rows": rows,
            "root": tmp_path_factory.mktemp("train")}


@pytest.fixture(scope="module")
def pretrained(tiny: dict) -> Path:
    return pretrain(tiny["region"], tiny["samples"], tiny["stacks"], tiny["root"] / "pre.pt")


def _state(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _killed_after_first_epoch(monkeypatch: pytest.MonkeyPatch,
                              run: Callable[[], object]) -> None:
    """``run()`` as a job killed right after it wrote its first epoch's partial."""
    save = training_loop.save_torch  # writes the partial after every epoch

    def save_then_stop(path: Path, state: dict) -> Path:
        save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training_loop, "save_torch", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(training_loop, "save_torch", save)


@pytest.mark.slow
def test_pretraining_twice_with_the_same_seed_gives_the_same_file(tiny: dict,
                                                                  pretrained: Path) -> None:
    again = pretrain(tiny["region"], tiny["samples"], tiny["stacks"], tiny["root"] / "pre2.pt")
    a, b = _state(pretrained), _state(again)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert pretrained.read_bytes() == again.read_bytes()
    model, meta = load_checkpoint(pretrained, expect_task="pretrain")
    assert meta.bands == input_bands(model.cfg.aspect)
    norm = Normaliser.from_dict(meta.normalisation)
    assert norm.n_pixels > 0
    assert norm.s2_scaling == "standardised"  # no SatlasPretrain weights in the tiny region
    assert [h["epoch"] for h in meta.extra["history"]] == [1]
    assert not (tiny["root"] / "pre.pt.partial").exists()


@pytest.mark.slow
def test_resumed_fine_tuning_equals_an_uninterrupted_run(
    tiny: dict, pretrained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, rows = tiny["root"], tiny["rows"]
    straight = root / "straight.pt"
    finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], straight, pretrained, rows)

    resumed = root / "resumed.pt"
    _killed_after_first_epoch(monkeypatch, lambda: finetune(
        tiny["region"], "nsp", tiny["samples"], tiny["stacks"], resumed, pretrained, rows))
    partial = root / "resumed.pt.partial"
    assert partial.exists() and not resumed.exists()
    assert _state(partial)["epoch"] == 1
    result = finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], resumed,
                      pretrained, rows)
    assert not partial.exists()
    assert [h["epoch"] for h in result.history] == [1, 2]
    a, b = _state(straight), _state(resumed)
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert a["extra"]["history"] == b["extra"]["history"]
    assert straight.read_bytes() == resumed.read_bytes()

    model, meta = load_checkpoint(straight, expect_task="nsp", expect_size="demo")
    assert meta.classes == ["nsp"] and meta.n_out == 1
    assert meta.bands == input_bands(tiny["region"].settings["model"]["aspect"])
    # the pretrained normalisation is carried, the encoders start from the pretrained tensors
    assert meta.normalisation == load_checkpoint(pretrained)[1].normalisation
    with pytest.raises(CheckpointError, match="task 'nsp', expected 'soilorder'"):
        load_checkpoint(straight, expect_task="soilorder")


@pytest.mark.slow
def test_a_partial_whose_tensors_do_not_fit_starts_over(
    tiny: dict, pretrained: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The same settings and data, but weights this code does not take (a mapper or torchvision
    updated between the interruption and the rerun): a warning, then the run from its start,
    the same model as an uninterrupted run, not a load_state_dict traceback."""
    root, rows = tiny["root"], tiny["rows"][:12]
    straight = root / "fit_straight.pt"
    finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], straight, pretrained, rows,
             epochs=2)
    out = root / "fit.pt"
    _killed_after_first_epoch(monkeypatch, lambda: finetune(
        tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out, pretrained, rows, epochs=2))
    partial = root / "fit.pt.partial"
    state = _state(partial)
    name = next(iter(state["model"]))
    state["model"][name + "_renamed"] = state["model"].pop(name)
    torch.save(state, partial)
    with caplog.at_level("WARNING", logger="mapper.train"):
        result = finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out,
                          pretrained, rows, epochs=2)
    assert f"{partial}: does not fit this model" in caplog.text
    assert [h["epoch"] for h in result.history] == [1, 2] and not partial.exists()
    assert out.read_bytes() == straight.read_bytes()


def test_a_partial_made_for_another_mapped_area_is_not_resumed(
    tiny: dict, pretrained: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    """The boundary (or its buffer) places the crops: a partial written before it changed, from
    the same stacks, belongs to another run."""
    root, rows = tiny["root"], tiny["rows"][:12]
    out = root / "area.pt"
    _killed_after_first_epoch(monkeypatch, lambda: finetune(
        tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out, pretrained, rows, epochs=2))
    region = copy.deepcopy(tiny["region"])
    left, bottom, right, top = tiny["region"].area().bounds
    inset = root / "inset.geojson"  # the boundary 50 m in on every side: the same tiles
    inset.write_text(json.dumps(square_boundary(left + 50, bottom + 50, right - 50, top - 50)))
    region.settings["boundary"] = str(inset)
    assert region.tiles() == tiny["region"].tiles()
    with caplog.at_level("WARNING", logger="mapper.train"):
        result = finetune(region, "nsp", tiny["samples"], tiny["stacks"], out, pretrained, rows,
                          epochs=2)
    assert "belongs to another run" in caplog.text
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_a_partial_of_another_run_is_not_resumed(tiny: dict, pretrained: Path) -> None:
    root = tiny["root"]
    out = root / "other.pt"
    partial = root / "other.pt.partial"
    torch.save({"fingerprint": "something else", "epoch": 1, "step": 3}, partial)
    result = finetune(tiny["region"], "soilorder", tiny["samples"], tiny["stacks"], out,
                      None, np.flatnonzero(tiny["table"]["soil_order"].notna().to_numpy())[:20],
                      epochs=1)
    assert [h["epoch"] for h in result.history] == [1]
    assert out.exists() and not partial.exists()
    model, meta = load_checkpoint(out, expect_task="soilorder")
    assert meta.n_out == 7 and len(meta.classes) == 7


@pytest.mark.parametrize("content", [[1, 2, 3], {"weights": 1}, torch.zeros(2)])
def test_a_torch_file_that_is_no_training_partial_starts_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: object
) -> None:
    from mapper.training_resume import load_partial

    partial = tmp_path / "run.pt.partial"
    torch.save(content, partial)
    assert load_partial(partial, "abc") is None
    assert f"{partial}: not a training partial; starting over" in caplog.text


def test_a_missing_stack_is_one_error_naming_it(tiny: dict, pretrained: Path) -> None:
    """A stack path given by hand that is not there (a typo, a tile not yet stacked): one error
    naming it, not a traceback, and no checkpoint."""
    missing = tiny["root"] / "stack" / "R9999C9999.tif"
    out = tiny["root"] / "missing.pt"
    with pytest.raises(InputError, match=rf"^{re.escape(str(missing))}: no such stack; make it"):
        finetune(tiny["region"], "nsp", tiny["samples"], [*tiny["stacks"], missing], out,
                 pretrained, tiny["rows"])
    assert not out.exists()


def _stacks_changed(tiny: dict, folder: Path,
                    change: Callable[[rasterio.DatasetReader], object]) -> list[Path]:
    """Copies of the region's stacks in ``folder/stack``, each opened r+ and given to
    ``change`` (a tile stacked again since the samples were made)."""
    stacks = []
    for path in map(Path, tiny["stacks"]):
        again = folder / "stack" / path.name
        again.parent.mkdir(exist_ok=True)
        shutil.copy(path, again)
        with rasterio.open(again, "r+") as ds:
            change(ds)
        stacks.append(again)
    return stacks


def test_a_training_point_on_a_pixel_without_data_is_warned_of(tiny: dict, tmp_path: Path,
                                                               caplog) -> None:
    """A tile stacked again since the samples were made, now without data at a training point
    (training reads the stacks as ancient): the point teaches nothing, and the job says so once,
    with where it lies and how to train on it, not only through a lower count of queries."""
    row = int(tiny["rows"][0])
    table = tiny["table"]
    x, y = float(table["x"].iloc[row]), float(table["y"].iloc[row])

    def hole(ds: rasterio.DatasetReader) -> None:
        rr, cc = ds.index(x, y)
        if 0 <= rr < ds.height and 0 <= cc < ds.width:
            ds.write(np.full((ds.count, 1, 1), ds.nodata, dtype=ds.dtypes[0]),
                     window=Window(cc, rr, 1, 1))

    stacks = _stacks_changed(tiny, tmp_path, hole)
    with caplog.at_level("WARNING", logger="mapper.train"):
        finetune(tiny["region"], "nsp", tiny["samples"], stacks, None, None, tiny["rows"],
                 epochs=2)
    warned = [rec.getMessage() for rec in caplog.records if "without data" in rec.getMessage()]
    assert warned == [
        f"finetune nsp: 1 training point(s) lie on pixels the stacks leave without data (the "
        f"first at x {x:.0f}, y {y:.0f}) and teach nothing: a tile was stacked again since the "
        "samples were made; to train on them, make the samples again "
        "(-R results/<region>/samples/points.parquet)"]


def test_stacks_without_data_are_one_error_naming_the_region(tiny: dict,
                                                             tmp_path: Path) -> None:
    """Without a pretrained checkpoint the normalisation is fitted on crops of the stacks: stacks
    that hold no Sentinel-2 or elevation data there are one error naming the region and what
    was read, and no checkpoint."""
    stacks = _stacks_changed(tiny, tmp_path, lambda ds: ds.write(
        np.full((ds.count, ds.height, ds.width), ds.nodata, dtype=ds.dtypes[0])))
    out = tmp_path / "nsp.pt"
    with pytest.raises(InputError) as caught:
        finetune(tiny["region"], "nsp", tiny["samples"], stacks, out, None, tiny["rows"],
                 epochs=1)
    assert str(caught.value) == (
        f"region {tiny['region'].name}: no valid training pixel (all 9 Sentinel-2 bands and "
        "elevation finite) to fit the normalisation on; check that the stacks hold Sentinel-2 "
        "and elevation data (read in 64 crops drawn in its mapped area)")
    assert not list(tmp_path.glob("nsp.pt*"))


@pytest.mark.parametrize("kind", ["mapped", "context"])
def test_training_refuses_stacks_that_leave_out_a_stacked_tile(tiny: dict, tmp_path: Path,
                                                               kind: str) -> None:
    """A mapped tile given no stack would read as nodata: its crops, and the labelled points in
    it, would train on blank input; a context tile left out, the crops at the area's edge would
    see nodata where prediction's crops of the same pixels see the sources (prediction refuses
    both)."""
    region, stacks = tiny["region"], tiny["stacks"]
    by_tile = {Path(p).stem: p for p in stacks}
    mapped = set(region.tiles())
    left_out = sorted(t for t in by_tile if (t in mapped) == (kind == "mapped"))[1]
    some = [p for t, p in by_tile.items() if t != left_out]
    for run in (lambda: pretrain(region, tiny["samples"], some, tmp_path / "p.pt", epochs=1),
                lambda: finetune(region, "nsp", tiny["samples"], some, tmp_path / "n.pt", None,
                                 tiny["rows"], epochs=1)):
        with pytest.raises(InputError) as caught:
            run()
        assert str(caught.value) == (
            f"region {region.name}: no stack given for its stacked tiles {left_out} (mapped "
            "tiles and the context tiles within the crops' reach); pass every stack of the "
            "region (the workflow passes them all), e.g. "
            f"results/{region.name}/stack/*.tif")
    assert not list(tmp_path.glob("*.pt*"))


def test_a_task_without_labels_is_one_error_naming_the_observation_table(
    tiny: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An observation table whose soil_order column is empty in the region: the samples job
    warns, and the task's fine-tuning stops with one error naming the column, the observation
    table and the fix, before any epoch."""
    observed = pd.read_csv(tiny["observations"], dtype={"soil_order": str})
    observed["soil_order"] = ""
    table_path = tmp_path / "observations.csv"
    observed.to_csv(table_path, index=False)
    samples = tmp_path / "points.parquet"
    with caplog.at_level("WARNING", logger="mapper.samples"):
        build_samples(tiny["region"], table_path, tiny["stacks"], samples)
    assert (f"{table_path}: no point kept in region tiny has a soil_order label: the soilorder "
            "map cannot be trained") in caplog.text
    with pytest.raises(InputError) as caught:
        finetune(tiny["region"], "soilorder", samples, tiny["stacks"], tmp_path / "s.pt", None)
    assert str(caught.value) == (
        f"{samples}: no training point has a soil_order label (observation table "
        f"{table_path}); add soilorder labels to the observation table and run the same target "
        "again, or make only the other tasks' maps")
    assert not list(tmp_path.glob("s.pt*"))


def test_fine_tuning_refuses_rows_without_labels(tiny: dict) -> None:
    unlabelled = np.flatnonzero(tiny["table"]["nsp"].isna().to_numpy())[:3]
    with pytest.raises(InputError, match="without a nsp label"):
        finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], None, None, unlabelled)


@pytest.mark.slow
def test_a_partial_of_other_labels_is_not_resumed(
    tiny: dict, pretrained: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A job killed mid-way, then a label fixed (README "Rerunning after a data fix"): the rerun
    starts over rather than continue from epochs trained on the wrong labels; with the labels
    as they were, the same rerun resumes (the control)."""
    root, rows = tiny["root"], tiny["rows"]
    fixed = tiny["table"].copy()
    fixed.loc[fixed.index[rows[0]], "nsp"] = 1 - fixed["nsp"].iloc[rows[0]]
    save = training_loop.save_torch

    def save_then_stop(path: Path, state: dict) -> Path:
        save(path, state)
        raise KeyboardInterrupt

    for name, table, resumes in (("same.pt", tiny["table"], True), ("fixed.pt", fixed, False)):
        out = root / name
        monkeypatch.setattr(training_loop, "save_torch", save_then_stop)
        with pytest.raises(KeyboardInterrupt):  # killed after its first epoch's partial
            finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out, pretrained,
                     rows)
        assert out.with_name(f"{name}.partial").exists()
        monkeypatch.setattr(training_loop, "save_torch", save)
        caplog.clear()
        with caplog.at_level("INFO", logger="mapper.train"):  # the same epochs as the killed run
            result = finetune(tiny["region"], "nsp", table, tiny["stacks"], out, pretrained, rows)
        assert ("resuming from" in caplog.text) == resumes, name
        assert ("belongs to another run" in caplog.text) == (not resumes), name
        assert [h["epoch"] for h in result.history] == [1, 2], name  # resumed or not: both


@pytest.mark.slow
def test_a_partial_resumes_after_another_tasks_epochs_changed(
    tiny: dict, pretrained: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An NSP fine-tuning killed at its time limit, then the soil-order epochs changed before
    the rerun: the workflow reruns the NSP job only as incomplete, and it goes on from its
    partial (another task's epochs are not part of its run)."""
    root, rows = tiny["root"], tiny["rows"]
    region = copy.deepcopy(tiny["region"])
    region.settings["training"]["finetune_epochs"] = {"nsp": 2, "soilorder": 5}
    out = root / "epochs.pt"
    _killed_after_first_epoch(monkeypatch, lambda: finetune(
        region, "nsp", tiny["samples"], tiny["stacks"], out, pretrained, rows))
    region.settings["training"]["finetune_epochs"]["soilorder"] = 9
    with caplog.at_level("INFO", logger="mapper.train"):
        result = finetune(region, "nsp", tiny["samples"], tiny["stacks"], out, pretrained, rows)
    assert f"resuming from {out}.partial after epoch 1" in caplog.text
    assert [h["epoch"] for h in result.history] == [1, 2]


def test_aspect_as_components_trains_and_predicts_with_eleven_covariates(
    tiny: dict, pretrained: Path, tmp_path: Path
) -> None:
    """``model.aspect: components``: the covariate encoder takes 11 bands, the checkpoint names
    them and carries the encoding, and a tile is predicted from it. A checkpoint pretrained with
    the other encoding is refused by name, before any tensor is loaded."""
    region = copy.deepcopy(tiny["region"])
    region.settings["model"]["aspect"] = "components"
    out = tmp_path / "nsp.pt"
    finetune(region, "nsp", tiny["samples"], tiny["stacks"], out, None, tiny["rows"], epochs=1)
    model, meta = load_checkpoint(out, expect_task="nsp", expect_size="demo")
    assert model.cfg.aspect == "components" and model.cfg.n_cov_bands == 11
    assert meta.bands == input_bands("components") and meta.bands[11:13] == [
        "aspect_north", "aspect_east"]
    assert Normaliser.from_dict(meta.normalisation).aspect == "components"
    have = {Path(p).stem: p for p in tiny["stacks"]}
    tile = next(t for t in region.tiles() if have.keys() >= {t, *region.tile_context(t)})
    stacks = [have[t] for t in sorted({tile, *region.tile_context(tile)})]
    predicted = tmp_path / f"{tile}.tif"
    predict_tile(region, "nsp", tile, out, stacks, predicted,
                 options=PredictOptions(batch_size=16, progress=False))
    with rasterio.open(predicted) as src:
        p = src.read(1)
    assert np.isfinite(p).any() and ((p[np.isfinite(p)] >= 0) & (p[np.isfinite(p)] <= 1)).all()
    made = load_checkpoint(pretrained)[0].cfg.aspect
    other = {"number": "components", "components": "number"}[made]
    region.settings["model"]["aspect"] = other
    with pytest.raises(CheckpointError, match=rf"^{re.escape(str(pretrained))}: pretrained with "
                                              f"the aspect as {made}, but model.aspect is "
                                              f"{other}; pretrain again"):
        finetune(region, "nsp", tiny["samples"], tiny["stacks"], tmp_path / "no.pt", pretrained,
                 tiny["rows"], epochs=1)
    assert not (tmp_path / "no.pt").exists()


def test_a_checkpoint_pretrained_with_other_model_settings_is_refused_by_name(
    tiny: dict, pretrained: Path, tmp_path: Path
) -> None:
    """Other pixel-query settings shift every stage's tensors: one error naming the checkpoint,
    the setting and the fix, not PyTorch's size-mismatch traceback."""
    region = copy.deepcopy(tiny["region"])
    made = bool(load_checkpoint(pretrained)[0].cfg.pixel_query)
    region.settings["model"]["pixel_query"] = not made
    out = tmp_path / "no.pt"
    with pytest.raises(CheckpointError) as exc:
        finetune(region, "nsp", tiny["samples"], tiny["stacks"], out, pretrained, tiny["rows"],
                 epochs=1)  # fmt: skip
    message = str(exc.value)
    assert message.startswith(f"{pretrained}: pretrained with other model settings: pixel_query ")
    assert message.endswith("pretrain again with the region's settings") and "\n" not in message
    assert not out.exists()


def test_a_diverged_training_stops_without_a_checkpoint(tiny: dict, tmp_path: Path,
                                                        monkeypatch) -> None:
    """A non-finite loss (too high a learning rate) would leave NaN weights that map nothing:
    the job stops at that step with the fix, and writes no checkpoint."""
    real = training_loop.task_loss
    calls = []

    def diverging(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        if len(calls) < 2:
            return loss, terms
        return loss * float("nan"), {**terms, "total": float("nan")}

    monkeypatch.setattr(training_loop, "task_loss", diverging)
    out = tmp_path / "nsp.pt"
    with pytest.raises(TrainingError, match=r"^finetune nsp: non-finite loss at epoch 1, step 2 "
                                            r".*lower training\.lr_max"):
        finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out, None, tiny["rows"],
                 epochs=1)  # fmt: skip
    assert not out.exists()


def test_a_non_finite_gradient_stops_training_before_the_step(tiny: dict, tmp_path: Path,
                                                               monkeypatch) -> None:
    """A finite loss whose gradient is not (an overflow in the backward pass) would write NaN
    weights at that step, unseen on the last one: the job stops there and writes nothing."""
    real = training_loop.task_loss
    calls = []

    def overflowing(*args, **kwargs):
        loss, terms = real(*args, **kwargs)
        calls.append(1)
        if len(calls) < 2:
            return loss, terms
        # sqrt at 0: the value 0, the gradient 0 * inf = NaN
        return loss + torch.sqrt(loss * 0.0), terms

    monkeypatch.setattr(training_loop, "task_loss", overflowing)
    out = tmp_path / "nsp.pt"
    with pytest.raises(TrainingError, match=r"^finetune nsp: non-finite gradient at epoch 1, "
                                            r"step 2 .*lower training\.lr_max"):
        finetune(tiny["region"], "nsp", tiny["samples"], tiny["stacks"], out, None, tiny["rows"],
                 epochs=1)  # fmt: skip
    assert not out.exists()


def test_samples_of_another_region_are_refused(tiny: dict, tmp_path: Path) -> None:
    """Samples are positions on their region's stacks: another region's table would train on
    blank crops."""
    region = copy.deepcopy(tiny["region"])
    object.__setattr__(region, "name", "elsewhere")
    for run in (lambda: pretrain(region, tiny["samples"], tiny["stacks"], tmp_path / "p.pt"),
                lambda: finetune(region, "nsp", tiny["samples"], tiny["stacks"],
                                 tmp_path / "f.pt")):  # fmt: skip
        with pytest.raises(InputError, match=rf"^{re.escape(str(tiny['samples']))}: samples of "
                                             r"region \w+, not elsewhere; give results/elsewhere/"):
            run()
    assert not list(tmp_path.iterdir())
