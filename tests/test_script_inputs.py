"""The measuring scripts (scripts/*.py, benchmarks/*.py) on missing inputs: one line that names
the file and the fix, exit status non-zero, no traceback. What they write is written under a
temporary name and renamed; ``make clean-demo`` removes the demo's files and no other region's."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``name``: a script of scripts/, or a path from the project root (benchmarks/...)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    path = ROOT / name if "/" in name else ROOT / "scripts" / name
    return subprocess.run([sys.executable, str(path), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the configs of the repository and nothing made yet."""
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


@pytest.mark.parametrize(
    ("script", "args", "named", "fix"),
    [
        ("edge_bias.py", [], "maps/nsp_demo.tif", "make demo"),
        ("map_vs_truth.py", [], "maps/nsp_demo.tif", "make demo"),
        ("map_vs_truth.py", ["--maps", "."], "resources/demo/truth/nsp.tif", "--truth"),
        ("plot_demo.py", [], "resources/demo/sources/sentinel2.tif", "make demo"),
        ("jump_ratio.py", ["maps/nsp_demo.tif"], "maps/nsp_demo.tif", "make demo"),
        ("stage_times.py", [], ".snakemake/log", "give the log's path"),
        ("stage_times.py", ["run.log"], "run.log", ".snakemake/log/"),
        ("compare_tilings.py", ["--tile-px", "256"], "maps/nsp_demo.tif",
         "make its maps first (snakemake --cores 2 maps/nsp_demo.tif maps/soilorder_demo.tif"),
        ("benchmarks/bench_training.py", [], "results/demo/samples/folds.parquet",
         "snakemake --cores 2 results/demo/samples/folds.parquet"),
    ],
)
def test_a_missing_input_is_one_line_naming_the_file_and_the_fix(
    project: Path, script: str, args: list[str], named: str, fix: str
) -> None:
    if "--maps" in args:  # maps present, truth missing
        (project / "nsp_demo.tif").write_bytes(b"")
        (project / "soilorder_demo.tif").write_bytes(b"")
    run = run_script(script, *args, cwd=project)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert named in lines[0] and fix in lines[0], lines[0]
    assert not (project / "docs").exists()  # plot_demo made no output folder
    assert not (project / "results").exists()  # compare_tilings copied nothing


def test_outside_a_project_the_error_names_the_config_and_the_option(tmp_path: Path) -> None:
    run = run_script("edge_bias.py", "--project", str(tmp_path), cwd=tmp_path)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        "error: config/config.yaml: config file not found; check the path "
        "(--project: the project's folder, default the current one)"
    ]
    run = run_script("compare_tilings.py", "--tile-px", "256", cwd=tmp_path)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'config/config.yaml'}: config file not found; check the path "
        "(--project: the project's folder)"
    ]
    assert list(tmp_path.iterdir()) == []


def test_edge_bias_across_without_a_truth_is_one_line_naming_it(project: Path) -> None:
    """--across compares with the truth: a region without one (a real region) is refused, not
    skipped with the figures it asked for missing."""
    (project / "maps").mkdir()
    (project / "maps/nsp_demo.tif").write_bytes(b"")  # present: the truth is what is missing
    run = run_script("edge_bias.py", "--across", cwd=project)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: resources/demo/truth/nsp.tif: no such truth raster; --across needs a synthetic "
        "region's truth (only a synthetic region has one: make demo for the demo's)"
    ]
    assert run.stdout == ""


def test_jump_ratio_reads_its_config_from_any_folder_and_a_bad_one_is_one_line(
    tmp_path: Path,
) -> None:
    """The default is the project's config wherever the script runs; a missing or unreadable
    --config is one error line naming it, before any figure."""
    import rasterio
    from affine import Affine

    from mapper.config import load_config

    grid = load_config(ROOT / "config/config.yaml")["grid"]
    (x0, y0), res = grid["origin"], grid["res"]
    profile = {"driver": "GTiff", "height": 40, "width": 40, "count": 1, "dtype": "uint8",
               "nodata": 255, "crs": "EPSG:3338",
               "transform": Affine(res, 0, x0 + 3 * res, 0, -res, y0 - 5 * res)}
    with rasterio.open(tmp_path / "map.tif", "w", **profile) as ds:
        ds.write(np.random.default_rng(0).integers(0, 101, (40, 40), dtype=np.uint8), 1)
    run = run_script("jump_ratio.py", "map.tif", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "lines counted from the lattice (first pixel at row 5, col 3)" in run.stdout
    other = tmp_path / "other" / "config.yaml"  # another project's: its regions are not read
    other.parent.mkdir()
    other.write_text("regions: {demo: regions/demo.yaml}\n")
    run = run_script("jump_ratio.py", "map.tif", "--config", other, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    (tmp_path / "bad.yaml").write_text("grid: [unclosed\n")
    for config, problem in [("missing.yaml", "config file not found; check the path"),
                            ("bad.yaml", "line 2, column 1: not valid YAML (ParserError: "
                                         "expected ',' or ']', but got '<stream end>'); fix the "
                                         "syntax")]:
        run = run_script("jump_ratio.py", "map.tif", "--config", config, cwd=tmp_path)
        assert run.returncode == 1
        sep = ", " if problem.startswith("line") else ": "
        assert run.stderr.strip().splitlines() == [f"error: {tmp_path / config}{sep}{problem}"]
        assert run.stdout == ""


@pytest.mark.parametrize("bench", ["benchmarks/bench_stack.py", "benchmarks/bench_context.py"])
def test_a_benchmark_outside_the_project_says_where_to_run_it(tmp_path: Path, bench: str) -> None:
    run = run_script(bench, cwd=tmp_path)
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()  # one line: the file, and where to run from
    assert line.startswith("error: config/regions/demo.yaml: ") and "not found" in line
    assert line.endswith(("(run from the project's root)", "runs in: the project's)"))


@pytest.mark.parametrize(
    ("bench", "args", "line"),
    [
        ("benchmarks/bench_memory.py", ["--model", "missing.pt"],
         "error: {cwd}/missing.pt: no such checkpoint; train the model first or fix the path"),
        ("benchmarks/bench_dag.py", ["--region", "nowhere"],
         "error: {root}/config/config.yaml: no region 'nowhere' (known: {known}); give --region "
         "one of them"),
    ],
)  # fmt: skip
def test_a_benchmark_that_runs_from_anywhere_names_the_input_not_the_folder(
    tmp_path: Path, bench: str, args: list[str], line: str
) -> None:
    """These find the project's files beside their own: no "run from the project's root"."""
    known = ", ".join(sorted(yaml.safe_load((ROOT / "config/config.yaml").read_text())["regions"]))
    run = run_script(bench, *args, cwd=tmp_path)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        line.format(cwd=tmp_path.resolve(), root=ROOT, known=known)
    ]
    assert list(tmp_path.iterdir()) == []


def test_bench_predict_only_takes_the_names_skip_takes(tmp_path: Path) -> None:
    run = run_script("benchmarks/bench_predict.py", "--only", "e2e", "authros", cwd=tmp_path)
    assert run.returncode == 2
    assert "argument --only: invalid choice: 'authros'" in run.stderr.strip().splitlines()[-1]
    assert run.stdout == ""  # nothing ran


def load_script(name: str) -> ModuleType:
    """scripts/<name> as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(Path(name).stem, ROOT / "scripts" / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_plot_demo_replaces_a_picture_whole(tmp_path: Path) -> None:
    """A file hard-linked to the old picture keeps its bytes (a write in place would change
    both), the new one is a PNG, and no temporary file is left beside it."""
    import matplotlib.pyplot as plt
    from PIL import Image

    plot_demo = load_script("plot_demo.py")
    out, maps = tmp_path / "docs", tmp_path / "maps"
    out.mkdir()
    maps.mkdir()
    for name in ("climate.png", "map_nsp.png"):
        (tmp_path / f"old_{name}").write_bytes(b"old")
        os.link(tmp_path / f"old_{name}", out / name)
    Image.new("RGB", (16, 16), "red").save(maps / "nsp_demo.png")
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    plot_demo._save(fig, out / "climate.png")
    plot_demo.copy_map_quicklooks(maps, out)
    for name in ("climate.png", "map_nsp.png"):
        assert (tmp_path / f"old_{name}").read_bytes() == b"old"
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        with Image.open(out / name) as image:
            assert image.mode == "P"  # indexed colour
    assert sorted(p.name for p in out.iterdir()) == ["climate.png", "map_nsp.png"]


def rule_paths(region: str) -> list[tuple[Path, bool]]:
    """Every ``output:`` and ``log:`` path of workflow/rules/*.smk under logs/, maps/, results/
    and resources/, its region (when it has one) ``region``, its task each task, any other
    wildcard its own name; with whether the path is one of that region's."""
    from mapper.tasks import TASKS

    paths = []
    for rules in sorted((ROOT / "workflow/rules").glob("*.smk")):
        directive = None
        for line in rules.read_text().splitlines():
            if not line.startswith(" " * 5):  # a rule, a directive (4 spaces) or a blank line
                directive = (re.match(r" {4}(\w+):", line) or [None, None])[1]
            if directive not in ("output", "log"):
                continue
            for pattern in re.findall(r'"((?:logs|maps|results|resources)/[^"]+)"', line):
                for task in TASKS:
                    path = pattern.replace("{region}", region).replace("{task}", task)
                    path = re.sub(r"\{(\w+)\}", r"\1", path)  # {tile} -> tile
                    paths.append((Path(path), "{region}" in pattern))
    return paths


def test_clean_demo_removes_the_demo_files_and_no_other_region(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    made = {}
    (tmp_path / "config").mkdir()  # demo2, demo_world2: names that begin with the demo's
    (tmp_path / "config" / "config.yaml").write_text(
        "regions:\n" + "".join(f"  {r}: regions/{r}.yaml\n" for r in
                               ("demo", "alaska", "demo2", "demo_world2")))
    for region in ("demo", "alaska", "demo2", "demo_world2"):
        for path, regional in rule_paths(region):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).touch()
            made[path] = regional and region == "demo"
    assert Path("logs/samples/demo.log") in made and Path("maps/nsp_demo2.tif") in made
    run = subprocess.run(["make", "-s", "-f", str(ROOT / "Makefile"), "clean-demo"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 0, run.stderr
    removed = sorted(str(p) for p, demo in made.items() if demo)
    assert sorted(str(p) for p in made if not (tmp_path / p).exists()) == removed


def test_compare_tilings_copies_a_folder_whole_or_not_at_all(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copy skips what exists, so a copy cut short must not sit under the final name; the
    next run replaces what the cut one left under the temporary name."""
    module = load_script("compare_tilings.py")
    src = tmp_path / "project" / "results" / "demo" / "models"
    src.mkdir(parents=True)
    for name in ("nsp.pt", "soilorder.pt"):
        (src / name).write_bytes(name.encode())
    dst = tmp_path / "work" / "results" / "demo" / "models"
    copied = []

    def cut(a: str, b: str, **kw: object) -> str:
        if copied:
            raise KeyboardInterrupt  # the run killed after the first file
        copied.append(b)
        return shutil.copy2(a, b)

    monkeypatch.setattr(module.shutil, "copy2", cut)
    with pytest.raises(KeyboardInterrupt):
        module.copy_whole(src, dst)
    assert not dst.exists() and len(copied) == 1
    monkeypatch.undo()
    module.copy_whole(src, dst)
    assert sorted(p.name for p in dst.iterdir()) == ["nsp.pt", "soilorder.pt"]
    assert [p.name for p in dst.parent.iterdir()] == ["models"]


def test_cleaning_a_region_leaves_a_region_whose_name_it_begins(tmp_path: Path) -> None:
    """``make clean-demo`` (scripts/clean_region.py demo): the demo's sources, results, maps and
    logs go; those of a region named demo_world2 stay, where a glob such as
    ``logs/*/demo_*.log`` would take them too; nothing goes with --dry-run."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "regions:\n  demo: regions/demo.yaml\n  demo_world2: regions/demo_world2.yaml\n")
    demo = ["resources/demo/sources/demo.json", "results/demo/stack/R0001C0001.tif",
            "maps/nsp_demo.tif", "maps/nsp_demo.stac.json", "maps/soilorder_demo.png",
            "maps/nsp_demo_uncertainty.tif", "maps/soilorder_demo_probabilities.tif",
            "logs/stack/demo_R0001C0001.log", "logs/samples/demo.log",
            "logs/train/demo_nsp.log", "logs/sources/demo_demo.log"]
    other = ["resources/demo_world2/sources/demo.json", "results/demo_world2/stack/R1.tif",
             "maps/nsp_demo_world2.tif", "maps/nsp_demo_world2_uncertainty.tif",
             "logs/stack/demo_world2_R0001C0001.log", "logs/samples/demo_world2.log",
             "logs/sources/demo_world2_demo.log", "logs/train/alaska_nsp.log"]
    for name in demo + other:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    run = run_script("clean_region.py", "demo", "--dry-run", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "11 path(s) of region demo to delete"
    assert all((tmp_path / name).exists() for name in demo + other)
    run = run_script("clean_region.py", "demo", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert [n for n in demo if (tmp_path / n).exists()] == []
    assert [n for n in other if not (tmp_path / n).exists()] == []
    assert (tmp_path / "resources").exists() and not (tmp_path / "resources" / "demo").exists()
