"""Tiling invariance of a finished region's maps: remake them with another tile size, same model.

    python scripts/compare_tilings.py --tile-px 256 [--region demo] [--project .] [--work DIR]

Copies the project (its code and config, the region's sources, samples and trained models, with
their times kept) into WORK, sets the region's ``tile_px`` there, and runs Snakemake to the
region's maps: the stacks (first, on their own) and predictions are made again on the new tiles,
the models are the same files (training reads the stacks as ``ancient``, so nothing is
retrained; the script stops if Snakemake plans to). Then compares the
maps with the project's, pixel for pixel, in stored counts (UInt8 percent for probabilities,
the class index for soil order), and prints the figures. Both runs must use the same lattice:
only the tile size differs. Exits non-zero when any probability differs by more than one count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio
import yaml

CODE = ("Snakefile", "workflow", "config", "envs", "mapper", "pyproject.toml")


def prepare(project: Path, work: Path, region: str, tile_px: int) -> None:
    work.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src, dst = project / name, work / name
        if dst.exists():
            continue
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    for rel in (f"resources/{region}", f"results/{region}/samples", f"results/{region}/models"):
        if not (work / rel).exists():
            shutil.copytree(project / rel, work / rel)  # copy2: modification times kept
    regions = yaml.safe_load((work / "config/config.yaml").read_text())["regions"]
    region_file = work / regions[region]
    settings = yaml.safe_load(region_file.read_text())
    settings["tile_px"] = tile_px
    region_file.write_text(yaml.safe_dump(settings, sort_keys=False))


def run(work: Path, region: str, cores: int) -> float:
    """Stacks first (a job that makes a model's input would retrain it), then the maps."""
    targets = [f"maps/nsp_{region}.tif", f"maps/soilorder_{region}.tif"]
    # the rules' `python -m mapper` must be this interpreter, also when it is called by path
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PYTHONPATH": str(work), "PATH": path}
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores),
                    f"results/{region}/stack.vrt"], cwd=work, check=True, env=env)
    plan = subprocess.run([sys.executable, "-m", "snakemake", *targets, "-n", "--quiet", "rules"],
                          cwd=work, capture_output=True, text=True, check=True)
    planned = plan.stdout + plan.stderr
    for rule in ("pretrain", "finetune", "samples"):
        if f"\n{rule} " in planned or planned.startswith(f"{rule} "):
            raise SystemExit(f"error: the copy would retrain ({rule}):\n{planned}")
    subprocess.run([sys.executable, "-m", "snakemake", "--cores", str(cores), *targets],
                   cwd=work, check=True, env=env)
    return time.perf_counter() - t0


def compare(a_path: Path, b_path: Path) -> dict:
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        if (a.bounds, a.res, a.crs, a.count) != (b.bounds, b.res, b.crs, b.count):
            raise SystemExit(f"error: {a_path} and {b_path} differ in grid or band count")
        x, y = a.read().astype(np.int16), b.read().astype(np.int16)
        nodata = a.nodata
    same_nodata = bool(((x == nodata) == (y == nodata)).all())
    valid = (x != nodata) & (y != nodata)
    diff = np.abs(x - y)[valid]
    return {"pixels": int(valid.sum()), "nodata_identical": same_nodata,
            "max_count_diff": int(diff.max()) if diff.size else 0,
            "share_identical": float((diff == 0).mean()) if diff.size else 1.0,
            "share_within_one": float((diff <= 1).mean()) if diff.size else 1.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--region", default="demo")
    ap.add_argument("--tile-px", type=int, required=True)
    ap.add_argument("--work", type=Path, help="default: <project>/results/tilings/<tile_px>")
    ap.add_argument("--cores", type=int, default=2)
    args = ap.parse_args()
    project = args.project.resolve()
    work = (args.work or project / "results" / "tilings" / str(args.tile_px)).resolve()
    with open(project / yaml.safe_load((project / "config/config.yaml").read_text())
              ["regions"][args.region]) as f:
        base_px = yaml.safe_load(f)["tile_px"]
    prepare(project, work, args.region, args.tile_px)
    seconds = run(work, args.region, args.cores)
    out = {"region": args.region, "tile_px": [base_px, args.tile_px], "seconds": seconds}
    for name in (f"nsp_{args.region}", f"soilorder_{args.region}",
                 f"soilorder_{args.region}_probabilities"):
        out[name] = compare(project / "maps" / f"{name}.tif", work / "maps" / f"{name}.tif")
    print(json.dumps(out, indent=2))
    worst = max(out[k]["max_count_diff"] for k in out if k.endswith(("nsp_" + args.region,
                                                                        "_probabilities")))
    print(f"tile_px {base_px} vs {args.tile_px}: largest probability difference {worst} "
          f"count(s) of 0.01; soil order classes identical on "
          f"{100 * out[f'soilorder_{args.region}']['share_identical']:.3f} % of pixels")
    if worst > 1 or not all(v["nodata_identical"] for v in out.values() if isinstance(v, dict)):
        sys.exit(1)


if __name__ == "__main__":
    main()
