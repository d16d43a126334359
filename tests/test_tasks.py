"""The task registry: one definition that the command line, losses, checkpoints, samples and
products all read, and the errors a wrong task name or a bad task definition gives."""

from __future__ import annotations

import argparse
import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mapper.bands import SOIL_ORDERS
from mapper.cli import build_parser, main
from mapper.errors import CheckpointError, ConfigError, InputError
from mapper.losses import IGNORE_INDEX, info_nce, task_loss
from mapper.models.checkpoint import load_checkpoint, save_checkpoint
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo, MiSoOutput
from mapper.products import product_paths
from mapper.products.colours import colour_table, hex_colour, style_qml
from mapper.samples import OBSERVATION_COLUMNS, SAMPLE_COLUMNS, read_observations
from mapper.splits import labelled
from mapper.tasks import PRETRAIN, TASKS, Task, get_task, task_names

torch.set_num_threads(1)

BANDS = [f"band{i}" for i in range(19)]

REFERENCE_LOSSES = {
    # the authors' weights: NSP = BCE + 0.1 NCE(visual, geo) + 0.1 NCE(sat, cov);
    # soil order = CE + 1.0 CE(geo head) + 0.1 NCE(sat, cov)
    "nsp": (("bce", 1.0), ("nce_visual_geo", 0.1), ("nce_sat_cov", 0.1)),
    "soilorder": (("ce", 1.0), ("ce_geo", 1.0), ("nce_sat_cov", 0.1)),
}


def test_the_registry_holds_the_two_map_tasks() -> None:
    assert list(TASKS) == ["nsp", "soilorder"] and PRETRAIN not in TASKS
    assert all(name == t.name for name, t in TASKS.items())
    nsp, soil = TASKS["nsp"], TASKS["soilorder"]
    assert (nsp.kind, nsp.n_outputs, nsp.output_names) == ("binary", 1, ["nsp"])
    assert nsp.classes == ("absent", "present") and nsp.label_column == "nsp"
    assert (soil.kind, soil.n_outputs) == ("multiclass", 7)
    assert soil.output_names == SOIL_ORDERS == list(soil.classes)
    assert soil.label_column == "soil_order"
    assert {n: t.loss_weights for n, t in TASKS.items()} == REFERENCE_LOSSES
    assert sorted(task_names("binary") + task_names("multiclass")) == sorted(TASKS)


def test_an_unknown_task_is_one_line_naming_the_known_ones() -> None:
    for name in ("ph", "", "NSP", PRETRAIN):
        with pytest.raises(ConfigError) as exc:
            get_task(name)
        assert str(exc.value) == f"unknown task {name!r}; choose one of nsp, soilorder"
    assert get_task("soilorder") is TASKS["soilorder"]


def _task_options(parser: argparse.ArgumentParser) -> dict[str, list[str] | None]:
    """``{command: choices of its --task}`` for every command that has one."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for command, p in sub.choices.items():
        for action in p._actions:
            if "--task" in action.option_strings:
                out[command] = action.choices
    return out


def test_every_task_option_of_the_command_line_offers_the_registry() -> None:
    options = _task_options(build_parser())
    assert sorted(options) == ["cv-fold", "finetune", "mosaic", "predict", "report", "uncertainty"]
    assert all(choices == list(TASKS) for choices in options.values()), options


def test_the_command_line_refuses_an_unknown_task(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", "--region", "demo", "--task", "ph", "--out", "x.md", "f.parquet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --task: invalid choice: 'ph'" in err
    assert err.rstrip().endswith("(choose from 'nsp', 'soilorder')"), err


def _output(task: Task) -> tuple[MiSoOutput, torch.Tensor, torch.Tensor]:
    """Random model outputs of ``task``'s width and labels of its kind (some unlabelled)."""
    g = torch.Generator().manual_seed(7)
    emb = [torch.randn(4, 5, 8, generator=g) for _ in range(4)]
    out = MiSoOutput(*emb, logits=torch.randn(4, 5, task.n_outputs, generator=g),
                     geo_logits=torch.randn(4, 5, task.n_outputs, generator=g))
    mask = torch.rand(4, 5, generator=g) > 0.3
    labels = torch.randint(0, len(task.classes), (4, 5), generator=g)
    if task.binary:
        return out, labels.float(), mask
    return out, labels.masked_fill(~mask, IGNORE_INDEX), mask


@pytest.mark.parametrize("name", list(TASKS))
def test_each_task_loss_is_its_weighted_terms(name: str) -> None:
    task = TASKS[name]
    out, target, mask = _output(task)
    total, logged = task_loss(name, out, target, mask)
    # the terms computed here from torch's own losses, not from mapper's
    labelled_points = mask if task.binary else target != IGNORE_INDEX

    def supervised(logits: torch.Tensor) -> torch.Tensor:
        if task.binary:
            return F.binary_cross_entropy_with_logits(logits[..., 0][mask], target[mask])
        return F.cross_entropy(logits[labelled_points], target[labelled_points])

    terms = {"bce": supervised(out.logits), "ce": supervised(out.logits),
             "bce_geo": supervised(out.geo_logits), "ce_geo": supervised(out.geo_logits),
             "nce_visual_geo": info_nce(out.visual, out.geo),
             "nce_sat_cov": info_nce(out.sat, out.cov)}
    expected = sum(w * terms[t] for t, w in REFERENCE_LOSSES[name])
    torch.testing.assert_close(total, expected)
    assert list(logged) == [t for t, _ in REFERENCE_LOSSES[name]] + ["total"]


@pytest.fixture(scope="module")
def models() -> dict[str, MiSo]:
    torch.manual_seed(0)
    return {name: MiSo(ModelConfig.named("demo"), n_out=t.n_outputs) for name, t in TASKS.items()}


@pytest.mark.parametrize("name", list(TASKS))
def test_a_checkpoint_of_each_task_carries_its_outputs(name: str, models: dict[str, MiSo],
                                                       tmp_path: Path) -> None:
    task = TASKS[name]
    path = save_checkpoint(tmp_path / f"{name}.pt", models[name], task=name, bands=BANDS,
                           normalisation={}, classes=task.output_names)
    model, meta = load_checkpoint(path, expect_task=name)
    assert meta.n_out == model.n_out == task.n_outputs and meta.classes == task.output_names
    # a model of another task's width, or other names, is refused when saved
    other = next(m for n, m in models.items() if n != name)
    with pytest.raises(ConfigError, match=f"task {name} has {task.n_outputs}"):
        save_checkpoint(tmp_path / "wide.pt", other, task=name, bands=BANDS, normalisation={},
                        classes=task.output_names)
    with pytest.raises(ConfigError, match="named"):
        save_checkpoint(tmp_path / "names.pt", models[name], task=name, bands=BANDS,
                        normalisation={}, classes=[c.upper() for c in task.output_names])
    assert not (tmp_path / "wide.pt").exists() and not (tmp_path / "names.pt").exists()


def test_a_checkpoint_whose_outputs_disagree_with_its_task_is_refused(
    models: dict[str, MiSo], tmp_path: Path
) -> None:
    path = save_checkpoint(tmp_path / "soilorder.pt", models["soilorder"], task="soilorder",
                           bands=BANDS, normalisation={}, classes=SOIL_ORDERS)
    payload = torch.load(path, weights_only=True)
    payload["classes"] = SOIL_ORDERS[::-1]  # e.g. written by a version with another class order
    torch.save(payload, tmp_path / "reordered.pt")
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(tmp_path / "reordered.pt", expect_task="soilorder")
    assert str(exc.value).startswith(f"{tmp_path / 'reordered.pt'}: 7 logits named ['Spodosols'")
    assert str(exc.value).endswith("; retrain") and "\n" not in str(exc.value)
    payload["task"] = "ph"
    torch.save(payload, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="unknown task 'ph'"):
        load_checkpoint(tmp_path / "foreign.pt")
    # pretraining is a checkpoint, not a map task: no outputs to agree with
    pre = save_checkpoint(tmp_path / "pretrain.pt", models["nsp"], task=PRETRAIN, bands=BANDS,
                          normalisation={}, classes=[])
    assert load_checkpoint(pre, expect_task=PRETRAIN)[1].classes == []


def test_observations_and_samples_carry_every_task_label(tmp_path: Path) -> None:
    labels = [t.label_column for t in TASKS.values()]
    assert OBSERVATION_COLUMNS == ["obs_id", "lon", "lat", "date", *labels]
    assert SAMPLE_COLUMNS[9:12] == ["nsp", "soil_order", "soil_order_name"]
    obs = tmp_path / "obs.csv"
    obs.write_text("obs_id,lon,lat,date,nsp,soil_order\n"
                   "a,-149,64.5,2020-07-01,1, gelisols\n"
                   "b,-149,64.6,2020-07-01,,\n"
                   "c,-149,64.7,2020-07-01,0,Histosols\n")
    table = read_observations(obs)
    assert table["nsp"].tolist() == [1, pd.NA, 0]
    assert table["soil_order"].tolist() == [2, pd.NA, 3]
    assert table["soil_order_name"].tolist() == ["Gelisols", pd.NA, "Histosols"]
    assert labelled(table, "nsp").tolist() == [True, False, True]
    obs.write_text("obs_id,lon,lat,date,nsp,soil_order\na,-149,64.5,2020-07-01,1,Vertisols\n")
    with pytest.raises(InputError, match=r"unknown soil order name\(s\) Vertisols; allowed: "
                                        "Andisols, Entisols"):
        read_observations(obs)


def test_products_and_styles_follow_the_kind(tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert set(product_paths(out / "nsp_demo.tif", "nsp")) == {"cog", "quicklook", "style",
                                                               "item"}
    paths = product_paths(out / "soilorder_demo.tif", "soilorder")
    assert paths["probabilities"] == out / "soilorder_demo_probabilities.tif"
    nsp = ET.fromstring(style_qml(TASKS["nsp"]).split("\n", 1)[1])
    stops = [(float(i.get("value")), i.get("color")) for i in nsp.iter("item")]
    assert stops == [(v, hex_colour(rgb)) for v, rgb in TASKS["nsp"].ramp]
    soil = ET.fromstring(style_qml(TASKS["soilorder"]).split("\n", 1)[1])
    entries = [(e.get("label"), e.get("color")) for e in soil.iter("paletteEntry")]
    assert entries == [(c, hex_colour(rgb)) for c, rgb in zip(SOIL_ORDERS,
                                                              TASKS["soilorder"].colours,
                                                              strict=True)]
    table = colour_table(TASKS["soilorder"].colours)
    assert len(table) == 8 and table[255] == (0, 0, 0, 0)


def test_a_bad_task_definition_is_refused_where_it_is_written() -> None:
    soil = TASKS["soilorder"]
    cases = {
        "colours for": {"colours": soil.colours[:-1]},
        "supervised term": {"loss_weights": (("nce_sat_cov", 0.1), ("ce", 1.0))},
        "loss terms": {"loss_weights": (("ce", 1.0), ("bce_geo", 1.0))},
        "kind": {"kind": "ordinal"},
        "other than 'pretrain'": {"name": PRETRAIN},
        "two classes": {"kind": "binary", "ramp": ((0.0, (0, 0, 0)), (1.0, (9, 9, 9)))},
    }
    for problem, change in cases.items():
        with pytest.raises(ConfigError, match=problem) as exc:
            dataclasses.replace(soil, **change)
        assert str(exc.value).startswith("task ") and "mapper/tasks.py" in str(exc.value)


def test_tagged_task_names_the_raster_when_its_tag_is_missing_or_unknown() -> None:
    from mapper.errors import InputError
    from mapper.tasks import tagged_task

    assert tagged_task("maps/nsp_demo.tif", {"MAPPER_TASK": "nsp"}).name == "nsp"
    with pytest.raises(InputError, match=r"^x.tif: no MAPPER_TASK tag: not a raster"):
        tagged_task("x.tif", {})
    with pytest.raises(InputError, match=r"^y.tif: MAPPER_TASK 'ice' is not a task"):
        tagged_task("y.tif", {"MAPPER_TASK": "ice"})
