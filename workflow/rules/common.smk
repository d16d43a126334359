# Helpers that compute file lists. Parse-time work stays cheap: every SLURM job parses this again.
# Tile lists are a pure function of each region's boundary and the lattice (no checkpoints).
import os
from pathlib import Path

from mapper.config import load_region

REGIONS = {name: load_region(config, name) for name in config["regions"]}
CONFIG_FILE = workflow.configfiles[-1]
TASKS = ["nsp", "soilorder"]


wildcard_constraints:
    region="|".join(REGIONS),
    tile=r"R\d{4}C\d{4}",
    task="|".join(TASKS),


def region_of(wildcards):
    return REGIONS[wildcards.region]


def tiles_of(region):
    """The region's tile ids (static: computed from the boundary and the lattice)."""
    return REGIONS[region].tiles()


def source_settings(region, source):
    return REGIONS[region].settings["sources"][source]


def stack_path(region, tile):
    return f"results/{region}/stack/{tile}.tif"


def all_stacks(region):
    return [stack_path(region, t) for t in tiles_of(region)]


def demo_source(region, name):
    return f"resources/{region}/sources/{name}"


def source_inputs(region, source, tile=None):
    """Local files the stack of ``tile`` reads for ``source`` (per the source's kind)."""
    s = source_settings(region, source)
    kind = s["kind"]
    if kind == "demo":
        names = {
            "sentinel2": "sentinel2.tif",
            "dem": "dem.tif",
            "climate": "climate.tif",
            "observations": "observations.csv",
        }
        return [demo_source(region, names[source])]
    if kind == "file":
        return [s["path"]]
    if kind == "http":
        return [
            f"resources/{region}/sources/{source}/{http_file_name(f)}" for f in s["files"]
        ]
    if kind == "stac":
        return [f"resources/{region}/sources/{source}/{tile}.tif"]
    raise ValueError(f"unknown source kind {kind!r}")


def http_file_name(entry):
    return entry.get("name") or os.path.basename(entry["url"].split("?")[0])


def tile_sentinel2(wildcards):
    return source_inputs(wildcards.region, "sentinel2", wildcards.tile)


def tile_dem(wildcards):
    return source_inputs(wildcards.region, "dem", wildcards.tile)


def tile_climate(wildcards):
    return source_inputs(wildcards.region, "climate", wildcards.tile)


def region_observations(wildcards):
    return source_inputs(wildcards.region, "observations")


def demo_products():
    """What `snakemake` with no target builds: the demo region's stacks (later stages add to it)."""
    return [f"results/demo/stack.vrt"]


def region_stacks(wildcards):
    return all_stacks(wildcards.region)
