"""Tiling invariance of a finished region's maps: remake them with another tile size, same model.

    python scripts/compare_tilings.py --tile-px 256 [--region demo] [--project .] [--work DIR]

Copies the project (its code and config, the region's sources, samples and trained models, with
their times kept) into WORK, sets the region's ``tile_px`` there, and runs Snakemake to the
region's maps: the stacks (first, on their own) and predictions are made again on the new tiles,
the models are the same files (training reads the stacks as ``ancient``, so nothing is
retrained; the script stops if Snakemake plans to). Then compares the
maps with the project's, pixel for pixel, in stored counts (UInt8 percent for probabilities,
the class index for soil order), and prints the figures. Both runs must use the same lattice:
only the tile size differs.

Any region works: a tile-aligned square, or an irregular polygon (e.g. given in EPSG:4326) with a
buffer. Figures per map: the pixels compared, those in *edge tiles* (tiles of either tiling not
wholly inside the mapped area, where the context of a crop crosses the region's edge) and how
many differ there, and whether every pixel whose centre lies outside the mapped area (the
boundary buffered by ``buffer_m``) is nodata in both maps. A project without its own Snakefile
(a test's project folder, whose config names its region file by absolute path) is run with this
repository's. Exits non-zero when any probability differs by more than one count, when the maps'
nodata differ, or when a pixel outside the mapped area has a value. A tile size that the region's
settings cannot use (``stack.hydro_block_px`` must nest with it, a STAC source's ``block_px``
divide it) stops the script with one line before it copies anything, as does a region whose maps
(and the sources, samples and models the copy reuses) the project has not made.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import rasterio
import shapely
import yaml
from rasterio.windows import Window

CODE = ("Snakefile", "workflow", "config", "envs", "mapper", "pyproject.toml")
REPO = Path(__file__).resolve().parent.parent


def copy_whole(src: Path, dst: Path) -> None:
    """Copy a file or folder under a temporary name, then rename it into place: a copy cut short
    (a killed run) is never taken for a whole one by the next run, which skips what exists."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    if tmp.is_dir():
        shutil.rmtree(tmp)
    tmp.unlink(missing_ok=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():  # copy2: modification times kept
        shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("__pycache__"),
                        copy_function=shutil.copy2)
    else:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def prepare(project: Path, work: Path, region: str, tile_px: int) -> None:
    from mapper.files import atomic_path

    work.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        src, dst = project / name, work / name
        if not dst.exists() and src.exists():
            copy_whole(src, dst)
    for rel in (f"resources/{region}", f"results/{region}/samples", f"results/{region}/models"):
        if not (work / rel).exists():
            copy_whole(project / rel, work / rel)
    config_file = work / "config/config.yaml"
    config = yaml.safe_load(config_file.read_text())
    named = Path(config["regions"][region])
    if named.is_absolute():  # a test project's: write the copy's own region file
        settings = yaml.safe_load(named.read_text())
        named = Path("config/regions") / f"{region}.yaml"
        config["regions"][region] = str(work / named)
        with atomic_path(config_file) as tmp:
            tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    else:
        settings = yaml.safe_load((work / named).read_text())
    settings["tile_px"] = tile_px
    with atomic_path(work / named) as tmp:  # folders made
        tmp.write_text(yaml.safe_dump(settings, sort_keys=False))


def run(work: Path, region: str, cores: int) -> float:
    """Stacks first (a job that makes a model's input would retrain it), then the maps."""
    targets = [f"maps/nsp_{region}.tif", f"maps/soilorder_{region}.tif"]
    # the rules' `python -m mapper` must be this interpreter, also when it is called by path
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    code = work if (work / "mapper").is_dir() else REPO
    env = {**os.environ, "PYTHONPATH": str(code), "PATH": path}
    snakemake = [sys.executable, "-m", "snakemake"]
    # last on the line: --configfile takes every value that follows it
    project = [] if (work / "Snakefile").exists() else [
        "--snakefile", str(REPO / "Snakefile"), "--configfile", str(work / "config/config.yaml")]
    t0 = time.perf_counter()
    subprocess.run([*snakemake, f"results/{region}/stack.vrt", "--cores", str(cores), *project],
                   cwd=work, check=True, env=env)
    plan = subprocess.run([*snakemake, *targets, "-n", "--quiet", "rules", *project],
                          cwd=work, capture_output=True, text=True, env=env)
    planned = plan.stdout + plan.stderr
    if plan.returncode:
        raise SystemExit(f"error: the dry run of the copy failed:\n{planned}")
    for rule in ("pretrain", "finetune", "samples"):
        if f"\n{rule} " in planned or planned.startswith(f"{rule} "):
            raise SystemExit(f"error: the copy would retrain ({rule}):\n{planned}")
    subprocess.run([*snakemake, *targets, "--cores", str(cores), *project], cwd=work, check=True,
                   env=env)
    return time.perf_counter() - t0


@dataclass
class Region:
    """What the comparison needs of the region: its mapped area and the two tilings."""

    area: shapely.Geometry
    lattices: list  # [mapper.grid.Lattice] of both tile sizes


def check_tile_size(project: Path, region: str, tile_px: int) -> int:
    """The region's own tile size (region_overrides included). Stops before copying anything when
    the region's settings cannot work at ``tile_px`` (e.g. ``stack.hydro_block_px`` does not nest
    with it): one line naming the region file and key."""
    from mapper.config import load_region, read_yaml, resolve_config
    from mapper.errors import ConfigError

    try:
        raw = read_yaml(project / "config/config.yaml")
    except ConfigError as err:
        raise SystemExit(f"error: {err} (--project: the project's folder)") from None
    with contextlib.chdir(project):  # the config's relative paths are relative to it
        try:
            config = resolve_config(raw, "config/config.yaml")
            base_px = load_region(config, region).lattice.tile_px
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None
        raw.setdefault("region_overrides", {})[region] = {"tile_px": tile_px}
        try:
            resolve_config(raw, "config/config.yaml")
        except ConfigError as err:
            raise SystemExit(f"error: --tile-px {tile_px} does not fit region {region}: {err}") \
                from None
    return base_px


def check_finished(project: Path, region: str) -> None:
    """Stop before copying anything when the project has not made the region's maps and what
    the copy reuses (sources, samples, models): one line naming the first missing path."""
    needed = [f"maps/{name}_{region}.tif" for name in ("nsp", "soilorder")]
    needed += [f"resources/{region}", f"results/{region}/samples", f"results/{region}/models"]
    for rel in needed:
        if not (project / rel).exists():
            raise SystemExit(f"error: {project / rel}: not found; the comparison remakes a "
                             f"finished region: make its maps first (snakemake --cores 2 "
                             f"maps/nsp_{region}.tif maps/soilorder_{region}.tif, in the project)")


def mapped_region(work: Path, region: str, tile_sizes: list[int]) -> Region:
    from mapper.config import load_config, load_region

    with contextlib.chdir(work):  # the config's relative paths are relative to the project
        loaded = load_region(load_config("config/config.yaml"), region)
        area = loaded.area()
    lattices = [replace(loaded.lattice, tile_px=p) for p in tile_sizes]
    return Region(area, lattices)


def masks(region: Region, ds: rasterio.DatasetReader) -> tuple[np.ndarray, np.ndarray]:
    """Bool [h, w] of a map's pixels: centre inside the mapped area; in an edge tile (of either
    tiling, a mapped tile not wholly inside the area)."""
    from mapper.grid import cells_inside, tiles_of

    lattice = region.lattices[0]
    k = round(ds.res[0] / lattice.res)
    c0 = round((ds.bounds.left - lattice.origin_x) / ds.res[0])
    r0 = round((lattice.origin_y - ds.bounds.top) / ds.res[0])
    inside = cells_inside(region.area, lattice, Window(c0, r0, ds.width, ds.height), k)
    edge = np.zeros(inside.shape, dtype=bool)
    rows, cols = np.mgrid[r0:r0 + ds.height, c0:c0 + ds.width] * k
    for lat in region.lattices:
        for tile in tiles_of(region.area, lat):
            if not shapely.contains_properly(region.area, shapely.box(*lat.tile_bounds(tile))):
                w = lat.tile_window(tile)
                edge |= ((rows >= w.row_off) & (rows < w.row_off + w.height)
                         & (cols >= w.col_off) & (cols < w.col_off + w.width))
    return inside, edge


def compare(a_path: Path, b_path: Path, region: Region) -> dict:
    with rasterio.open(a_path) as a, rasterio.open(b_path) as b:
        if (a.bounds, a.res, a.crs, a.count) != (b.bounds, b.res, b.crs, b.count):
            raise SystemExit(f"error: {a_path} and {b_path} differ in grid or band count")
        x, y = a.read().astype(np.int16), b.read().astype(np.int16)
        nodata = a.nodata
        inside, edge = masks(region, a)
    same_nodata = bool(((x == nodata) == (y == nodata)).all())
    valid = (x != nodata) & (y != nodata)
    diff = np.abs(x - y)[valid]
    at_edge = valid & edge[None]
    return {"pixels": int(valid.sum()), "nodata_identical": same_nodata,
            "max_count_diff": int(diff.max()) if diff.size else 0,
            "share_identical": float((diff == 0).mean()) if diff.size else 1.0,
            "share_within_one": float((diff <= 1).mean()) if diff.size else 1.0,
            "edge_tile_pixels": int(at_edge.sum()),
            "edge_tile_pixels_differing": int((x != y)[at_edge].sum()),
            "grid_pixels": int(inside.size * x.shape[0]),
            "outside_pixels": int((~inside).sum() * x.shape[0]),
            "outside_all_nodata": bool((x[:, ~inside] == nodata).all()
                                       and (y[:, ~inside] == nodata).all())}


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
    base_px = check_tile_size(project, args.region, args.tile_px)
    check_finished(project, args.region)
    prepare(project, work, args.region, args.tile_px)
    seconds = run(work, args.region, args.cores)
    region = mapped_region(work, args.region, [base_px, args.tile_px])
    out = {"region": args.region, "tile_px": [base_px, args.tile_px], "seconds": seconds}
    for name in (f"nsp_{args.region}", f"soilorder_{args.region}",
                 f"soilorder_{args.region}_probabilities"):
        out[name] = compare(project / "maps" / f"{name}.tif", work / "maps" / f"{name}.tif",
                            region)
    print(json.dumps(out, indent=2))
    worst = max(out[k]["max_count_diff"] for k in out if k.endswith(("nsp_" + args.region,
                                                                        "_probabilities")))
    print(f"tile_px {base_px} vs {args.tile_px}: largest probability difference {worst} "
          f"count(s) of 0.01; soil order classes identical on "
          f"{100 * out[f'soilorder_{args.region}']['share_identical']:.3f} % of pixels")
    maps = [v for v in out.values() if isinstance(v, dict)]
    print(f"edge tiles: {sum(v['edge_tile_pixels'] for v in maps)} pixel values compared, "
          f"{sum(v['edge_tile_pixels_differing'] for v in maps)} differ; outside the mapped area: "
          f"{'all nodata' if all(v['outside_all_nodata'] for v in maps) else 'VALUES FOUND'}")
    if worst > 1 or not all(v["nodata_identical"] and v["outside_all_nodata"] for v in maps):
        sys.exit(1)


if __name__ == "__main__":
    main()
