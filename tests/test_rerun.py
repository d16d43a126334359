"""Single-tile reruns: after a complete tiny run, what a changed tile or source makes Snakemake
plan again (dry runs on a copy of the completed project; 3 x 3 tiles of 128 px).

- forcing one tile's stack (``-R results/<region>/stack/<tile>.tif maps/nsp_<region>.tif``) plans
  that stack, the predictions of the tile and of its neighbours in the region (their crops read
  it as context) and the mosaic; the models are not retrained (the training rules read the stacks
  as ``ancient``);
- a stack file rewritten with new content plans the same predictions and mosaic;
- a changed DEM source plans every stack (they all read it; the context tiles' too), every
  prediction and the mosaic;
- a changed model setting retrains (pretraining, fine-tuning) and plans every prediction and the
  mosaic, and no stack;
- a changed stack setting plans every stack and the samples (their covariates are read from the
  stacks), so training, every prediction and the mosaic;
- a changed demo seed makes the demo's sources again;
- the boundary file is an input of every job that reads the mapped area (the demo sources,
  samples, training, cross-validation, prediction, products), and an edited boundary plans them.

Snakemake (8+) records checksums of inputs smaller than ``--max-checksum-file-size`` (1 MB), and
a newer file with the recorded checksum does not trigger a rerun: a bare ``touch`` of a small
file changes nothing. The statewide stacks and sources are far larger, so there a ``touch`` is a
change; ``--max-checksum-file-size 0`` makes the tiny files behave the same.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from workflow_project import (
    WorkflowProject,
    copy_project,
    planned_jobs,
    rewrite_yaml,
    run_snakemake,
)

pytestmark = [pytest.mark.slow, pytest.mark.workflow]

CHECKSUM_THRESHOLD = 1_000_000  # Snakemake's default --max-checksum-file-size (bytes)


@pytest.fixture
def project(completed_tiny: WorkflowProject, tmp_path: Path) -> WorkflowProject:
    return copy_project(completed_tiny, tmp_path / "project")


def lattice_neighbours(project: WorkflowProject, tile: str) -> list[str]:
    """The tile's 8 lattice neighbours that are in the region (tile ids RrrrrCcccc)."""
    row, col = (int(v) for v in re.fullmatch(r"R(\d{4})C(\d{4})", tile).groups())
    around = {
        f"R{row + dr:04d}C{col + dc:04d}"
        for dr in (-1, 0, 1)
        for dc in (-1, 0, 1)
        if (dr, dc) != (0, 0)
    }
    return sorted(around & set(project.tiles))


def planned_outputs(project: WorkflowProject, *targets: str, extra: list[str]) -> dict:
    """Rule -> sorted outputs of the jobs a dry run plans."""
    run = run_snakemake(project, *targets, extra_args=["--dry-run", *extra])
    plan: dict[str, list[str]] = {}
    rule = None
    for line in run.log.splitlines():
        if m := re.match(r"^\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+output: (\S+?),?(?: |$)", line)):
            plan.setdefault(rule, []).append(m.group(1))
            rule = None
    return {k: sorted(v) for k, v in plan.items()}


def corner_and_centre(project: WorkflowProject) -> tuple[str, str]:
    tiles = sorted(project.tiles)
    return tiles[0], tiles[len(tiles) // 2]


def test_the_completed_run_plans_nothing(project: WorkflowProject) -> None:
    assert planned_jobs(project, *project.maps(), *project.reports()) == {}


@pytest.mark.parametrize("where", ["corner", "centre"])
def test_forcing_one_stack_plans_its_tile_neighbours_and_mosaic(
    project: WorkflowProject, where: str
) -> None:
    corner, centre = corner_and_centre(project)
    tile = corner if where == "corner" else centre
    near = lattice_neighbours(project, tile)
    assert len(near) == (3 if where == "corner" else 8)
    nsp_map = f"maps/nsp_{project.region}.tif"

    jobs = planned_jobs(project, nsp_map, extra_args=["-R", project.stack(tile)])
    print(f"\n-R {project.stack(tile)} {nsp_map}: {jobs}")
    assert jobs == {"stack": 1, "predict": 1 + len(near), "mosaic_probability": 1}

    plan = planned_outputs(project, nsp_map, extra=["-R", project.stack(tile)])
    r = project.region
    assert plan["stack"] == [project.stack(tile)]
    assert plan["predict"] == sorted(f"results/{r}/predict/nsp/{t}.tif" for t in [tile, *near])

    both = planned_jobs(project, *project.maps(), extra_args=["-R", project.stack(tile)])
    assert both == {
        "stack": 1, "predict": 2 * (1 + len(near)), "mosaic_probability": 1, "mosaic_classes": 1,
    }  # fmt: skip


def test_a_rewritten_stack_plans_the_same_predictions(project: WorkflowProject) -> None:
    corner, _ = corner_and_centre(project)
    stack = project.path(project.stack(corner))
    with rasterio.open(stack, "r+") as dst:  # a fixed source changes some pixels of the tile
        window = rasterio.windows.Window(0, 0, 8, 8)
        band = list(dst.descriptions).index("elevation") + 1
        dst.write(dst.read(band, window=window) + 1.0, band, window=window)
    near = lattice_neighbours(project, corner)
    nsp_map = f"maps/nsp_{project.region}.tif"
    jobs = planned_jobs(project, nsp_map)
    print(f"\nrewritten {project.stack(corner)}: {jobs}")
    assert jobs == {"predict": 1 + len(near), "mosaic_probability": 1}


def test_a_touched_stack_reruns_as_a_changed_one(project: WorkflowProject) -> None:
    corner, _ = corner_and_centre(project)
    stack = project.path(project.stack(corner))
    os.utime(stack)  # now: newer than every output of the run
    near = lattice_neighbours(project, corner)
    nsp_map = f"maps/nsp_{project.region}.tif"
    by_time = planned_jobs(project, nsp_map, extra_args=["--max-checksum-file-size", "0"])
    assert by_time == {"predict": 1 + len(near), "mosaic_probability": 1}
    default = planned_jobs(project, nsp_map)
    if stack.stat().st_size < CHECKSUM_THRESHOLD:  # same content, checksum recorded: no rerun
        assert default == {}
    else:
        assert default == by_time


def test_a_changed_dem_reruns_every_stack(project: WorkflowProject) -> None:
    dem = project.path(f"resources/{project.region}/sources/dem.tif")
    n = len(project.tiles)
    nsp_map = f"maps/nsp_{project.region}.tif"
    expected = {"stack": len(project.stacked), "predict": n, "mosaic_probability": 1}

    os.utime(dem)
    touched = planned_jobs(project, nsp_map, extra_args=["--max-checksum-file-size", "0"])
    print(f"\ntouched {dem.name}: {touched}")
    assert touched == expected

    correct_dem(project)
    changed = planned_jobs(project, nsp_map)
    print(f"rewritten {dem.name}: {changed}")
    assert changed == expected


def test_a_changed_model_setting_retrains(project: WorkflowProject) -> None:
    settings = yaml.safe_load(project.region_file.read_text())
    model = settings.setdefault("model", {})
    model["pixel_query"] = not model.get("pixel_query", False)
    rewrite_yaml(project.region_file, settings)  # the file's time kept: the setting is the change
    n = len(project.tiles)
    nsp_map = f"maps/nsp_{project.region}.tif"
    jobs = planned_jobs(project, nsp_map)
    print(f"\nmodel.pixel_query -> {model['pixel_query']}: {jobs}")
    assert jobs == {"region_settings": 1, "pretrain": 1, "finetune": 1, "predict": n,
                    "mosaic_probability": 1}


def test_local_weights_replaced_in_place_retrain(project: WorkflowProject) -> None:
    """SatlasPretrain weights given as a local file: the model settings file records the file's
    checksum (rule region_settings), so new weights under the same name retrain, as another
    file name would; the same bytes again retrain nothing."""
    weights = project.path("weights/satlas.pth")
    weights.parent.mkdir()
    weights.write_bytes(b"first weights")
    settings = yaml.safe_load(project.region_file.read_text())
    settings.setdefault("model", {})["satlas_weights"] = "weights/satlas.pth"
    rewrite_yaml(project.region_file, settings)
    nsp_map = f"maps/nsp_{project.region}.tif"
    run_snakemake(project, nsp_map, extra_args=["--touch", "--cores", "1"])  # recorded as run
    assert planned_jobs(project, nsp_map) == {}
    weights.write_bytes(b"second weights")
    jobs = planned_jobs(project, nsp_map)
    print(f"\nlocal weights replaced: {jobs}")
    assert jobs == {"region_settings": 1, "pretrain": 1, "finetune": 1,
                    "predict": len(project.tiles), "mosaic_probability": 1}


def test_one_tasks_epochs_retrain_that_task_alone(project: WorkflowProject) -> None:
    """Each task's fine-tuning epochs are a settings file of their own: giving the soil-order
    model more epochs retrains it alone (not pretraining, nor the NSP model, nor any fold: the
    tiny region's folds take evaluation.epochs), and the same epochs written per task instead of
    as one number plan nothing."""
    settings = yaml.safe_load(project.region_file.read_text())
    epochs = settings["training"]["finetune_epochs"]
    assert isinstance(epochs, int)
    targets = [*project.maps(), *project.reports()]
    settings["training"]["finetune_epochs"] = {"nsp": epochs, "soilorder": epochs}
    rewrite_yaml(project.region_file, settings)
    assert planned_jobs(project, *targets) == {}
    settings["training"]["finetune_epochs"] = {"nsp": epochs, "soilorder": epochs + 1}
    rewrite_yaml(project.region_file, settings)
    jobs = planned_jobs(project, *targets)
    print(f"\ntraining.finetune_epochs.soilorder -> {epochs + 1}: {jobs}")
    assert jobs == {"region_settings": 1, "finetune": 1, "predict": len(project.tiles),
                    "mosaic_classes": 1}
    plan = run_snakemake(project, *targets, extra_args=["--dry-run"]).log
    assert f"results/{project.region}/settings/finetune_soilorder.json" in plan
    assert f"results/{project.region}/models/soilorder.pt" in plan
    assert f"results/{project.region}/models/nsp.pt" not in plan


def correct_dem(project: WorkflowProject) -> Path:
    """Raise the project's DEM by 0.5 m where it has data (a corrected DEM); returns it."""
    dem = project.path(f"resources/{project.region}/sources/dem.tif")
    with rasterio.open(dem, "r+") as dst:
        data = dst.read(1)
        dst.write(np.where(data != dst.nodata, data + 0.5, data), 1)
    return dem


def test_a_changed_training_setting_with_a_corrected_dem_retrains(project: WorkflowProject
                                                                  ) -> None:
    """Both in one run: the stacks rerun for the DEM, and training, which reads them as
    ``ancient``, still reruns for its setting (it reads the settings as a file, not as params,
    which Snakemake does not compare downstream of a rerun ancient input)."""
    correct_dem(project)
    settings = yaml.safe_load(project.region_file.read_text())
    settings["training"]["pretrain_epochs"] += 1
    rewrite_yaml(project.region_file, settings)
    n = len(project.tiles)
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif")
    print(f"\ncorrected DEM and training.pretrain_epochs: {jobs}")
    assert jobs == {"region_settings": 1, "stack": len(project.stacked), "pretrain": 1,
                    "finetune": 1, "predict": n, "mosaic_probability": 1}


def test_a_changed_stack_setting_remakes_the_stacks_and_retrains(project: WorkflowProject
                                                                 ) -> None:
    """The stacks list the stack settings among their params, and the samples read them as
    their settings file (their covariates come from the stacks): the models then train on
    stacks made as the maps' are."""
    settings = yaml.safe_load(project.region_file.read_text())
    stack = settings.setdefault("stack", {})
    stack["aspect_from"] = "true_north" if stack.get("aspect_from") == "grid_north" \
        else "grid_north"
    rewrite_yaml(project.region_file, settings)
    n = len(project.tiles)
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif")
    print(f"\nstack.aspect_from -> {stack['aspect_from']}: {jobs}")
    assert jobs == {"region_settings": 1, "stack": len(project.stacked), "samples": 1,
                    "pretrain": 1, "finetune": 1, "predict": n, "mosaic_probability": 1}


def test_new_observations_with_a_corrected_dem_retrain(project: WorkflowProject) -> None:
    """The observation table reaches the samples through its settings file (rule
    region_settings records its checksum), so a new table retrains also when the stacks rerun
    in the same run, when Snakemake does not look at the samples' own inputs."""
    correct_dem(project)
    table = project.path(f"resources/{project.region}/sources/observations.csv")
    lines = table.read_text().splitlines(keepends=True)
    table.write_text("".join(lines[:-1]))  # the last observation withdrawn
    n = len(project.tiles)
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif")
    print(f"\ncorrected DEM and a new observation table: {jobs}")
    assert jobs == {"region_settings": 1, "stack": len(project.stacked), "samples": 1,
                    "pretrain": 1, "finetune": 1, "predict": n, "mosaic_probability": 1}


def test_a_changed_demo_seed_makes_the_demo_sources_again(project: WorkflowProject) -> None:
    settings = yaml.safe_load(project.region_file.read_text())
    settings["sources"]["sentinel2"]["seed"] = settings["sources"]["sentinel2"].get("seed", 1) + 1
    rewrite_yaml(project.region_file, settings)
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif")
    print(f"\nsources.sentinel2.seed changed: {jobs}")
    assert jobs.get("demo_sources") == 1 and jobs.get("stack") == len(project.stacked)


def planned_inputs(project: WorkflowProject, *targets: str) -> dict[str, list[list[str]]]:
    """Rule -> the input lists of the jobs a forced dry run plans (every job of the targets)."""
    run = run_snakemake(project, *targets, extra_args=["--dry-run", "--forceall"])
    plan: dict[str, list[list[str]]] = {}
    rule = None
    for line in run.log.splitlines():
        if m := re.match(r"^\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+input: (.*)$", line)):
            plan.setdefault(rule, []).append([p.strip() for p in m.group(1).split(",")])
            rule = None
    return plan


def test_the_boundary_is_an_input_of_what_reads_the_area(project: WorkflowProject) -> None:
    boundary = f"config/regions/{project.region}.geojson"  # relative to the project
    assert project.path(boundary).is_file()
    inputs = planned_inputs(project, *project.maps(), *project.reports())
    readers = ["demo_sources", "samples", "pretrain", "finetune", "cv_fold", "predict",
               "mosaic_probability", "mosaic_classes"]
    for rule in readers:
        assert inputs.get(rule), f"no {rule} job planned"
        assert all(boundary in job for job in inputs[rule]), rule
    assert not any(boundary in job for job in inputs["stack"])  # a stack does not read it

    # an edited boundary (a corner moved 20 m inward: the same tiles) plans what reads it
    path = project.path(boundary)
    data = json.loads(path.read_text())
    ring = data["features"][0]["geometry"]["coordinates"][0]
    ring[0] = ring[-1] = [ring[0][0] + 20.0, ring[0][1] + 20.0]
    path.write_text(json.dumps(data))
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif")
    print(f"\nedited {boundary}: {jobs}")
    assert {"demo_sources", "samples", "pretrain", "finetune", "predict",
            "mosaic_probability"} <= set(jobs)
    assert jobs["predict"] == len(project.tiles)


def test_folds_take_the_fine_tuning_epochs_only_when_theirs_are_null(project: WorkflowProject
                                                                     ) -> None:
    """A MiSo fold takes its task's fine-tuning epochs file when ``evaluation.epochs`` is null
    (it then trains that many epochs), a forest's fold never; with ``evaluation.epochs`` given,
    no fold takes it (changing a task's epochs reruns no fold)."""
    epochs_file = f"results/{project.region}/settings/finetune_"
    folds = planned_inputs(project, *project.reports())["cv_fold"]
    assert folds and not any(epochs_file in p for job in folds for p in job)
    settings = yaml.safe_load(project.region_file.read_text())
    settings["evaluation"]["epochs"] = None
    rewrite_yaml(project.region_file, settings)
    folds = planned_inputs(project, *project.reports())["cv_fold"]
    miso = [job for job in folds if f"results/{project.region}/models/pretrain.pt" in job]
    assert miso and len(miso) < len(folds)
    for job in folds:
        taken = [p for p in job if p.startswith(epochs_file)]
        assert len(taken) == (1 if job in miso else 0), job


def test_each_models_evaluation_settings_rerun_its_folds_alone(project: WorkflowProject) -> None:
    """A fold takes its own model's settings file (cv_rf, cv_miso): more trees rerun the
    forest's folds and the reports, other fold epochs MiSo's; neither retrains a map's model. A
    training setting reruns MiSo's folds and not the forest's (which read no stack or weights)."""
    targets = [*project.maps(), *project.reports()]
    original = project.region_file.read_text()
    settings = yaml.safe_load(original)
    folds = settings["evaluation"]["folds"] * len(settings["evaluation"]["splits"]) * 2  # tasks
    settings["evaluation"]["rf_trees"] += 1
    rewrite_yaml(project.region_file, settings)
    plan = planned_outputs(project, *targets, extra=[])
    print(f"\nevaluation.rf_trees -> {settings['evaluation']['rf_trees']}: {plan}")
    assert set(plan) == {"region_settings", "cv_fold", "report"}
    assert plan["region_settings"] == [f"results/{project.region}/settings/cv_rf.json"]
    assert len(plan["cv_fold"]) == folds and all("/rf_" in p for p in plan["cv_fold"])
    settings["evaluation"]["epochs"] += 1
    rewrite_yaml(project.region_file, settings)
    plan = planned_outputs(project, *targets, extra=[])
    print(f"and evaluation.epochs -> {settings['evaluation']['epochs']}: {plan}")
    assert len(plan["cv_fold"]) == 2 * folds and "finetune" not in plan
    settings = yaml.safe_load(original)  # the run's, with one MiSo setting changed
    settings["training"]["lr_max"] *= 2
    rewrite_yaml(project.region_file, settings)
    plan = planned_outputs(project, *targets, extra=[])
    print(f"training.lr_max doubled: {plan}")
    assert len(plan["cv_fold"]) == folds and not any("/rf_" in p for p in plan["cv_fold"])


def test_a_pretraining_setting_reruns_no_fold_of_the_ablation(project: WorkflowProject) -> None:
    """MiSo's folds take the training settings in ``cv_miso``, less those of pretraining alone:
    more pretraining epochs remake the pretraining, the models and maps and the folds that start
    from the pretrained checkpoint, and no fold of the ablation without pretraining (statewide a
    GPU job each), whose training they do not change."""
    targets = [*project.maps(), *project.reports()]
    settings = yaml.safe_load(project.region_file.read_text())
    settings["evaluation"]["ablation_no_pretrain"] = True
    rewrite_yaml(project.region_file, settings)
    ablation = [p for p in planned_outputs(project, *targets, extra=[])["cv_fold"]
                if "/miso_nopretrain_" in p]
    folds = settings["evaluation"]["folds"] * len(settings["evaluation"]["splits"]) * 2  # tasks
    assert len(ablation) == folds
    # the report's list of folds (a local job, run), then the folds recorded as run:
    # placeholders, then --touch records the jobs
    run_snakemake(project, f"results/{project.region}/settings/cv_plan.json",
                  extra_args=["--cores", "1"])
    for f in ablation:
        project.path(f).touch()
    run_snakemake(project, *ablation, extra_args=["--touch", "--cores", "1"])
    assert not any("/miso_nopretrain_" in p
                   for p in planned_outputs(project, *targets, extra=[]).get("cv_fold", []))
    settings["training"]["pretrain_epochs"] += 1
    rewrite_yaml(project.region_file, settings)
    plan = planned_outputs(project, *targets, extra=[])
    print(f"\ntraining.pretrain_epochs -> {settings['training']['pretrain_epochs']}: "
          f"{ {rule: len(outputs) for rule, outputs in plan.items()} }")
    assert plan["region_settings"] == [f"results/{project.region}/settings/training.json"]
    assert len(plan["pretrain"]) == 1 and len(plan["finetune"]) == 2
    assert sorted(plan["cv_fold"]) == sorted(
        p.replace("/miso_nopretrain_", "/miso_") for p in ablation)


def test_the_fold_count_draws_the_folds_again_not_the_models(project: WorkflowProject) -> None:
    """The folds are a file of their own (rule folds): another fold count draws them again and
    runs the new folds and the reports, and retrains no map's model (the samples, which the
    models read, hold no fold)."""
    settings = yaml.safe_load(project.region_file.read_text())
    settings["evaluation"]["folds"] += 1
    rewrite_yaml(project.region_file, settings)
    jobs = planned_jobs(project, *project.maps(), *project.reports())
    print(f"\nevaluation.folds -> {settings['evaluation']['folds']}: {jobs}")
    n = settings["evaluation"]["folds"] * len(settings["evaluation"]["splits"]) * 2 * 2
    assert jobs == {"region_settings": 2, "folds": 1, "cv_fold": n, "report": 2}  # folds, cv_plan


def test_prediction_and_evaluation_settings_changed_with_one_restacked_tile_rerun_all(
    project: WorkflowProject,
) -> None:
    """A data fix (one tile restacked) in the same run as a changed prediction setting and fold
    count: every tile is predicted again, not only the restacked one and its neighbours (a map
    of mixed tiles stating the new settings), and the folds are drawn again with the reports.
    Those jobs sit below the stacks, where Snakemake compares no params or input list once a
    stack reruns: they read these settings as files."""
    settings = yaml.safe_load(project.region_file.read_text())
    settings["prediction"]["min_weight"] = 0.01
    settings["evaluation"]["folds"] += 1
    rewrite_yaml(project.region_file, settings)
    corner, _ = corner_and_centre(project)
    n = len(project.tiles)
    jobs = planned_jobs(project, *project.maps(), *project.reports(),
                        extra_args=["-R", project.stack(corner)])
    print(f"\nprediction.min_weight, evaluation.folds and -R {project.stack(corner)}: {jobs}")
    folds = settings["evaluation"]["folds"] * len(settings["evaluation"]["splits"]) * 2 * 2
    assert jobs == {"region_settings": 3, "stack": 1, "predict": 2 * n, "folds": 1,
                    "cv_fold": folds, "report": 2, "mosaic_probability": 1,
                    "mosaic_classes": 1}  # fmt: skip
    plan = planned_outputs(project, *project.reports(), extra=["-R", project.stack(corner)])
    assert plan["region_settings"] == [f"results/{project.region}/settings/{s}.json"
                                       for s in ("cv_plan", "folds")]


def test_a_changed_seed_trains_once_on_folds_drawn_again(project: WorkflowProject) -> None:
    """Another training.seed retrains every model and draws the folds again (their jobs read the
    new folds), in one run: the folds were once in the samples table, which the seed did not
    remake, so the folds stopped on a stale table and the command they gave retrained again."""
    settings = yaml.safe_load(project.region_file.read_text())
    settings["training"]["seed"] += 1
    rewrite_yaml(project.region_file, settings)
    jobs = planned_jobs(project, *project.maps(), *project.reports())
    print(f"\ntraining.seed -> {settings['training']['seed']}: {jobs}")
    assert jobs["folds"] == 1 and jobs["pretrain"] == 1 and jobs["finetune"] == 2
    assert "samples" not in jobs and jobs["cv_fold"] == 8
    run_snakemake(project, *project.reports(), extra_args=["--cores", "2"])
    assert planned_jobs(project, *project.reports()) == {}


def test_an_edited_description_remakes_the_products_alone(project: WorkflowProject) -> None:
    """The products state the region's description (the STAC Item) and synthetic flag beside
    their pixels: an edit of the description remakes each map product (no prediction), so the
    Item never says what the region file no longer does."""
    settings = yaml.safe_load(project.region_file.read_text())
    settings["description"] = f"{settings.get('description', '')} (edited)"
    rewrite_yaml(project.region_file, settings)
    jobs = planned_jobs(project, *project.maps())
    print(f"\nedited description: {jobs}")
    assert jobs == {"mosaic_probability": 1, "mosaic_classes": 1}
