"""Peak memory of one tile's prediction against the tile size, and what the profiles declare.

Usage::

    python benchmarks/bench_memory.py                         # tile_px 128, 256, 512; both tasks
    python benchmarks/bench_memory.py --tile-px 256 1024 --tasks soilorder --threads 4
    python benchmarks/bench_memory.py --model results/demo/models/nsp.pt --tasks nsp
    python benchmarks/bench_memory.py --settings config/regions/alaska.yaml --size swinv2_b \
        --tile-px 256 --tasks soilorder                        # the statewide model and crops

For each tile size, a region of 3 x 3 tiles is made in a temporary folder with demo-like
SYNTHETIC stacks (19 bands of smooth random fields in physical ranges, a Sentinel-2 cloud gap) and
the demo region's prediction settings (``config/regions/demo.yaml``: crops, stride, out_res, or
those of ``--settings``); the
middle tile is predicted with its 8 neighbours by ``python -m mapper predict`` in a fresh process,
exactly as the workflow's ``predict`` job runs it, for each task (soil order keeps 7 probability
planes per pixel, NSP one). The model is the region's (the model settings of the demo region or
of ``--settings``: pixel query, aspect encoding; the size ``--size``, default the region's) with
random weights and a fitted normaliser (memory does not depend on the weights;
benchmarks/_common.py builds both) unless ``--model`` names a checkpoint. Peak
resident set size is that process's ``ru_maxrss`` (read by a parent that runs nothing else), so
it includes Python, PyTorch, GDAL's block cache and every transient buffer.

Also measured: the same command on an empty stack (``MAPPER_EMPTY=true``: imports and the
nodata write only, no model), the fixed part of every job. Printed: MB per tile size, the growth
per pixel of the tile per task, a linear extrapolation to the statewide tile size (``tile_px`` of
``config/regions/alaska.yaml``) with the same model, and the ``mem_mb`` the profiles in
``workflow/profiles/*/config.yaml`` give the predict rule (their own rule entry, else their
``default-resources``; expressions evaluated at attempt 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _common import random_checkpoint, synthetic_stacks  # noqa: E402
from cli_errors import run_main  # noqa: E402

ORIGIN = (-2_600_000.0, 2_600_000.0)
CENTRE = (251_840.0, 1_637_440.0)  # the demo area's centre (EPSG:3338 metres)
CHILD = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""
"""Runs one command and prints its exit code and peak RSS (KiB): the only child of this parent,
so RUSAGE_CHILDREN is exactly the command's."""


def region_files(folder: Path, tile_px: int, settings: dict, size: str) -> tuple[Path, list]:
    """Config and region file of a 3 x 3 tile region around the demo centre; its tile ids. The
    region takes the prediction and model settings of ``settings`` (a validated region file),
    the model at ``size``."""
    from mapper.grid import Lattice

    lattice = Lattice(*ORIGIN, 10.0, tile_px)
    middle = lattice.tile_of_xy(*CENTRE)
    tiles = sorted([middle, *lattice.neighbours(middle)])
    lefts, bottoms, rights, tops = zip(*(lattice.tile_bounds(t) for t in tiles), strict=True)
    ring = [[min(lefts), min(bottoms)], [max(rights), min(bottoms)], [max(rights), max(tops)],
            [min(lefts), max(tops)], [min(lefts), min(bottoms)]]
    (folder / "region.geojson").write_text(json.dumps({
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
        "features": [{"type": "Feature", "properties": {},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    (folder / "bench.yaml").write_text(yaml.safe_dump({
        "description": "memory benchmark region (SYNTHETIC stacks)", "synthetic": True,
        "boundary": str(folder / "region.geojson"), "tile_px": tile_px,
        "sources": {k: {"kind": "demo", "seed": 1}
                    for k in ("sentinel2", "dem", "climate", "observations")},
        "model": {**settings["model"], "size": size}, "prediction": settings["prediction"],
    }))
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "grid": {"crs": "EPSG:3338", "res": 10.0, "origin": list(ORIGIN)},
        "regions": {"bench": str(folder / "bench.yaml")}}))
    return folder / "config.yaml", tiles


def empty_stack(folder: Path, tile_px: int, tile: str) -> Path:
    from mapper.bands import STACK_BANDS
    from mapper.grid import Lattice
    from mapper.raster import write_geotiff

    lattice = Lattice(*ORIGIN, 10.0, tile_px)
    path = folder / "empty" / f"{tile}.tif"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_geotiff(path, np.full((19, tile_px, tile_px), np.nan, np.float32),
                  lattice.tile_transform(tile), "EPSG:3338", nodata=np.nan,
                  descriptions=STACK_BANDS,
                  tags={"MAPPER_TILE": tile, "MAPPER_EMPTY": "true", "MAPPER_SYNTHETIC": "true"})
    return path


def command_peak_rss_mb(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall time (s) of ``cmd`` in a fresh process."""
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", CHILD, *cmd], env=env, capture_output=True,
                         text=True, cwd=ROOT)
    seconds = time.perf_counter() - t0
    rc, kib = run.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({rc}):\n{run.stderr[-2000:]}")
    return int(kib) / 1024.0, seconds


def profile_memory() -> dict[str, str]:
    """mem_mb of the predict rule in each profile (rule entry, else default-resources)."""
    out = {}
    for cfg in sorted((ROOT / "workflow" / "profiles").glob("*/config.yaml")):
        data = yaml.safe_load(cfg.read_text()) or {}
        rule = (data.get("set-resources") or {}).get("predict") or {}
        value = rule.get("mem_mb", (data.get("default-resources") or {}).get("mem_mb"))
        source = "set-resources.predict" if "mem_mb" in rule else "default-resources"
        if isinstance(value, str):
            try:
                value = eval(value, {}, {"attempt": 1})  # noqa: S307 - the profile's expression
            except Exception:  # noqa: BLE001
                pass
        out[cfg.parent.name] = f"{value} MB ({source})" if value is not None else "not declared"
    return out


def main() -> None:
    from mapper.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tile-px", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the job "
                        "(the one-machine profile's predict threads: 2)")
    parser.add_argument("--batch-size", type=int, default=16, help="the rule's batch_size: 16")
    parser.add_argument("--tasks", nargs="+", default=["soilorder", "nsp"], choices=list(TASKS))
    parser.add_argument("--size", help="model size of the random model (default: the "
                        "settings' model.size)")
    parser.add_argument("--settings", type=Path, default=ROOT / "config/regions/demo.yaml",
                        help="region file whose prediction settings are used")
    parser.add_argument("--model", type=Path, help="a trained checkpoint instead (one task)")
    args = parser.parse_args()
    if args.model:  # read here and by the predict jobs, which run in the project's root
        args.model = args.model.resolve()

    from mapper.config import load_config, load_region, read_yaml
    from mapper.schema import validate

    settings = validate(read_yaml(args.settings), "region.schema.yaml", args.settings)
    prediction = settings["prediction"]
    size = args.size or settings["model"]["size"]
    if args.model:
        from mapper.models.checkpoint import describe_checkpoint

        size = describe_checkpoint(args.model)["size"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"python -m mapper predict, one tile with its 8 neighbours; model {size} "
          f"({args.model or 'random weights'}); crops {prediction['crop_px']} px, stride "
          f"{prediction['stride_px']} px, out_res {prediction['out_res']} m; batch "
          f"{args.batch_size}; {args.threads} thread(s)")
    tasks = args.tasks
    if args.model:
        from mapper.models.checkpoint import describe_checkpoint

        tasks = [describe_checkpoint(args.model)["task"]]
    print(f"{'task':>9} {'tile_px':>8} {'pixels':>10} {'peak RSS MB':>12} {'seconds':>8}  "
          "(empty tile MB)")
    rows: dict[str, list] = {t: [] for t in tasks}
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        for px in args.tile_px:
            folder = Path(tmp) / f"t{px}"
            folder.mkdir()
            config, tiles = region_files(folder, px, settings, size)
            region = load_region(load_config(config), "bench")
            stacks = synthetic_stacks(folder, region.lattice, tiles)
            middle = tiles[4]
            for task in tasks:
                model = args.model or random_checkpoint(folder / f"{task}.pt", region, task,
                                                        stacks, middle)
                base = [sys.executable, "-m", "mapper", "predict", "--config", str(config),
                        "--region", "bench", "--task", task, "--tile", middle, "--model",
                        str(model), "--batch-size", str(args.batch_size), "--no-progress",
                        "--device", "cpu"]
                empty_mb, _ = command_peak_rss_mb(
                    [*base, "--out", str(folder / "empty.tif"),
                     str(empty_stack(folder, px, middle))], env)
                mb, seconds = command_peak_rss_mb(
                    [*base, "--out", str(folder / f"{task}.tif"), *map(str, stacks.values())],
                    env)
                rows[task].append((px, mb, empty_mb))
                print(f"{task:>9} {px:>8} {px * px:>10,} {mb:>12.0f} {seconds:>8.1f}  "
                      f"({empty_mb:.0f})", flush=True)
    state_px = int(read_yaml(ROOT / "config/regions/alaska.yaml")["tile_px"])
    for task, found in rows.items():
        if len(found) < 2:
            continue
        px = np.array([r[0] ** 2 for r in found], dtype=float)
        mb = np.array([r[1] for r in found])
        slope, intercept = np.polyfit(px, mb, 1)
        print(f"{task}: linear fit {intercept:.0f} MB + {slope * 1e6:.1f} MB per million tile "
              f"pixels ({slope * 1e6 / 8:.1f} x 8-byte values per pixel); extrapolated to "
              f"tile_px {state_px} with this model: {intercept + slope * state_px ** 2:.0f} MB")
    print("declared for the predict rule:")
    for name, value in profile_memory().items():
        print(f"  workflow/profiles/{name}: {value}")


if __name__ == "__main__":
    run_main(main, from_root=False)
