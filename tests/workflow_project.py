"""Small Snakemake projects in a temporary folder, for tests of the workflow itself.

:func:`make_project` writes a project that runs the repository's Snakefile on a "tiny" region:
``config/config.yaml`` (the real lattice, one region), ``config/regions/tiny.yaml`` and its
boundary GeoJSON (EPSG:3338), written by tests/tiny_region.py. The region is a square of
``tiles_per_side`` x ``tiles_per_side`` lattice tiles of ``tile_px`` pixels around the centre of
the demo area (by default 3 x 3 tiles of 128 px, 3.84 km: the smallest square with a tile, the
centre one, whose 8 neighbours are all in the region, and corner tiles with 3; per-tile reruns can
be told apart), with the demo's SYNTHETIC sources (kind ``demo``, the demo seed) and the smallest
training and evaluation settings that still run every stage (the demo model size, 32 px crops, one
epoch, 2 folds on one split).

:func:`run_snakemake` runs ``python -m snakemake --snakefile <repo>/Snakefile --directory <project>
--configfile <project>/config/config.yaml``. Snakemake resolves the Snakefile's own relative paths
(schemas, includes) against the Snakefile, but ``configfile:`` and every path in the config
against the working directory; the project's config therefore names its region file and
boundary by absolute path. The environment puts this interpreter's ``bin`` first on PATH, so the
rules' ``python -m mapper`` is the same installation (and SLURM jobs, which inherit it, too).

:func:`run_tiny_project` runs a new tiny project to its maps and reports (the fixture
``completed_tiny`` does it once per session). :func:`planned_jobs` counts the jobs a dry run plans
per rule (from Snakemake's "Job stats").
:func:`make_statewide_project` writes a project over the real statewide region for DAG dry runs.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from slurm_cluster import SlurmCluster, cluster_env, list_jobs
from tiny_region import ORIGIN, RES, demo_sources, write_config, write_region_file

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "Snakefile"
PROFILES = REPO / "workflow" / "profiles"
DEMO_SEED = 20260101
DEMO_CENTRE = (251_840.0, 1_637_440.0)  # centre of the demo square (EPSG:3338 metres)

TRAINING = {
    "seed": 0,
    "crop_px": 32,
    "batch_size": 4,
    "random_points": 4,
    "grid_points": 4,
    "unlabelled_fraction": 0.25,  # fewer unlabelled crops in fine-tuning: a third less training
    "pretrain_epochs": 1,
    "pretrain_lr": 1.0e-3,
    "pretrain_crops": 8,
    "finetune_epochs": 1,
    "lr_max": 1.0e-3,
    "lr_min": 1.0e-4,
    "warmup_lr": 1.0e-5,
}
EVALUATION = {
    "folds": 2,
    "splits": ["random"],
    "epochs": 1,
    "ablation_no_pretrain": False,
    "rf_trees": 10,
    "rf_max_depth": 6,
}
PREDICTION = {"crop_px": 32, "stride_px": 16, "sigma_scale": 0.125, "out_res": 40.0}
STACK = {"halo_px": 32, "hydro_block_px": 256, "hydro_halo_px": 64}


@dataclass
class WorkflowProject:
    """A project folder: the working directory Snakemake runs in, its config and its region."""

    root: Path
    region: str
    tile_px: int
    tiles: list[str]
    env: dict[str, str] = field(default_factory=dict)
    stacked: list[str] = field(default_factory=list)  # mapped and context tiles

    @property
    def config(self) -> Path:
        return self.root / "config" / "config.yaml"

    @property
    def region_file(self) -> Path:
        return self.root / "config" / "regions" / f"{self.region}.yaml"

    def path(self, rel: str | Path) -> Path:
        return self.root / rel

    def maps(self) -> list[str]:
        return [f"maps/nsp_{self.region}.tif", f"maps/soilorder_{self.region}.tif"]

    def reports(self) -> list[str]:
        return [f"results/{self.region}/reports/{t}.md" for t in ("nsp", "soilorder")]

    def stack(self, tile: str) -> str:
        return f"results/{self.region}/stack/{tile}.tif"


@dataclass
class SnakemakeRun:
    """A finished ``snakemake`` process: command, exit code, output and wall time."""

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def log(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> SnakemakeRun:
        if self.returncode != 0:
            raise AssertionError(
                f"snakemake exited with {self.returncode} after {self.seconds:.0f} s:\n"
                f"{' '.join(self.cmd)}\n{tail(self.log, 60)}"
            )
        return self


def tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def tiny_bounds(tile_px: int, tiles_per_side: int) -> tuple[float, float, float, float]:
    """A lattice-aligned square of tiles_per_side^2 tiles whose centre is the lattice corner
    nearest the demo centre: (left, bottom, right, top) in EPSG:3338 metres."""
    size = tile_px * RES
    col = round((DEMO_CENTRE[0] - ORIGIN[0]) / size) - tiles_per_side // 2
    row = round((ORIGIN[1] - DEMO_CENTRE[1]) / size) - tiles_per_side // 2
    left, top = ORIGIN[0] + col * size, ORIGIN[1] - row * size
    return left, top - tiles_per_side * size, left + tiles_per_side * size, top


PROGRESS_SECONDS = 0.25
"""Console summaries of the tiny runs' jobs every 0.25 s (a minute in use), so that they show:
the tiny fine-tuning's bar is open for about 1.5 s on this machine, less on a faster one."""


def project_env() -> dict[str, str]:
    """This interpreter's bin first on PATH; one BLAS/OpenMP thread unless a job sets more;
    job summaries on the console every :data:`PROGRESS_SECONDS`."""
    bindir = str(Path(sys.executable).parent)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", os.defpath)])
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("MAPPER_PROGRESS_SECONDS", str(PROGRESS_SECONDS))
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def make_project(
    root: Path,
    tile_px: int = 128,
    tiles_per_side: int = 3,
    region: str = "tiny",
    training: dict | None = None,
    evaluation: dict | None = None,
    prediction: dict | None = None,
    geojson: dict | None = None,
    buffer_m: float = 0.0,
) -> WorkflowProject:
    """Write config, region file and boundary of a tiny demo-sourced region under ``root``.

    ``geojson``: a boundary of the test's own (e.g. a polygon in EPSG:4326,
    :func:`tiny_region.lonlat_boundary`) in place of the square of tiles; ``buffer_m``: the
    region's buffer."""
    from mapper.config import load_config, load_region

    root = Path(root).resolve()
    stack = dict(STACK)
    if tile_px % stack["hydro_block_px"] and stack["hydro_block_px"] % tile_px:
        stack["hydro_block_px"] = tile_px
    region_file = write_region_file(
        root / "config" / "regions", region, tiny_bounds(tile_px, tiles_per_side), tile_px,
        geojson=geojson,
        description=f"Tiny SYNTHETIC test region: {tiles_per_side} x {tiles_per_side} tiles "
        f"of {tile_px} px at the centre of the demo area." if geojson is None else
        "Tiny SYNTHETIC test region: a polygon near the centre of the demo area.",
        buffer_m=buffer_m,
        sources=demo_sources(DEMO_SEED),
        stack=stack,
        model={"size": "demo"},
        training={**TRAINING, **(training or {})},
        evaluation={**EVALUATION, **(evaluation or {})},
        prediction={**PREDICTION, **(prediction or {})},
    )
    write_config(root / "config" / "config.yaml", {region: region_file})
    loaded = load_region(load_config(root / "config" / "config.yaml"), region)
    return WorkflowProject(root, region, tile_px, loaded.tiles(), project_env(),
                           loaded.stacked_tiles())


STATEWIDE_OBSERVATIONS = (
    "obs_id,lon,lat,date,nsp,soil_order\n"
    "p1,-147.72,64.86,2019-07-15,1,Gelisols\n"
    "p2,-147.80,64.90,2019-07-16,0,Inceptisols\n"
)
"""A valid observation table (SYNTHETIC) of two points in both alaska and fairbanks."""


def make_statewide_project(
    root: Path, region: str = "alaska", *, observations: bool = True
) -> WorkflowProject:
    """A project over the repository's statewide region file, for DAG dry runs.

    The region file is copied with its boundary made absolute; local (kind ``file``) sources are
    placeholder files in the project: the observation table a valid one of two points near
    Fairbanks (a plan checks it as the samples job would), any other empty (a dry run only looks
    at its existence). With ``observations=False`` the observation table is left out, as on a
    fresh clone.
    """
    from mapper.config import load_config, load_region, read_yaml

    root = Path(root).resolve()
    (root / "config" / "regions").mkdir(parents=True, exist_ok=True)
    repo_config = read_yaml(REPO / "config" / "config.yaml")
    settings = read_yaml(REPO / repo_config["regions"][region])
    boundary = Path(settings["boundary"])
    settings["boundary"] = str(boundary if boundary.is_absolute() else REPO / boundary)
    for name, source in settings["sources"].items():
        if name == "observations" and not observations:
            continue
        if source["kind"] == "file" and not Path(source["path"]).is_absolute():
            placeholder = root / source["path"]
            placeholder.parent.mkdir(parents=True, exist_ok=True)
            placeholder.write_text(STATEWIDE_OBSERVATIONS if name == "observations" else "")
    region_file = root / "config" / "regions" / f"{region}.yaml"
    region_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    config = {"grid": repo_config.get("grid", {}), "regions": {region: str(region_file)}}
    (root / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    loaded = load_region(load_config(root / "config" / "config.yaml"), region)
    return WorkflowProject(root, region, settings["tile_px"], loaded.tiles(), project_env(),
                           loaded.stacked_tiles())


def render_profile(profile: Path) -> dict:
    """A profile's keys as Snakemake reads them (YTE templating applied), without the site's
    ``MAPPER_SLURM_*`` environment variables (so the result is the same everywhere)."""
    import yte

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("MAPPER_SLURM_")}
    try:
        with open(profile) as f:
            return yte.process_yaml(f, require_use_yte=True)
    finally:
        os.environ.update(saved)


def capped_threads(profile: dict, cpus: int) -> dict[str, int]:
    """The profile's ``set-threads`` with every rule capped at ``cpus``."""
    return {rule: min(int(n), cpus) for rule, n in profile.get("set-threads", {}).items()}


def threads_args(threads: dict[str, int]) -> list[str]:
    return ["--set-threads", *(f"{rule}={n}" for rule, n in sorted(threads.items()))]


def local_slurm_profile(dest: Path, cpus: int, memory_mb: int) -> Path:
    """The workflow's SLURM profile adjusted to a small GPU-less test cluster; returns its folder.

    What changes, and only that: job status from ``squeue`` (no accounting database), a 5 s
    first status check and 5 s between checks, partition ``debug``, no GPUs (``gpu: 0``, no
    model or GPU partition), every rule's threads those of the local tiny runs
    (:func:`tiny_threads`: 1, so that jobs share the node) and the group width capped at the
    node's CPUs, every memory request capped at the node's memory shared by as many jobs as it
    has CPUs (``min(<profile's expression>, memory_mb // cpus)``), no retry. Everything else
    (per-rule runtimes, groups and group sizes, keep-going) is the profile's.
    """
    job_mb = max(1, memory_mb // cpus)
    profile = render_profile(PROFILES / "slurm" / "config.yaml")
    profile.pop("__definitions__", None)
    profile.pop("__use_yte__", None)
    profile.update(
        {
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 5,
            "seconds-between-status-checks": 5,
            "slurm-keep-successful-logs": True,
            "latency-wait": 10,
            "retries": 0,
            "cores": cpus,
        }
    )
    profile["resources"] = {**profile.get("resources", {}), "mem_mb": memory_mb, "gpu": 0}
    defaults = {k: v for k, v in profile["default-resources"].items() if k != "slurm_account"}
    defaults["slurm_partition"] = "debug"
    defaults["mem_mb"] = min(int(defaults["mem_mb"]), job_mb)
    profile["default-resources"] = defaults
    per_rule = {}
    for rule, res in profile.get("set-resources", {}).items():
        res = {k: v for k, v in res.items() if k not in ("gpu_model", "slurm_partition")}
        if "gpu" in res:
            res["gpu"] = 0
        if "mem_mb" in res:
            res["mem_mb"] = f"min({res['mem_mb']}, {job_mb})"
        per_rule[rule] = res
    profile["set-resources"] = per_rule
    profile["set-threads"] = tiny_threads()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return dest


def copy_project(project: WorkflowProject, dest: Path) -> WorkflowProject:
    """A copy of the project folder (results, logs and Snakemake's records included, file times
    kept) whose config names the copy's own region file and boundary."""
    import shutil

    dest = Path(dest).resolve()
    shutil.copytree(project.root, dest, symlinks=True)
    copy = WorkflowProject(dest, project.region, project.tile_px, list(project.tiles),
                           dict(project.env), list(project.stacked))  # fmt: skip
    settings = yaml.safe_load(copy.region_file.read_text())
    settings["boundary"] = str(dest / Path(settings["boundary"]).relative_to(project.root))
    rewrite_yaml(copy.region_file, settings)
    config = yaml.safe_load(copy.config.read_text())
    config["regions"][copy.region] = str(copy.region_file)
    rewrite_yaml(copy.config, config)
    return copy


def rewrite_yaml(path: Path, data: dict) -> None:
    """Write YAML keeping the file's modification time (config files are no rule's input)."""
    stat = path.stat()
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


TINY_CPUS = 2
TINY_THREADS = 1
"""Threads of every job of a tiny run: its jobs are mostly start-up (Python, PyTorch), which one
thread does as fast as two, so two jobs side by side on 2 CPUs finish the run in about 60 % of
the time that 2-thread jobs one after the other take."""


def tiny_threads() -> dict[str, int]:
    """Threads per rule for tiny runs, local and on the test cluster alike (results depend on
    the thread counts of the training jobs): every rule of the SLURM profile's ``set-threads``
    at :data:`TINY_THREADS`."""
    return capped_threads(render_profile(PROFILES / "slurm" / "config.yaml"), TINY_THREADS)


def tiny_local_args() -> list[str]:
    return ["--cores", str(TINY_CPUS), *threads_args(tiny_threads())]


def run_tiny_project(base: Path, timeout: float = 2400) -> WorkflowProject:
    """The tiny project in ``base`` run locally to its maps, reports and stack VRT; Snakemake's
    log is kept in ``base/run.log`` and its wall time in ``base/run.seconds`` (the fixture
    ``completed_tiny`` in tests/conftest.py runs it once per session)."""
    project = make_project(Path(base).resolve())
    targets = [*project.maps(), *project.reports(), f"results/{project.region}/stack.vrt"]
    run = run_snakemake(
        project, *targets, extra_args=tiny_local_args(), timeout=timeout, check=False
    )
    project.path("run.log").write_text(run.log)
    run.check()
    project.path("run.seconds").write_text(f"{run.seconds:.1f}\n")
    return project


@dataclass
class SecondRun:
    """The tiny project run from nothing a second time, in a folder of its own, to its maps
    (:func:`run_second_tiny`): ``run`` (not checked: each test asserts it and shows its log),
    ``via`` ``"slurm"`` or ``"local"``, and through SLURM the jobs as SLURM listed them."""

    project: WorkflowProject
    run: SnakemakeRun
    via: str
    jobs: list[dict[str, str]] = field(default_factory=list)


def run_second_tiny(base: Path, cluster: SlurmCluster | None = None) -> SecondRun:
    """The tiny project in ``base`` run from nothing to its maps: through the workflow's SLURM
    profile (:func:`local_slurm_profile`) on ``cluster`` when given, else locally with the
    cluster run's thread counts (:func:`tiny_local_args`). Its log is ``base/run.log``."""
    project = make_project(Path(base).resolve())
    if cluster is None:
        run = run_snakemake(project, *project.maps(), extra_args=tiny_local_args(),
                            timeout=1800, check=False)
        project.path("run.log").write_text(run.log)
        return SecondRun(project, run, "local")
    profile = local_slurm_profile(project.root / "profile", cluster.cpus, cluster.memory_mb)
    run = run_snakemake(
        project, *project.maps(), extra_args=["--profile", str(profile)], timeout=1500,
        env=cluster_env(cluster, project.env), check=False,
    )  # fmt: skip
    project.path("run.log").write_text(run.log)
    jobs = list_jobs(cluster, run.log, project.path("slurm_jobs.txt"))
    return SecondRun(project, run, "slurm", jobs)


def snakemake_command(
    project: WorkflowProject, *targets: str, extra_args: tuple[str, ...] | list[str] = ()
) -> list[str]:
    return [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(SNAKEFILE),
        "--directory", str(project.root),
        *targets,  # before the options that take any number of values (--configfile, --quiet)
        "--configfile", str(project.config),
        *extra_args,
    ]  # fmt: skip


def run_snakemake(
    project: WorkflowProject,
    *targets: str,
    extra_args: tuple[str, ...] | list[str] = ("--cores", "2"),
    timeout: float = 900,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> SnakemakeRun:
    """Run snakemake on the project (in its own process group, killed whole on timeout)."""
    cmd = snakemake_command(project, *targets, extra_args=extra_args)
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=project.root, env=env or project.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out, err = proc.communicate()
        err += f"\n(killed after {timeout:.0f} s)"
    run = SnakemakeRun(cmd, proc.returncode, out, err, time.monotonic() - start)
    return run.check() if check else run


def stop_group(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM the process group ``proc`` leads, then SIGKILL it after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def parse_job_stats(text: str) -> dict[str, int]:
    """The first "Job stats" table of Snakemake's output as {rule: count} (without "total")."""
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Job stats:")
    except StopIteration:
        return {}
    counts: dict[str, int] = {}
    for line in lines[start + 3 :]:
        m = re.match(r"^(\S+)\s+(\d+)\s*$", line)
        if not m:
            break
        if m.group(1) == "total":
            break
        counts[m.group(1)] = int(m.group(2))
    return counts


def planned_jobs(
    project: WorkflowProject,
    *targets: str,
    extra_args: tuple[str, ...] | list[str] = (),
    timeout: float = 600,
) -> dict[str, int]:
    """Jobs per rule that ``snakemake --dry-run`` plans for ``targets`` ({} when none)."""
    run = run_snakemake(
        project, *targets, extra_args=["--dry-run", "--quiet=rules", *extra_args],
        timeout=timeout,
    )  # fmt: skip
    if "Nothing to be done" in run.log:
        return {}
    counts = parse_job_stats(run.log)
    if not counts:
        raise AssertionError(f"no 'Job stats' in the dry run's output:\n{tail(run.log, 40)}")
    return counts
