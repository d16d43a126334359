"""The package as distributed: its runtime dependencies are what it imports, the conda environment
pins the same, and a built (not editable) wheel carries the schemas it validates with."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
WORKFLOW_ENGINE = {
    "snakemake": "the workflow engine: the Snakefile imports it, the package does not",
    "snakemake-executor-plugin-slurm": "Snakemake's SLURM executor (workflow/profiles/slurm)",
}
"""Runtime dependencies that ``mapper`` does not import, and why they are dependencies. The rules'
conda environment leaves them out: Snakemake runs its jobs from outside that environment."""


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned(requirements: list[str]) -> dict[str, str]:
    """``name==version`` requirements -> {normalised name: version}."""
    out = {}
    for req in requirements:
        name, _, version = req.partition("==")
        assert version, f"{req}: runtime dependencies are pinned exactly"
        out[normalise(name)] = version
    return out


def imported_modules() -> set[str]:
    """Top-level modules ``mapper`` imports anywhere (function-local imports included)."""
    found: set[str] = set()
    for path in (REPO / "mapper").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"mapper"}


def test_runtime_dependencies_are_what_the_package_imports() -> None:
    declared = set(pinned(PYPROJECT["project"]["dependencies"]))
    owners = packages_distributions()
    used = set()
    for module in sorted(imported_modules()):
        dists = {normalise(d) for d in owners.get(module, [])}
        assert dists & declared, (f"mapper imports {module} ({dists or 'not installed'}), "
                                  "which is not a runtime dependency in pyproject.toml")
        used |= dists & declared
    assert declared - used == set(WORKFLOW_ENGINE), "runtime dependencies nothing imports"


def test_the_conda_environment_pins_the_runtime_dependencies() -> None:
    env = yaml.safe_load((REPO / "envs" / "mapper.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    runtime = pinned(PYPROJECT["project"]["dependencies"])
    assert pinned(pip) == {k: v for k, v in runtime.items() if k not in WORKFLOW_ENGINE}
    # Snakemake copies the file into .snakemake/conda/ before conda reads it: no relative path
    assert not [r for r in pip if r.startswith("-")], "a pip option (-e, -r) in envs/mapper.yaml"
    assert f"python={PYPROJECT['project']['requires-python'].strip('=.*')}" in env["dependencies"]


def test_a_built_wheel_carries_the_schemas(tmp_path: Path) -> None:
    """Installed without ``-e`` (here: a wheel unpacked on PYTHONPATH), the package validates the
    shipped config with the schemas inside it."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed: cannot build the wheel offline")
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the code
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "mapper", source / "mapper",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         str(source), "-w", str(wheels)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = wheels.glob("mapper-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"mapper/schemas/config.schema.yaml", "mapper/schemas/region.schema.yaml"} <= names
        zf.extractall(tmp_path / "installed")
    probe = (
        "import mapper.config as c\n"
        "from mapper.config import load_config, load_region\n"
        "print(c.__file__)\n"
        "print(len(load_region(load_config('config/config.yaml'), 'demo').tiles()))\n"
    )
    run = subprocess.run(
        [sys.executable, "-P", "-c", probe], cwd=REPO, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "installed")}, timeout=120,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    where, tiles = run.stdout.split()
    assert Path(where) == tmp_path / "installed" / "mapper" / "config.py"
    assert tiles == "16"
