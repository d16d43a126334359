"""Fixtures shared by the test modules.

Data that costs time to make is made once per session from fixed seeds, in a folder of its own
that tests only read: the training tests' region (tests/training_data.py) and its samples table,
the stack tests' sources (tests/stack_sources.py) and four stacks built from them, and the tiny
workflow project run to its maps (tests/workflow_project.py), and run a second time from
nothing in another folder (through SLURM where a local cluster can start). A test that writes
does so under its own ``tmp_path`` (or a module folder), so no test sees another's output and
the order in which tests run does not matter.

Tools that are not Python packages (GDAL's command-line programs) are looked up, not installed:
when one is missing, the tests that need it are skipped and say which Debian package provides
it (``make test`` installs them when it runs as root: scripts/system-packages.sh).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stack_sources as S
import torch
import training_data as T
from slurm_cluster import SlurmCluster, cluster_unavailable, start_cluster, stop_cluster
from tiny_region import write_tiny_region
from workflow_project import SecondRun, WorkflowProject, run_second_tiny, run_tiny_project

from mapper.config import load_config, load_region
from mapper.folds import build_folds, samples_with_folds
from mapper.samples import build_samples
from mapper.stack import build_stack

FETCH_BOUNDS = (249_920.0, 1_639_680.0, 250_560.0, 1_640_000.0)  # in tile R1500C4453 (64 px)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> None:
    """Torch on one thread in every test, so results and timings do not depend on which test
    files a run collects (nor on the machine's core count)."""
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2`` (pytest-xdist, ``--dist loadgroup``, as ``make test`` runs): the
    tests of the local SLURM cluster run in one worker, which starts the one cluster."""
    for item in items:
        if {"slurm", "second_tiny"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.xdist_group("slurm"))


def system_tool(name: str, package: str) -> str:
    """Path of the program ``name``; skips the test, naming the Debian package, when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not found: install Debian's {package}")
    return path


@pytest.fixture(scope="session")
def gdalwarp() -> str:
    return system_tool("gdalwarp", "gdal-bin")


@pytest.fixture(scope="session")
def gdalinfo() -> str:
    return system_tool("gdalinfo", "gdal-bin")


@pytest.fixture(scope="session")
def training_region(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The training tests' SYNTHETIC region ``tiny`` (4 x 4 tiles of 64 px): ``config``,
    ``region`` (loaded), ``stacks``, ``observations`` (CSV) and ``observed`` (the observations
    with their EPSG:3338 ``x``, ``y``). Read only."""
    written = T.write_region(tmp_path_factory.mktemp("training-region"))
    return {**written, "region": load_region(load_config(written["config"]), "tiny")}


@pytest.fixture(scope="session")
def training_samples(training_region: dict[str, Any],
                     tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The samples table of the training region: ``samples`` (the parquet file), ``table``
    (what build_samples returned), ``folds`` (its folds file, build_folds) and ``folded`` (the
    table with its fold columns, as a cross-validation fold reads it). Read only."""
    path = tmp_path_factory.mktemp("training-samples") / "points.parquet"
    r = training_region
    table = build_samples(r["region"], r["observations"], r["stacks"], path)
    folds = build_folds(r["region"], path, path.with_name("folds.parquet"))
    assert len(folds) == len(table)
    folded = samples_with_folds(r["region"], path, path.with_name("folds.parquet"))
    return {"samples": path, "table": table, "folds": path.with_name("folds.parquet"),
            "folded": folded}


@pytest.fixture(scope="session")
def stack_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The stack tests' SYNTHETIC sources (``s2``, ``dem``, ``plane`` DEM, ``climate``) and a
    ``config`` with regions t64 and t128 over the same square (loaded: ``r64``, ``r128``), with
    the demo model and the training region's prediction settings. Read only."""
    root = tmp_path_factory.mktemp("stack-sources")
    config = S.write_config(root, model={"size": "demo"}, prediction=T.PREDICTION)
    loaded = load_config(config)
    return {
        "config": config,
        "s2": S.write_sentinel2(root / "sentinel2.tif"),
        "dem": S.write_dem(root / "dem.tif"),
        "plane": S.write_dem(root / "dem_plane.tif", kind="plane"),
        "climate": S.write_climate(root / "climate.tif"),
        "r64": load_region(loaded, "t64"),
        "r128": load_region(loaded, "t128"),
    }


@pytest.fixture(scope="session")
def small_stacks(stack_sources: dict[str, Any],
                 tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The stacks of the four 64 px tiles (region t64) of the 128 px tile ``S.BIG_TILE``, built
    from the stack sources: tile -> ``<tile>.tif``. Read only."""
    out = tmp_path_factory.mktemp("small-stacks")
    s = stack_sources
    return {t: build_stack(s["r64"], t, [s["s2"]], s["dem"], s["climate"], out / f"{t}.tif")
            for t in S.SMALL_TILES}


@pytest.fixture
def fetch_config(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """``fetch_config(sources)``: the config of a region ``r`` (a 640 x 320 m strip of one 64 px
    tile near Nenana) in ``tmp_path`` whose ``sources`` replace those demo sources."""

    def write(sources: dict[str, Any]) -> Path:
        return write_tiny_region(tmp_path, FETCH_BOUNDS, 64, name="r", sources=sources)

    return write


@pytest.fixture(scope="session")
def completed_tiny(tmp_path_factory: pytest.TempPathFactory) -> WorkflowProject:
    """The tiny workflow project run locally to its maps, reports and stack VRT, once per
    session. Tests may add files (a report) but change none; a test that changes files works on
    a :func:`workflow_project.copy_project`."""
    return run_tiny_project(tmp_path_factory.mktemp("tiny-complete"))


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> SlurmCluster:
    """A one-node SLURM cluster on localhost (tests/slurm_cluster.py), started at first use and
    stopped, node daemon first, when the session ends; skips the test, naming the missing
    programs and their Debian packages, where it cannot start."""
    reason = cluster_unavailable()
    if reason is not None:
        pytest.skip(f"no local SLURM cluster: {reason}")
    cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="session")
def second_tiny(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> SecondRun:
    """The tiny project run from nothing a second time, in another folder, to its maps: through
    the workflow's SLURM profile on the local cluster where one can start (as ``make test`` as
    root sets up), else locally. One run serves two claims: the SLURM profile makes the local
    maps (test_cluster), and two runs from nothing make byte-identical maps
    (test_reproducible)."""
    cluster = request.getfixturevalue("slurm") if cluster_unavailable() is None else None
    return run_second_tiny(tmp_path_factory.mktemp("tiny-second"), cluster)
