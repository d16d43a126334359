"""The Snakemake workflow itself: lint, the tiny demo end to end, the statewide DAG, profiles,
and the HTML report (projects made by tests/workflow_project.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from rio_cogeo.cogeo import cog_validate
from workflow_project import (
    PROFILES,
    REPO,
    SNAKEFILE,
    WorkflowProject,
    make_project,
    make_statewide_project,
    planned_jobs,
    rewrite_yaml,
    run_snakemake,
    tiny_bounds,
)

from mapper.bands import CLASS_NODATA, SOIL_ORDERS
from mapper.config import Region, load_config, load_region


def test_lint_is_clean() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(SNAKEFILE), "--lint"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert "Lints for" not in log, log
    assert "in a good condition" in log


def test_rules_are_formatted_by_snakefmt() -> None:
    """The house style: ``snakefmt --check`` (line length from pyproject.toml) leaves no change."""
    files = [str(SNAKEFILE), *map(str, sorted((REPO / "workflow" / "rules").glob("*.smk")))]
    run = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *files],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr


def test_tiny_plan_has_every_stage(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    assert len(project.tiles) == 9
    assert len(project.stacked) == 25  # and the ring of context tiles (crops reach 32 px)
    jobs = planned_jobs(project, *project.maps(), *project.reports())
    n = len(project.tiles)
    assert jobs == {
        "demo_sources": 1, "stack": len(project.stacked), "samples": 1, "folds": 1,
        "pretrain": 1, "finetune": 2,
        # area, observations, stack, model, training, finetune_nsp, finetune_soilorder, cv_rf,
        # cv_miso, prediction, folds, cv_plan
        "region_settings": 12,
        "cv_fold": 2 * 2 * 2,  # tasks x models (rf, miso) x folds, one split
        "report": 2, "predict": 2 * n, "mosaic_probability": 1, "mosaic_classes": 1,
    }  # fmt: skip


def test_ensemble_members_and_coarser_maps_run_the_same_commands(tmp_path: Path) -> None:
    """prediction.ensemble 1 plans one more fine-tuning and one more prediction of every tile
    per task, and the uncertainty products; the members and the coarser out_res run the
    finetune and predict commands with the run's configuration changed in one setting."""
    project = make_project(tmp_path, prediction={"out_res": 10.0, "ensemble": 1})
    n = len(project.tiles)
    uncertainty = [f"maps/{task}_{project.region}_uncertainty.tif" for task in ("nsp",
                                                                                "soilorder")]
    jobs = planned_jobs(project, *uncertainty)
    assert {k: jobs[k] for k in ("finetune", "finetune_member", "predict", "predict_member",
                                 "mosaic_uncertainty")} == {
        "finetune": 2, "finetune_member": 2, "predict": 2 * n, "predict_member": 2 * n,
        "mosaic_uncertainty": 2}
    tile = project.tiles[0]
    run = run_snakemake(project, f"results/{project.region}/predict/nsp_m1/{tile}.tif",
                        f"results/{project.region}/predict_50m/nsp/{tile}.tif",
                        f"results/{project.region}/predict/nsp/{tile}.tif",
                        extra_args=["--dry-run", "--printshellcmds"])
    commands = job_commands(run.log)
    assert job_region(project, commands["finetune_member"]).settings["training"]["seed"] == 1
    assert job_region(project, commands["finetune"]).settings["training"]["seed"] == 0
    assert "--model results/tiny/models/nsp_m1.pt" in commands["predict_member"]
    assert job_region(project, commands["predict_at_res"]).settings["prediction"][
        "out_res"] == 50.0
    generic = re.sub(r"config-\w+\.yaml|\S+\.pt|\S+\.tif|\S+\.log", "X", commands["predict"])
    assert re.sub(r"config-\w+\.yaml|\S+\.pt|\S+\.tif|\S+\.log", "X",
                  commands["predict_at_res"]) == generic


def test_a_coarser_maps_predict_job_is_given_the_stacks_its_crops_read(tmp_path: Path) -> None:
    """Which crops a tile runs depends on the out cells it answers: with crops that abut
    (stride = crop, no stagger), a 50 m cell that straddles a tile edge sends the tile's crops
    into a neighbour that its 10 m crops never read. The job gets the stacks of its own out_res."""
    import dataclasses

    project = make_project(tmp_path, prediction={"out_res": 10.0, "crop_px": 32, "stride_px": 32,
                                                 "stagger_px": 0})
    region = load_region(load_config(project.path("config/config.yaml")), project.region)
    at_50 = dataclasses.replace(region, settings={
        **region.settings, "prediction": {**region.settings["prediction"], "out_res": 50.0}})
    tile = next(t for t in project.tiles if at_50.tile_context(t) != region.tile_context(t))
    run = run_snakemake(project, f"results/{project.region}/predict_50m/nsp/{tile}.tif",
                        extra_args=["--dry-run", "--printshellcmds"])
    command = job_commands(run.log)["predict_at_res"]
    given = re.findall(rf"results/{project.region}/stack/(R\d+C\d+)\.tif", command)
    assert given == job_region(project, command).tile_context(tile) == at_50.tile_context(tile)


def job_commands(log: str) -> dict[str, str]:
    """Rule -> the shell command of its last job in a ``--dry-run --printshellcmds`` log."""
    commands, rule = {}, None
    for line in log.splitlines():
        if m := re.match(r"^\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif rule and line.startswith("Shell command: "):
            commands[rule] = line.removeprefix("Shell command: ")
    return commands


def job_region(project: WorkflowProject, command: str) -> Region:
    """The region a ``python -m mapper`` command line loads (its --config and --region)."""
    args = command.split()
    config = project.path(args[args.index("--config") + 1])
    return load_region(load_config(config), args[args.index("--region") + 1])


def overridden_projects(tmp_path: Path) -> dict[str, tuple[WorkflowProject, list[str]]]:
    """Tiny projects and the Snakemake arguments that change two settings for the run without
    editing the region file: prediction.out_res 80 m (the file says 40 m) and training.seed 7.

    - ``--config``: ``regions`` names another region file (Snakemake reads a nested --config
      value as text, so typed values come from a file);
    - a second ``--configfile`` holding only ``regions``, the same other region file;
    - a second ``--configfile`` holding only ``region_overrides`` (merged over the region file).
    """
    def project_and_other_region(name: str) -> tuple[WorkflowProject, Path]:
        project = make_project(tmp_path / name)
        other = yaml.safe_load(project.region_file.read_text())
        other["prediction"]["out_res"] = 80.0
        other["training"]["seed"] = 7
        other_file = project.path("config/regions/tiny_site.yaml")
        other_file.write_text(yaml.safe_dump(other))
        return project, other_file

    def site_file(project: WorkflowProject, content: dict) -> str:
        project.path("site.yaml").write_text(yaml.safe_dump(content))
        return str(project.path("site.yaml"))

    cases = {}
    project, other = project_and_other_region("config-arg")
    cases["--config regions"] = (project, ["--config", f"regions={{tiny: {other}}}"])
    project, other = project_and_other_region("configfile-regions")
    site = site_file(project, {"regions": {"tiny": str(other)}})
    cases["--configfile regions"] = (project, ["--configfile", str(project.config), site])
    project = make_project(tmp_path / "configfile-overrides")
    site = site_file(project, {"region_overrides": {
        "tiny": {"prediction": {"out_res": 80.0}, "training": {"seed": 7}}}})
    cases["--configfile region_overrides"] = (project, ["--configfile", str(project.config), site])
    return cases


def test_overrides_reach_the_jobs(tmp_path: Path) -> None:
    """The configuration a job is given is the one the DAG was built from: a --config override
    and a partial second --configfile reach every command line (a dry run's commands, loaded as
    each command loads them), not only the DAG."""
    for case, (project, args) in overridden_projects(tmp_path).items():
        target = f"results/{project.region}/predict/nsp/{project.tiles[0]}.tif"
        run = run_snakemake(project, target, extra_args=["--dry-run", "--printshellcmds", *args])
        commands = job_commands(run.log)
        commands.pop("region_settings")  # Snakemake writes the sections itself: no command
        assert set(commands) == {"demo_sources", "stack", "samples", "pretrain", "finetune",
                                 "predict"}, case
        for rule, command in commands.items():
            region = job_region(project, command)
            assert region.settings["prediction"]["out_res"] == 80.0, (case, rule, command)
            assert region.settings["training"]["seed"] == 7, (case, rule, command)
    # without an override, the region file's settings
    plain = run_snakemake(project, target, extra_args=["--dry-run", "--printshellcmds"])
    region = job_region(project, job_commands(plain.log)["predict"])
    assert region.settings["prediction"]["out_res"] == 40.0
    assert region.settings["training"]["seed"] == 0


@pytest.mark.workflow
def test_user_files_with_spaces_and_brackets_reach_the_jobs_whole(tmp_path: Path) -> None:
    """Files a user names in the region file (sources of kind ``file``, the observation table)
    may have spaces and brackets in their paths: each job's command line gives them whole (a dry
    run's commands, split as the shell splits them)."""
    import shlex

    from pyproj import Transformer

    project = make_project(tmp_path / "project")
    folder = project.path("field data (2024)")
    folder.mkdir()
    files = {name: folder / f"{name} v2 (fixed).tif" for name in ("sentinel2", "dem", "climate")}
    for path in files.values():
        path.write_bytes(b"")  # read by the stack job only
    table = folder / "obs (1).csv"
    left, bottom, right, top = tiny_bounds(project.tile_px, 3)
    lon, lat = Transformer.from_crs("EPSG:3338", "EPSG:4326", always_xy=True).transform(
        (left + right) / 2, (bottom + top) / 2)
    table.write_text("obs_id,lon,lat,date,nsp,soil_order\n"
                     f"p1,{lon:.6f},{lat:.6f},2019-07-15,1,Gelisols\n")  # SYNTHETIC point
    settings = yaml.safe_load(project.region_file.read_text())
    for name, path in {**files, "observations": table}.items():
        settings["sources"][name] = {"kind": "file", "path": str(path)}
    rewrite_yaml(project.region_file, settings)
    run = run_snakemake(project, f"results/{project.region}/samples/points.parquet",
                        extra_args=["--dry-run", "--printshellcmds"])
    commands = {rule: shlex.split(command) for rule, command in job_commands(run.log).items()}
    stack = commands["stack"]
    for name, path in files.items():
        assert stack[stack.index(f"--{name}") + 1] == str(path), name
    samples = commands["samples"]
    assert samples[samples.index("--observations") + 1] == str(table)


@pytest.mark.parametrize("what", ["dem", "weights"])
def test_a_local_file_that_is_not_there_stops_the_plan_naming_it(tmp_path: Path,
                                                                   what: str) -> None:
    """A source or weights file the region file names by path, not there (a typo in a corrected
    file's path): one line naming it, not a silent "Nothing to be done" once the outputs made
    from it exist (Snakemake would take them as source files) or a MissingInputException."""
    project = make_project(tmp_path / "project")
    settings = yaml.safe_load(project.region_file.read_text())
    missing = project.path("fixed/dem v2.tif" if what == "dem" else "fixed/satlas.pth")
    if what == "dem":
        for name in ("sentinel2", "climate"):
            present = project.path(f"{name}.tif")
            present.write_bytes(b"")  # read by the stack job only
            settings["sources"][name] = {"kind": "file", "path": str(present)}
        settings["sources"]["dem"] = {"kind": "file", "path": str(missing)}
        kind = f"the dem file of region '{project.region}'"
    else:
        settings["model"]["satlas_weights"] = str(missing)
        kind = f"the SatlasPretrain weights of region '{project.region}'"
    rewrite_yaml(project.region_file, settings)
    run = run_snakemake(project, *project.maps(), extra_args=["--dry-run"], check=False)
    assert run.returncode != 0
    out = run.log
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: {kind} is not there; put the file there or fix its "
                      f"path in {project.region_file}"], out
    assert "Traceback" not in out and "Exception" not in out, out


@pytest.mark.workflow
def test_a_job_that_parses_the_workflow_again_takes_the_runs_settings(tmp_path: Path) -> None:
    """A cluster job (or a ``run:`` job) starts its own Snakemake, which parses the Snakefile
    again, possibly days after the DAG was built: it must take the run's settings file, named in
    the environment it inherits, not the region file as edited since. Here the exact command
    Snakemake spawned for a ``run:`` job is run again after the region file changed."""
    from mapper.config import RUN_CONFIG_ENV, read_yaml

    project = make_project(tmp_path / "p")
    target = project.path(f"results/{project.region}/settings/training.json")
    run = run_snakemake(project, str(target.relative_to(project.root)),
                        extra_args=["--cores", "1", "--verbose"])
    spawned = re.search(r"spawned job: (.+)$", run.log, flags=re.MULTILINE)
    assert spawned and "--mode 'subprocess'" in spawned.group(1), run.log
    seed = json.loads(target.read_text())["settings"]["seed"]
    (run_config,) = project.path(".snakemake/mapper").glob("config-*.yaml")
    assert f"settings of the run: {run_config}" in run.log  # the job inherited the name
    settings = read_yaml(project.region_file)
    settings["training"]["seed"] = seed + 7
    rewrite_yaml(project.region_file, settings)
    warning = f"warning: no {RUN_CONFIG_ENV} in this job's environment"
    for env, expected in (({**project.env, RUN_CONFIG_ENV: str(run_config)}, seed),
                          (project.env, seed + 7)):  # without the run's file: the edited one
        target.unlink()
        job = subprocess.run(spawned.group(1), shell=True, cwd=project.root, env=env,
                             capture_output=True, text=True, timeout=300, check=False)
        assert job.returncode == 0, job.stderr[-3000:]
        assert json.loads(target.read_text())["settings"]["seed"] == expected
        assert (warning in job.stderr) == (RUN_CONFIG_ENV not in env)
    gone = project.path(".snakemake/mapper/config-0000000000000000.yaml")
    job = subprocess.run(spawned.group(1), shell=True, cwd=project.root, timeout=300,
                         env={**project.env, RUN_CONFIG_ENV: str(gone)}, capture_output=True,
                         text=True, check=False)
    assert job.returncode != 0
    assert (f"error: {gone}: the run's settings file ({RUN_CONFIG_ENV}) is gone "
            "(.snakemake/mapper emptied during the run?); start the run again") in job.stderr


@pytest.mark.slow
@pytest.mark.workflow
def test_an_override_changes_what_a_job_makes(tmp_path: Path) -> None:
    """A job run with a partial second --configfile makes what the override says: the demo
    sources synthesized from the overriding seed."""
    project = make_project(tmp_path)
    site = project.path("site.yaml")
    site.write_text(yaml.safe_dump({"region_overrides": {
        "tiny": {"sources": {"sentinel2": {"seed": 7}}}}}))
    run_snakemake(project, f"resources/{project.region}/sources/manifest.json",
                  extra_args=["--cores", "1", "--configfile", str(project.config), str(site)])
    with rasterio.open(project.path(f"resources/{project.region}/sources/sentinel2.tif")) as ds:
        assert ds.tags()["MAPPER_SEED"] == "7"


def slurm_plan_resources(project: WorkflowProject, env: dict[str, str]) -> dict[str, list[dict]]:
    """Rule -> the resources of each job a dry run with the SLURM profile plans."""
    run = run_snakemake(
        project, *project.maps(), *project.reports(),
        extra_args=["--dry-run", "--profile", str(PROFILES / "slurm")], env=env,
    )  # fmt: skip
    plan: dict[str, list[dict]] = {}
    rule = None
    for line in run.log.splitlines():
        if m := re.match(r"^\s*(?:local)?rule (\w+):", line):  # group members indented
            rule = m.group(1)
        elif rule and (m := re.match(r"^\s+resources: (.*)$", line)):
            pairs = (kv.split("=", 1) for kv in m.group(1).split(", "))
            plan.setdefault(rule, []).append({k: v for k, v in pairs})
            rule = None
    return plan


def test_slurm_profile_takes_the_site_from_the_environment(tmp_path: Path) -> None:
    """The site's names as they are, names that are also Python's ("all", "open": Snakemake
    evaluates a profile's resources as Python) included."""
    project = make_project(tmp_path)
    site = {
        "MAPPER_SLURM_ACCOUNT": "open",
        "MAPPER_SLURM_PARTITION": "all",
        "MAPPER_SLURM_GPU_PARTITION": "gpu",
        "MAPPER_SLURM_GPU_MODEL": "a100",
    }
    plan = slurm_plan_resources(project, {**project.env, **site})
    for rule in ("pretrain", "finetune", "predict"):
        for res in plan[rule]:
            assert (res["gpu"], res["gpu_model"], res["slurm_partition"]) == ("1", "a100", "gpu")
    folds = plan["cv_fold"]
    assert {(r["gpu"], r["slurm_partition"]) for r in folds} == {("0", "all"), ("1", "gpu")}
    for rule in ("stack", "samples", "mosaic_probability", "report", "demo_sources"):
        for res in plan[rule]:
            assert res["slurm_partition"] == "all" and res.get("gpu", "0") == "0", rule
    for jobs in plan.values():
        for res in jobs:
            assert res["slurm_account"] == "open"
    assert {r["cpus_per_task"] for r in plan["stack"]} == {"2"}  # from set-threads

    bare = slurm_plan_resources(project, project.env)  # no site: no account, default partition
    for jobs in bare.values():
        for res in jobs:
            assert "slurm_account" not in res and "gpu_model" not in res
    assert all("slurm_partition" not in r for r in bare["predict"])


def test_statewide_plan_stops_on_the_missing_observation_table(tmp_path: Path) -> None:
    """A fresh clone: the observation table is the one file a user places; without it the plan
    stops with one line naming the file, its columns and the README section."""
    project = make_statewide_project(tmp_path, observations=False)
    table = f"resources/{project.region}/sources/observations.csv"
    result = run_snakemake(project, "-n", f"maps/nsp_{project.region}.tif", check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    errors = [line for line in out.splitlines() if table in line]
    assert len(errors) == 1, out
    assert "obs_id, lon, lat, date, nsp, soil_order" in errors[0]
    assert "README section 'Statewide run'" in errors[0]
    assert "Traceback" not in out and "Exception" not in out, out
    assert not (project.root / table).exists()


def test_a_composite_of_a_tile_outside_the_region_stops_the_plan(tmp_path: Path) -> None:
    """A typo in the tile id of README case 1 (``-R resources/<region>/sources/sentinel2/<tile>
    .tif``) would download a composite of a tile the region does not stack (gigabytes at 4096
    px) and fetch nothing the user meant: one line naming it, as for a stack."""
    project = make_statewide_project(tmp_path)
    target = f"resources/{project.region}/sources/sentinel2/R9999C9999.tif"
    result = run_snakemake(project, "-n", target, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(
        f"error: R9999C9999: not a stacked tile of region '{project.region}'"), out
    assert "Traceback" not in out, out


def test_a_zone_layer_the_region_does_not_have_stops_the_plan(tmp_path: Path) -> None:
    """Another region's layer asked for (alaska's permafrost_zone of fairbanks, which has only
    mlra): one line naming the region's layers, not an InputFunctionException traceback."""
    from mapper.config import read_yaml

    project = make_statewide_project(tmp_path)
    fairbanks = read_yaml(REPO / "config" / "regions" / "fairbanks.yaml")
    fairbanks["boundary"] = str(REPO / fairbanks["boundary"])
    project.path("config/regions/fairbanks.yaml").write_text(yaml.safe_dump(fairbanks))
    config = read_yaml(project.config)
    config["regions"]["fairbanks"] = str(project.path("config/regions/fairbanks.yaml"))
    rewrite_yaml(project.config, config)
    target = "resources/fairbanks/zones/permafrost_zone.geojson"
    result = run_snakemake(project, "-n", target, check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {target}: region 'fairbanks' has no zone layer 'permafrost_zone' (its layers: "
        "mlra); ask for one of its layers, or add the layer to its 'zones'"], out
    assert "Traceback" not in out and "Exception" not in out, out


def test_the_plan_checks_the_observation_table_as_the_samples_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table that is there is read when the samples job is planned: a bad one stops the plan,
    before any download, with the one line the samples job would end with; a good one passes."""
    from mapper.errors import InputError
    from mapper.samples import check_observations

    project = make_statewide_project(tmp_path)
    table = f"resources/{project.region}/sources/observations.csv"
    region = load_region(load_config(project.config), project.region)
    monkeypatch.chdir(project.root)  # the job is given the path as the region file has it
    header = "obs_id,lon,lat,date,nsp,soil_order\n"
    good = "a,-147.7,64.8,2019-07-15,1,Gelisols\nb,-150.0,61.2,,0,\n"  # an empty date is allowed
    bad = {  # case: rows, what the line says
        "dates": ("a,-147.7,64.8,15/07/2019,1,Gelisols\nb,-150.0,61.2,2018-13-45,0,\n",
                  "2 row(s) with a date that is not ISO 8601"),
        "swapped": ("a,64.8,-147.7,2019-07-15,1,Gelisols\nb,61.2,-150.0,2019-07-15,0,\n",
                    "the lon and lat columns look swapped"),
    }
    for case, (rows, says) in bad.items():
        (project.root / table).write_text(header + rows)
        with pytest.raises(InputError, match=re.escape(says)) as err:
            check_observations(region, table)
        result = run_snakemake(project, "-n", f"maps/nsp_{project.region}.tif", check=False)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        errors = [line for line in out.splitlines() if table in line]
        assert errors == [f"error: {err.value}"], (case, out)
        assert "Traceback" not in out and "Exception" not in out, out
    (project.root / table).write_text(header + good)
    check_observations(region, table)
    jobs = planned_jobs(project, f"results/{project.region}/samples/points.parquet")
    assert jobs["samples"] == 1


def test_a_map_whose_task_the_table_labels_nowhere_stops_the_plan(tmp_path: Path) -> None:
    """A survey of permafrost alone (an empty soil_order column): the soil-order map's plan stops
    with one line naming the table and the map that can be made, rather than its fine-tuning job
    after every download, stack and pretraining; the NSP map plans as before."""
    project = make_statewide_project(tmp_path)
    table = f"resources/{project.region}/sources/observations.csv"
    (project.root / table).write_text("obs_id,lon,lat,date,nsp,soil_order\n"
                                      "a,-147.7,64.8,2019-07-15,1,\nb,-147.8,64.9,,0,\n")
    result = run_snakemake(project, "-n", f"maps/soilorder_{project.region}.tif", check=False)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: {table}: no point inside region {project.region} has a soil_order label, so "
        f"its soilorder model cannot be trained; add soilorder labels to the table, or make "
        f"only the other maps (maps/nsp_{project.region}.tif)"], out
    assert "Traceback" not in out and "Exception" not in out, out
    assert planned_jobs(project, f"maps/nsp_{project.region}.tif")["finetune"] == 1


def test_a_tile_the_region_does_not_have_stops_the_plan(tmp_path: Path) -> None:
    """Rerunning one tile with a mistyped id (or one from another tile size): one line naming the
    tile and how to list the region's own, for a stack and for a prediction."""
    project = make_statewide_project(tmp_path)
    stacked, mapped = set(project.stacked), set(project.tiles)
    assert "R0000C0000" not in stacked
    cases = {
        "R0000C0000": (f"results/{project.region}/stack/R0000C0000.tif", "stacked", " --stacked"),
        next(iter(sorted(stacked - mapped))): (None, "mapped", ""),
    }
    for tile, (target, what, flag) in cases.items():
        target = target or f"results/{project.region}/predict/nsp/{tile}.tif"
        result = run_snakemake(project, "-n", target, check=False)
        out = result.stdout + result.stderr
        assert result.returncode != 0, out
        expected = (f"error: {tile}: not a {what} tile of region '{project.region}' (tile_px "
                    f"{project.tile_px}); list them with: python -m mapper tiles "
                    f"{project.region}{flag}")
        assert expected in out.splitlines(), out
        assert "Traceback" not in out and "Exception" not in out, out


def test_the_tile_list_a_plan_error_gives_under_a_site_file_is_the_runs(tmp_path: Path) -> None:
    """Under a site file that changes ``tile_px``, the command a wrong tile's error gives reads
    the run's configuration (the file every job reads), so it lists the run's tiles, not the
    region file's."""
    import shlex

    project = make_project(tmp_path / "project")
    site = project.path("site.yaml")
    site.write_text(yaml.safe_dump({"region_overrides": {project.region: {"tile_px": 64}}}))
    result = run_snakemake(project, "-n", f"results/{project.region}/stack/R0000C0000.tif",
                           extra_args=["--configfile", str(project.config), str(site)],
                           check=False)
    out = result.stdout + result.stderr
    line = next(x for x in out.splitlines() if x.startswith("error: R0000C0000: "))
    assert "(tile_px 64)" in line, line
    command = line.split("list them with: ", 1)[1]
    assert re.search(r"--stacked --config \.snakemake/mapper/config-\w+\.yaml$", command), command
    args = shlex.split(command)
    assert args[:3] == ["python", "-m", "mapper"]
    listed = subprocess.run([sys.executable, *args[1:]], cwd=project.root, env=project.env,
                            capture_output=True, text=True, check=True).stdout.split()
    run_region = load_region(load_config([project.config, site]), project.region)
    assert listed == run_region.stacked_tiles()
    assert len(listed) > len(project.stacked)  # the region file's 128 px tiles are fewer


def test_every_source_can_be_an_http_download(tmp_path: Path) -> None:
    """The schema lets any source be of kind ``http``: the plan downloads its files (one
    fetch_http job each) and every stack reads them, the Sentinel-2 composite included."""
    project = make_project(tmp_path)
    settings = yaml.safe_load(project.region_file.read_text())
    settings["sources"] = {
        source: {"kind": "http", "files": [{"url": f"http://127.0.0.1:9/{source}/{name}"}
                                           for name in names]}
        for source, names in [("sentinel2", ["composite_a.tif", "composite_b(2019).tif"]),
                              ("dem", ["dem.tif"]), ("climate", ["normals.tif"]),
                              ("observations", ["points.csv"])]
    }  # fmt: skip
    project.region_file.write_text(yaml.safe_dump(settings))
    tile = project.tiles[0]
    run = run_snakemake(project, project.stack(tile),
                        extra_args=["--dry-run", "--printshellcmds"])  # fmt: skip
    commands = job_commands(run.log)
    folder = f"resources/{project.region}/sources/sentinel2"
    assert f"--sentinel2 {folder}/composite_a.tif '{folder}/composite_b(2019).tif' --dem" in (
        commands["stack"])
    assert planned_jobs(project, project.stack(tile)).get("fetch_http") == 4
    # a URL's file name may hold what the shell reads (brackets): every command parses
    for rule, command in commands.items():
        check = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert check.returncode == 0, (rule, command, check.stderr)
    fetched = [line for line in run.log.splitlines() if "--file 'composite_b(2019).tif'" in line]
    assert fetched and "--log 'logs/sources/" in fetched[0], run.log

    # a demo source in a region that is not all demo: nothing makes it; one line says so
    settings["sources"]["dem"] = {"kind": "demo", "seed": 1}
    project.region_file.write_text(yaml.safe_dump(settings))
    run = run_snakemake(project, "-n", project.stack(tile), check=False)
    assert run.returncode != 0
    assert (f"error: source 'dem' of region '{project.region}' is of kind demo, which only a "
            "region whose sources are all of kind demo has (they are synthesized together); give "
            "it kind file, http, cells or stac in the region file") in run.log.splitlines(), run.log


def test_a_synthetic_regions_report_lists_the_truth_it_reads(tmp_path: Path) -> None:
    """The report of a synthesized region compares the held-out predictions with the hidden
    truth: the truth raster is an input of the job (a remade truth remakes the report) and is
    given to the command; a region with real sources has none."""
    project = make_project(tmp_path)
    for task in ("nsp", "soilorder"):
        target = f"results/{project.region}/reports/{task}.md"
        run = run_snakemake(project, target, extra_args=["--dry-run", "--printshellcmds"])
        truth = f"resources/{project.region}/truth/{task}.tif"
        assert f" --truth {truth} --log " in job_commands(run.log)["report"], task
    statewide = make_statewide_project(tmp_path / "statewide")
    target = f"results/{statewide.region}/reports/nsp.md"
    run = run_snakemake(statewide, target, extra_args=["--dry-run", "--printshellcmds"])
    assert "--truth" not in job_commands(run.log)["report"]


@pytest.mark.slow
def test_statewide_dry_run_builds_the_whole_dag(tmp_path: Path) -> None:
    project = make_statewide_project(tmp_path)
    n = len(project.tiles)
    assert n > 1000
    jobs = planned_jobs(project, f"maps/nsp_{project.region}.tif", timeout=900)
    print(f"\nstatewide DAG of maps/nsp_{project.region}.tif: {sum(jobs.values())} jobs {jobs}")
    assert jobs["stack"] == len(project.stacked) and jobs["predict"] == n
    assert jobs["finetune"] == 1 and jobs["mosaic_probability"] == 1
    # elevation: one job per 1 x 1 degree cell any tile reads; the SatlasPretrain weights once
    from mapper.sources.cells import region_cells

    region = load_region(load_config(project.config), project.region)
    assert jobs["fetch_dem_cell"] == len({c for cs in region_cells(region).values() for c in cs})
    assert jobs["fetch_weights"] == 1


def assert_cog(path: Path, count: int, dtype: str, bounds: tuple[float, ...]) -> None:
    valid, errors, _ = cog_validate(str(path))
    assert valid, (path, errors)
    with rasterio.open(path) as src:
        assert (src.count, src.dtypes[0], src.nodata) == (count, dtype, 255)
        assert src.crs.to_epsg() == 3338
        assert tuple(src.bounds) == pytest.approx(bounds)
        assert src.overviews(1), f"{path} has no overviews"


@pytest.mark.slow
@pytest.mark.workflow
def test_tiny_demo_end_to_end(completed_tiny: WorkflowProject) -> None:
    tiny = completed_tiny
    print(f"\ntiny local run: {tiny.path('run.seconds').read_text().strip()} s")
    bounds = tiny_bounds(tiny.tile_px, 3)
    nsp = tiny.path(f"maps/nsp_{tiny.region}.tif")
    soil = tiny.path(f"maps/soilorder_{tiny.region}.tif")
    probs = tiny.path(f"maps/soilorder_{tiny.region}_probabilities.tif")
    assert_cog(nsp, 1, "uint8", bounds)
    assert_cog(soil, 1, "uint8", bounds)
    assert_cog(probs, len(SOIL_ORDERS), "uint8", bounds)
    with rasterio.open(nsp) as src:
        values = src.read(1)
        assert src.scales[0] == pytest.approx(0.01)
    assert values[values != 255].size > 0.5 * values.size
    assert values[values != 255].max() <= 100
    with rasterio.open(soil) as src:
        classes = src.read(1)
        assert src.colormap(1)  # colour table
    assert set(np.unique(classes)) <= set(range(len(SOIL_ORDERS))) | {CLASS_NODATA}
    with rasterio.open(probs) as src:
        assert list(src.descriptions) == list(SOIL_ORDERS)

    for task in ("nsp", "soilorder"):
        for suffix in (".png", ".qml", ".stac.json"):
            assert tiny.path(f"maps/{task}_{tiny.region}{suffix}").stat().st_size > 0
        item = json.loads(tiny.path(f"maps/{task}_{tiny.region}.stac.json").read_text())
        assert item["type"] == "Feature"
        report = tiny.path(f"results/{tiny.region}/reports/{task}.md").read_text()
        assert "Random Forest" in report and "MiSo" in report
        figures = json.loads(tiny.path(f"results/{tiny.region}/reports/{task}.json").read_text())
        assert figures
        for png in ("splits", "confusion"):
            assert tiny.path(f"results/{tiny.region}/reports/{task}_{png}.png").stat().st_size
    assert tiny.path(f"results/{tiny.region}/stack.vrt").exists()
    r = tiny.region
    assert sorted(p.name for p in tiny.path("maps").iterdir()) == sorted([
        f"nsp_{r}.tif", f"nsp_{r}.png", f"nsp_{r}.qml", f"nsp_{r}.stac.json",
        f"soilorder_{r}.tif", f"soilorder_{r}_probabilities.tif", f"soilorder_{r}.png",
        f"soilorder_{r}.qml", f"soilorder_{r}.stac.json"])  # the products listed, nothing else
    # the complete run left nothing to do
    assert planned_jobs(tiny, *tiny.maps(), *tiny.reports()) == {}


@pytest.mark.slow
@pytest.mark.workflow
def test_jobs_show_progress_on_the_console_and_write_their_logs(completed_tiny: WorkflowProject
                                                                ) -> None:
    """Snakemake's console carries the jobs' labelled summary lines, and no log record: those,
    bars and results are in each job's log file."""
    tiny = completed_tiny
    console = tiny.path("run.log").read_text().splitlines()
    r = tiny.region
    steps = [line for line in console if re.match(rf"finetune {r} nsp: \d+/\d+ steps?, ", line)]
    assert steps, "no progress line of the NSP fine-tuning on the console"
    assert any(line.startswith(f"finetune {r} nsp: done, ") for line in console)
    assert not [line for line in console if " INFO mapper." in line]
    train_log = tiny.path(f"logs/train/{r}_nsp.log").read_text()
    assert "INFO mapper.train: finetune nsp epoch 1/" in train_log
    assert train_log.rstrip().splitlines()[-1].startswith(f"results/{r}/models/nsp.pt: ")
    for log in tiny.path("logs").rglob("*.log"):
        assert "error:" not in log.read_text(), log


@pytest.mark.slow
@pytest.mark.workflow
def test_html_report_has_the_evaluation_and_the_maps(completed_tiny: WorkflowProject,
                                                     tmp_path: Path) -> None:
    tiny = completed_tiny
    out = tmp_path / "report.html"
    run_snakemake(tiny, *tiny.maps(), *tiny.reports(), extra_args=["--report", str(out)])
    html = out.read_text(errors="replace")
    assert len(html) > 10_000
    for name in ("Evaluation", "Maps", "nsp.md", "soilorder.md", "nsp_splits.png",
                 "soilorder_confusion.png", f"nsp_{tiny.region}.png",
                 f"soilorder_{tiny.region}.png",  # the files, and their captions:
                 "Cross-validation of MiSo against Random Forest", "Quick-look of"):  # fmt: skip
        assert name in html, name
