"""Time to build the statewide DAG, and what one SLURM job pays to parse the workflow again.

    python benchmarks/bench_dag.py [--region alaska] [--repeat 1]

Runs in a temporary project over the repository's region file (see tests/workflow_project.py:
local sources are empty placeholders, which is all a dry run looks at) and prints, per case, the
wall and CPU time of the ``snakemake`` process and the jobs it plans per rule, after the time
the region's tile list takes to compute from its boundary (which every DAG build pays):

- ``dry run maps/nsp_<region>.tif``: the DAG a local run builds;
- ``... + reports``: with the cross-validation and report jobs;
- ``slurm profile``: the same with workflow/profiles/slurm (per-rule resources, groups), what
  the submitting process pays before the first job is submitted;
- ``one stack job``: a dry run of one tile's stack (and the fetch it needs), close to what each
  SLURM job (``--executor slurm-jobstep``) does before running its command: parse the Snakefile,
  load the config and the regions' tile lists, build the DAG of its own targets.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cli_errors import run_main  # noqa: E402
from workflow_project import (  # noqa: E402
    PROFILES,
    REPO,
    make_statewide_project,
    parse_job_stats,
    run_snakemake,
)

import mapper.config  # noqa: E402
from mapper.config import load_config, load_region, read_yaml  # noqa: E402
from mapper.errors import ConfigError  # noqa: E402


def cold_boundary_caches() -> None:
    """Empty the functools caches of :mod:`mapper.config` that keep a boundary, its mapped area
    and its tile lists once computed in a process, so that the next tile lists are computed from
    the boundary file as a fresh process (each DAG build, each SLURM job) computes them."""
    mapper.config._read_boundary_cached.cache_clear()
    mapper.config._area_cached.cache_clear()
    mapper.config._tiles_cached.cache_clear()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(project, targets: list[str], extra: list[str]) -> tuple[float, float, dict]:  # noqa: ANN001
    cpu0 = children_cpu()
    run = run_snakemake(
        project, *targets, extra_args=["--dry-run", "--quiet=rules", *extra], timeout=3600
    )
    return run.seconds, children_cpu() - cpu0, parse_job_stats(run.log)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="alaska")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    config = REPO / "config" / "config.yaml"
    regions = read_yaml(config).get("regions") or {}
    if args.region not in regions:
        raise ConfigError(f"{config}: no region '{args.region}' (known: "
                          f"{', '.join(sorted(regions))}); give --region one of them")

    with tempfile.TemporaryDirectory(prefix="bench_dag_") as tmp:
        project = make_statewide_project(Path(tmp), args.region)
        r = project.region
        tile = project.tiles[len(project.tiles) // 2]
        region = load_region(load_config(project.config), r)
        cold_boundary_caches()  # making the project computed the tile lists already
        start = time.perf_counter()
        mapped, stacked = region.tiles(), region.stacked_tiles()
        seconds = time.perf_counter() - start
        print(f"region {r}: {len(mapped)} mapped and {len(stacked)} stacked tiles of "
              f"{project.tile_px} px (tile lists from the boundary and buffer_m: {seconds:.2f} s)")
        maps = [f"maps/nsp_{r}.tif"]
        cases = [
            ("dry run " + maps[0], maps, []),
            ("... + maps/soilorder, reports", maps + [f"maps/soilorder_{r}.tif",
             f"results/{r}/reports/nsp.md", f"results/{r}/reports/soilorder.md"], []),
            ("slurm profile, " + maps[0], maps,
             ["--profile", str(PROFILES / "slurm"), "--jobs", "1"]),
            ("one stack job (" + tile + ")", [f"results/{r}/stack/{tile}.tif"],
             ["--cores", "1"]),
        ]  # fmt: skip
        print(f"{'case':44s} {'wall s':>8s} {'cpu s':>8s} {'jobs':>6s}  per rule")
        for name, targets, extra in cases:
            for _ in range(args.repeat):
                wall, cpu, stats = measure(project, targets, extra)
                per_rule = " ".join(f"{k}={v}" for k, v in stats.items())
                print(f"{name:44s} {wall:8.1f} {cpu:8.1f} {sum(stats.values()):6d}  {per_rule}")
        profile = PROFILES / "slurm" / "config.yaml"
        print(f"(group sizes in {profile.relative_to(PROFILES.parent.parent)}: "
              "SLURM jobs = ceil(tiles / group-components) per grouped rule)")  # fmt: skip
    return 0


if __name__ == "__main__":
    run_main(main, from_root=False)
