"""Interrupted runs: a job or the whole workflow killed with SIGKILL (power loss, OOM killer, a
cluster job past its time limit) and run again.

- A killed ``python -m mapper stack`` leaves no file at its output path (only a hidden temporary
  beside it); running the same command again writes the whole file and removes the temporary.
- The tiny workflow killed (SIGKILL to Snakemake's whole process group) while it predicts tiles:
  the same command then stops on Snakemake's lock with a message that names ``--unlock``; after
  ``snakemake --unlock`` the command with the one-machine profile (which sets
  ``rerun-incomplete``) finishes without redoing the tiles that had finished (same inode and
  mtime), and every output opens and equals the clean run's byte for byte (a STAC Item but for
  the time it was written), with no other file (no temporary left, none of a killed mosaic).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from workflow_project import (
    PROFILES,
    WorkflowProject,
    copy_project,
    run_snakemake,
    snakemake_command,
    tail,
    tiny_local_args,
)

from mapper.config import load_config, load_region
from mapper.stack import build_stack

TILE128 = "R0744C2220"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stac_without_times(path: Path) -> str:
    """A STAC Item's digest without its ``created``/``datetime`` (the time it was written)."""
    item = json.loads(path.read_text())
    for key in ("created", "datetime", "updated"):
        item.get("properties", {}).pop(key, None)
    return "stac:" + hashlib.sha256(json.dumps(item, sort_keys=True).encode()).hexdigest()


def files_under(root: Path, *patterns: str) -> dict[str, str]:
    """Every file (hidden ones too) matching ``patterns`` under ``root``: relative path ->
    sha256 (of the content; of a STAC Item without its write time)."""
    out = {}
    for pattern in patterns:
        for p in sorted(root.glob(pattern)):
            if p.is_file():
                rel = str(p.relative_to(root))
                out[rel] = stac_without_times(p) if p.name.endswith(".stac.json") else sha256(p)
    return out


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):  # noqa: ANN001, ANN201
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = predicate()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended ({proc.returncode}) before {what}")
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- one job ------------------------------------------------------------------------------------


def test_a_killed_stack_job_leaves_no_output_and_its_rerun_cleans_up(stack_sources: dict,
                                                                      tmp_path: Path) -> None:
    config = stack_sources["config"]
    s2, dem, climate = stack_sources["s2"], stack_sources["dem"], stack_sources["climate"]
    out = tmp_path / "stack" / f"{TILE128}.tif"
    cmd = [sys.executable, "-m", "mapper", "stack", "--config", str(config), "--region", "t128",
           "--tile", TILE128, "--sentinel2", str(s2), "--dem", str(dem), "--climate",
           str(climate), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        temporaries = wait_for(lambda: list(out.parent.glob(f".{out.name}.*.tmp")), 120,
                               "the stack's temporary file", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and all(t.exists() for t in temporaries)  # what the kill leaves

    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # temporaries removed
    clean = build_stack(stack_sources["r128"], TILE128, [s2], dem, climate,
                        tmp_path / "clean" / out.name)
    with rasterio.open(out) as a, rasterio.open(clean) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
        assert a.tags() == b.tags()


def test_what_a_killed_mosaic_left_is_removed_by_the_next_one(training_region: dict,
                                                              tmp_path: Path) -> None:
    """A mosaic job killed midway leaves its hidden work folder and a temporary COG in maps/;
    the next mosaic of the same product removes them (and nothing else)."""
    from mapper.products import make_products
    from mapper.raster import write_geotiff

    region = load_region(load_config(training_region["config"]), "tiny")
    lattice, p = region.lattice, region.lattice.tile_px
    tiles = []
    for i, tile in enumerate(region.tiles()):  # every mapped tile: the mosaic covers the area
        path = tmp_path / "predict" / f"{tile}.tif"
        write_geotiff(path, np.full((1, p, p), 0.25 * (1 + i % 2), np.float32),
                      lattice.tile_transform(tile), "EPSG:3338", nodata=np.nan,
                      descriptions=["nsp"], tags={"MAPPER_TASK": "nsp", "MAPPER_TILE": tile})
        tiles.append(path)
    model = tmp_path / "nsp.pt"
    model.write_bytes(b"a model")
    maps = tmp_path / "maps"
    maps.mkdir()
    stale_dir = maps / ".nsp_tiny.tif.k2x9q0ab"  # tempfile.mkdtemp's name, as a killed job left it
    stale_dir.mkdir()
    (stale_dir / "main.tif").write_bytes(b"half a raster")
    stale_cog = maps / ".nsp_tiny.tif.7fcttrmq.tmp"
    stale_cog.write_bytes(b"half a COG")
    other = maps / ".nsp_tiny.tif.aux.xml"  # not a temporary: kept
    other.write_text("<PAMDataset/>")
    make_products(region, "nsp", model, tiles, maps / "nsp_tiny.tif", sources_dir=tmp_path / "none")
    hidden = sorted(p.name for p in maps.iterdir() if p.name.startswith("."))
    assert hidden == [other.name]
    with rasterio.open(maps / "nsp_tiny.tif") as ds:
        assert ds.read(1).max() == 50


# -- the workflow -------------------------------------------------------------------------------


def incomplete_outputs(project: WorkflowProject) -> set[str]:
    """Outputs of the jobs Snakemake has started and not recorded as finished."""
    folder = project.root / ".snakemake" / "incomplete"
    if not folder.is_dir():
        return set()
    out = set()
    for marker in folder.iterdir():
        try:
            out.add(base64.urlsafe_b64decode(marker.name).decode())
        except ValueError:
            continue
    return out


def predicted(project: WorkflowProject, task: str) -> list[str]:
    return [f"results/{project.region}/predict/{task}/{tile}.tif" for tile in project.tiles]


@pytest.mark.slow
def test_killed_while_predicting_then_rerun(completed_tiny: WorkflowProject,
                                            tmp_path: Path) -> None:
    project = copy_project(completed_tiny, tmp_path / "project")
    r = project.region
    tiles = predicted(project, "nsp")[:4]  # to predict again (the rest stay done: less to wait)
    for p in tiles:
        project.path(p).unlink()
    for p in project.path("maps").glob(f"nsp_{r}.*"):
        p.unlink()
    targets = [f"maps/nsp_{r}.tif"]

    def under_way() -> tuple[list[str], set[str]] | None:
        running = {p for p in incomplete_outputs(project) if p in tiles}
        done = [p for p in tiles if project.path(p).exists() and p not in running]
        return (done, running) if done and running else None

    cmd = snakemake_command(project, *targets, extra_args=tiny_local_args())
    log = tmp_path / "killed.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=project.root, env=project.env, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            done, running = wait_for(under_way, 900, "a finished tile and a running one", proc)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    missing = [p for p in tiles if not project.path(p).exists()]
    print(f"\nkilled with {len(done)} of {len(tiles)} tiles finished, running {sorted(running)}")
    assert missing, "every tile was finished before the kill"
    finished = {p: project.path(p).stat() for p in done}

    # The same command: the killed run's lock stops it and Snakemake says what to do, or, when
    # the kill came between a job's rename of its output and Snakemake's record of it (two jobs
    # run side by side), Snakemake first names that output as incomplete, and says what to do.
    again = run_snakemake(project, *targets, extra_args=tiny_local_args(), check=False)
    assert again.returncode != 0
    assert ("LockException" in again.log and "--unlock" in again.log) or (
        "Incomplete files:" in again.log and "--rerun-incomplete" in again.log), again.log

    run_snakemake(project, *targets, extra_args=["--unlock"])
    # as a mosaic job killed midway would have left its work folder (none was running here)
    stale = project.path(f"maps/.nsp_{r}.tif.x8f2k1qz")
    stale.mkdir()
    (stale / "main.tif").write_bytes(b"half a raster")
    profile = ["--profile", str(PROFILES / "default"), *tiny_local_args()]
    resumed = run_snakemake(project, *targets, extra_args=profile)
    print(tail(resumed.log, 5))

    for p, before in finished.items():  # not redone
        after = project.path(p).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), p
    for p in [*predicted(project, "nsp"), *targets]:  # every output opens and reads
        with rasterio.open(project.path(p)) as ds:
            ds.read()
    outputs = (f"results/{r}/predict/**/*", "maps/**/*")  # hidden files and folders included
    assert not stale.exists()
    assert files_under(project.root, *outputs) == files_under(completed_tiny.root, *outputs)
