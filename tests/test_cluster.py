"""The workflow on a real one-node SLURM cluster that the test starts (tests/slurm_cluster.py).

SLURM and munge must be installed (``make test`` installs Debian's slurm-wlm and munge when it
runs as root: scripts/system-packages.sh); without them the tests are skipped with the reason.
The tests start their own munged, slurmctld and slurmd (no system service is used) and stop
them (slurmd first) when the session ends, whatever happens (conftest's ``slurm`` fixture). The
jobs as SLURM saw them are printed (``pytest -s``) and written next to each run as
``slurm_jobs.txt``.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from slurm_cluster import SlurmCluster, cluster_env, cluster_unavailable, list_jobs
from workflow_project import PROFILES, SecondRun, WorkflowProject, render_profile, tail

from mapper.config import load_config, load_region

UNAVAILABLE = cluster_unavailable()
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no local SLURM cluster: {UNAVAILABLE}"),
]

TOY_SNAKEFILE = """\
localrules: all


rule all:
    input:
        "a.txt",
        "b.txt",


rule hello:
    output:
        "{name}.txt",
    log:
        "logs/{name}.log",
    shell:
        'echo "$SLURM_JOB_ID $(hostname) $OMP_NUM_THREADS" > {output} 2> {log}'
"""


def test_two_jobs_run_as_slurm_jobs(slurm: SlurmCluster, tmp_path: Path) -> None:
    (tmp_path / "Snakefile").write_text(TOY_SNAKEFILE)
    cmd = [
        sys.executable, "-m", "snakemake", "--directory", str(tmp_path),
        "--executor", "slurm", "--jobs", "2", "--latency-wait", "5",
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "5",
        "--seconds-between-status-checks", "3",
        "--default-resources", "slurm_partition=debug", "mem_mb=500", "runtime=5",
    ]  # fmt: skip
    env = cluster_env(slurm, dict(os.environ))
    run = subprocess.run(
        ["timeout", "-k", "15", "240", *cmd], cwd=tmp_path, env=env, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, tail(log, 40)
    rows = list_jobs(slurm, log, tmp_path / "slurm_jobs.txt")
    assert len(rows) == 2
    assert {r["JobState"] for r in rows} == {"COMPLETED"}
    assert {r["ExitCode"] for r in rows} == {"0:0"}
    assert {r["Partition"] for r in rows} == {"debug"}
    ran_in = {(tmp_path / f"{name}.txt").read_text().split()[0] for name in ("a", "b")}
    assert ran_in == {r["JobId"] for r in rows}  # each output was written inside its SLURM job


def read_map(path: Path) -> tuple[dict, np.ndarray]:
    with rasterio.open(path) as src:
        profile = {
            k: src.profile[k] for k in ("driver", "dtype", "count", "width", "height", "nodata")
        }
        profile["crs"] = src.crs.to_epsg()
        profile["transform"] = tuple(src.transform)
        return profile, src.read()


@pytest.mark.workflow
def test_tiny_demo_through_slurm_profile_makes_the_local_maps(
    completed_tiny: WorkflowProject, second_tiny: SecondRun,
) -> None:
    """The second run of the tiny project (conftest's ``second_tiny``: through the workflow's
    SLURM profile, on the session's cluster) makes the local run's maps, pixel for pixel; its
    per-tile jobs went to SLURM in the profile's groups."""
    local, project, run = completed_tiny, second_tiny.project, second_tiny.run
    rows = second_tiny.jobs
    assert second_tiny.via == "slurm"
    maps = project.maps()  # both products, as the demo's main command makes them
    print(f"\nslurm run: {run.seconds:.0f} s")
    assert run.returncode == 0, tail(run.log, 60)
    assert rows and {r["JobState"] for r in rows} == {"COMPLETED"}
    whats = [r["What"] for r in rows]
    # per-tile jobs went in groups of group-components tiles (25 stacks: the 9 mapped tiles and
    # their ring of context tiles; 2 x 9 predictions)
    size = render_profile(PROFILES / "slurm" / "config.yaml")["group-components"]
    n = len(project.tiles)
    stacked = len(load_region(load_config(project.config), project.region).stacked_tiles())
    assert sum(w.startswith("group_stack") for w in whats) == math.ceil(
        stacked / size["stack"]
    ), whats
    predictions = len(maps) * n
    assert sum(w.startswith("group_predict") for w in whats) == math.ceil(
        predictions / size["predict"]
    ), whats
    assert not any(w.startswith(("rule_stack", "rule_predict")) for w in whats), whats

    for product in maps:
        local_profile, local_data = read_map(local.path(product))
        slurm_profile, slurm_data = read_map(project.path(product))
        assert slurm_profile == local_profile, product
        np.testing.assert_array_equal(slurm_data, local_data, err_msg=product)
        same = local.path(product).read_bytes() == project.path(product).read_bytes()
        print(f"{product}: pixels equal; file bytes {'equal' if same else 'differ'}")
