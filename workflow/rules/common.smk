# Helpers that compute file lists. Parse-time work stays cheap: every SLURM job parses this again.
# Tile lists are a pure function of each region's boundary and the lattice (no checkpoints).
import functools
import json
import os
import re
import sys
from pathlib import Path

from mapper.blending import BATCH_SIZE as PREDICT_BATCH_SIZE
from mapper.config import DEFAULT_CONFIG, RUN_CONFIG_ENV, resolve_config, write_run_config
from mapper.errors import MapperError
from mapper.experiment import MODELS, SPLITS
from mapper.grid import TILE_PATTERN
from mapper.sources.fetch import http_file_name as fetch_file_name
from mapper.sources.snap import VARIABLES as SNAP_VARIABLES
from mapper.sources.snap import archive_path as snap_archive_file
from mapper.tasks import OBSERVATION_COLUMNS, TASKS, task_names
from mapper.vrt import source_vrt_members
from mapper.zones import zone_layer_path as zone_layer_file

# REGIONS (name -> mapper.config.Region) comes from the Snakefile, which checks each one.
# The file every job reads its settings from: RUN_CONFIG, named by its content (so a run with other
# settings, or a dry run with an override, writes its own file), in the shared working directory.
RUN_CONFIG_FILE = write_run_config(RUN_CONFIG, ".snakemake/mapper")
# named to the jobs: a cluster job (sbatch passes the environment on) or a `run:` job parses the
# Snakefile again and takes its settings from this file (the Snakefile), by value
os.environ[RUN_CONFIG_ENV] = str(Path(RUN_CONFIG_FILE).resolve())
STAC_REGIONS = [
    n for n, r in REGIONS.items() if r.settings["sources"]["sentinel2"]["kind"] == "stac"
]
SYNTHESIZED_REGIONS = [
    name
    for name, r in REGIONS.items()
    if all(s["kind"] == "demo" for s in r.settings["sources"].values())
]


wildcard_constraints:
    region="|".join(REGIONS),
    tile=TILE_PATTERN,
    task="|".join(TASKS),


def run_config(wildcards, input):
    """The run's configuration file, for every command's --config.

    A params function of ``input``: Snakemake takes it as derived from the inputs and does not
    compare it with the last run's, so a change of settings reruns only the rules that have the
    changed section among their params (source_section, ...) or its settings file among
    their inputs (settings_files), not every job.
    """
    return RUN_CONFIG_FILE


def region_of(wildcards):
    return REGIONS[wildcards.region]


def tiles_of(region):
    """The region's mapped tiles, each predicted (static: from the boundary, its buffer and the
    lattice)."""
    return REGIONS[region].tiles()


def stacked_tiles(region):
    """The mapped tiles and the context tiles around them (within a crop's reach of the mapped
    area), each stacked: crops near the edge read the sources, not nodata."""
    return REGIONS[region].stacked_tiles()


@functools.cache
def tile_set(region, stacked):
    """The region's mapped (or stacked) tiles as a set, built once per parse."""
    return frozenset(stacked_tiles(region) if stacked else tiles_of(region))


def known_tile(region, tile, stacked):
    """``tile`` when it is one of the region's mapped (or stacked) tiles; else stop the plan with
    one line (SystemExit: Snakemake prints it as it is) naming it and how to list the region's."""
    if tile not in tile_set(region, stacked):
        what, flag = ("stacked", " --stacked") if stacked else ("mapped", "")
        sys.exit(
            f"error: {tile}: not a {what} tile of region '{region}' (tile_px "
            f"{REGIONS[region].settings['tile_px']}); list them with: python -m mapper tiles "
            f"{region}{flag}{config_options()}"
        )
    return tile


def config_options():
    """`` --config <the run's configuration file>`` when the run's settings are not those of
    config/config.yaml alone (a site file, ``--config KEY=VALUE``), which a ``python -m mapper``
    command reads unless told; else nothing. For the commands that messages suggest."""
    from mapper.config import load_config

    if load_config(DEFAULT_CONFIG) == RUN_CONFIG:
        return ""
    return f" --config {RUN_CONFIG_FILE}"


def stacked_tile(wildcards):
    """The wildcards' tile, checked against the region's stacked tiles."""
    return known_tile(wildcards.region, wildcards.tile, stacked=True)


def source_settings(region, source):
    return REGIONS[region].settings["sources"][source]


def stack_path(region, tile):
    return f"results/{region}/stack/{tile}.tif"


def all_stacks(region):
    return [stack_path(region, t) for t in stacked_tiles(region)]


def demo_source(region, name):
    return f"resources/{region}/sources/{name}"


def local_file(path, what, region):
    """``path``, a file the region file names by path (a source, weights or zone layer of kind
    file), when it is there; else stop the plan with one line naming it (SystemExit: Snakemake
    prints it as it is). Snakemake itself would, once the outputs made from it exist, take them
    as source files and plan nothing: a typo in a corrected file's path would be a silent no-op."""
    if not os.path.exists(path):
        sys.exit(
            f"error: {path}: {what} is not there; put the file there or fix its path in "
            f"{REGIONS[region].path}"
        )
    return path


def source_inputs(region, source, tile=None):
    """Local files the stack of ``tile`` reads for ``source`` (per the source's kind)."""
    s = source_settings(region, source)
    kind = s["kind"]
    if kind == "snap":  # climate normals derived from SNAP's monthly archives
        return [snap_normals_path(region, source)]
    if kind == "demo":
        if region not in SYNTHESIZED_REGIONS:
            sys.exit(
                f"error: source '{source}' of region '{region}' is of kind demo, which only a region "
                "whose sources are all of kind demo has (they are synthesized together); give "
                "it kind file, http, cells or stac in the region file"
            )
        names = {
            "sentinel2": "sentinel2.tif",
            "dem": "dem.tif",
            "climate": "climate.tif",
            "observations": "observations.csv",
        }
        return [demo_source(region, names[source])]
    if kind == "file":  # the observation table is checked by region_observations
        if source == "observations":
            return [s["path"]]
        return [local_file(s["path"], f"the {source} file of region '{region}'", region)]
    if kind == "http":
        return [f"resources/{region}/sources/{source}/{http_file_name(f)}" for f in s["files"]]
    if kind == "stac":
        return [f"resources/{region}/sources/{source}/{tile}.tif"]
    if kind == "cells":
        return dem_cell_records(region, source, tile)
    raise ValueError(f"unknown source kind {kind!r}")


def http_file_names():
    """Every file name an HTTP source of any region downloads (constrains the fetch rule)."""
    names = {
        http_file_name(f)
        for r in REGIONS.values()
        for s in r.settings["sources"].values()
        if s["kind"] == "http"
        for f in s["files"]
    }
    return one_of(sorted(names))


def one_of(names):
    """A wildcard constraint matching exactly one of ``names`` (never matching when empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def http_file_name(entry):
    """The local name of an http entry, by the rule the fetch job names it
    (``mapper.sources.fetch.http_file_name``)."""
    try:
        return fetch_file_name(entry)
    except MapperError as exc:
        sys.exit(f"error: {exc}")


# -- climate normals from SNAP's monthly archives (kind snap; mapper/sources/snap.py) ----------
SNAP_REGIONS = [n for n, r in REGIONS.items() if r.settings["sources"]["climate"]["kind"] == "snap"]


def snap_normals_path(region, source="climate"):
    """The 3-band normals raster derived from the region's SNAP archives (what the stack reads)."""
    return f"resources/{region}/sources/{source}/snap_normals.tif"


def snap_archive_path(region, variable, source="climate"):
    return str(snap_archive_file(f"resources/{region}/sources", source, variable))


def snap_archives(wildcards):
    """The region's three SNAP archives by variable (inputs of the derivation)."""
    return {v: snap_archive_path(wildcards.region, v) for v in SNAP_VARIABLES}


def snap_archive_settings(wildcards):
    """One archive's entry but its ``prefix`` (URL, sha256, size): a change of URL downloads it
    again; the prefix names its members, read by the derivation (snap_settings) alone, so
    correcting it keeps the archive."""
    entry = source_settings(wildcards.region, "climate")["archives"][wildcards.variable]
    return {k: v for k, v in entry.items() if k != "prefix"}


def snap_settings(wildcards):
    """The region's climate section: a change of period, URL or prefix reruns the derivation."""
    return source_settings(wildcards.region, "climate")


# -- end snap ------------------------------------------------------------------------------


def tile_sentinel2(wildcards):
    return source_inputs(wildcards.region, "sentinel2", stacked_tile(wildcards))


def tile_dem(wildcards):
    return source_inputs(wildcards.region, "dem", stacked_tile(wildcards))


def tile_climate(wildcards):
    return source_inputs(wildcards.region, "climate", stacked_tile(wildcards))


def tile_vrt_members(wildcards):
    """The files behind the region's sources given as a VRT that the stack of the tile reads
    (mapper.vrt.source_vrt_members). Snakemake sees only the file a source names, so a file
    corrected behind a VRT would reach no stack; listed here, it remakes the stacks within its
    reach and no other."""
    try:
        return source_vrt_members(region_of(wildcards), stacked_tile(wildcards))
    except MapperError as exc:
        sys.exit(f"error: {exc}")


def region_observations(wildcards):
    """The region's field observation table: the one input a user places by hand.

    A table of kind ``file`` that is not there stops the plan with one line naming it, its
    columns and the README section (SystemExit: Snakemake prints it as it is, without wrapping
    it in an InputFunctionException); one that is there is checked as the samples job would
    check it (:func:`observation_table_error`) and a bad one stops the plan with the job's error
    line. Only regions whose samples are planned are checked.
    """
    found = source_inputs(wildcards.region, "observations")
    kind = source_settings(wildcards.region, "observations")["kind"]
    if kind == "file":
        try:
            stat = os.stat(found[0])
        except FileNotFoundError:
            sys.exit(
                f"error: {found[0]}: the field observation table of region '{wildcards.region}' is "
                f"missing; place it there (CSV or Parquet, one row per observation, columns "
                f"{', '.join(OBSERVATION_COLUMNS)}; see README section 'Statewide run')"
            )
        error = observation_table_error(wildcards.region, found[0], stat.st_mtime_ns, stat.st_size)
        if error:
            sys.exit(f"error: {error}")
    return found


def observation_table_error(region, path, mtime_ns, size):
    """The samples job's error line for the table at ``path``, or None when it passes: every
    check that needs no stack (mapper.samples.check_observations: columns, unique obs_id, ISO
    8601 dates, labels, points in the region or lon/lat swapped); :func:`observation_table_check`.
    """
    return observation_table_check(region, path, mtime_ns, size)[0]


@functools.cache
def observation_table_check(region, path, mtime_ns, size):
    """(the samples job's error line or None, the points inside the region labelled per task
    or None): mapper.samples.labelled_in_region, which runs check_observations' checks. Cached
    per region, path, time and size: the table is read once per plan however often the input
    functions ask."""
    from mapper.errors import InputError
    from mapper.samples import labelled_in_region

    try:
        return None, labelled_in_region(REGIONS[region], path)
    except InputError as exc:
        return " ".join(str(exc).split()), None


def demo_products():
    """What `snakemake` with no target builds: the demo region's maps, their uncertainty
    products and the demo's reports (`make demo` and `make demo-reports` together)."""
    return (
        maps_of("demo")
        + uncertainty_maps_of("demo")
        + reports_of("demo")
        + ["results/demo/reports/uncertainty.md", "results/demo/reports/resolution.md"]
        + ["results/demo/stack.vrt"]
    )


def region_stacks(wildcards):
    return all_stacks(wildcards.region)


def cv_fold_stacks(wildcards):
    """The stacks a fold reads: MiSo's crops; none for a forest (it reads the samples' values,
    which a remade stack reaches through the samples)."""
    return [] if wildcards.model == "rf" else region_stacks(wildcards)


def boundary_file(wildcards):
    """The region's boundary file, an input of every job whose output depends on the mapped area
    (samples, training, evaluation, prediction, products; not the stacks: the boundary decides
    which tiles are stacked, not what a stack holds). Relative to the working directory when it
    lies under it, so that a project moved or copied whole keeps its records."""
    path = Path(region_of(wildcards).settings["boundary"]).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def training_settings(wildcards):
    """The region's training section: a change to it reruns training (params trigger)."""
    return region_of(wildcards).settings["training"]


def evaluation_settings(wildcards):
    return region_of(wildcards).settings["evaluation"]


def prediction_settings(wildcards):
    """The region's prediction section but ``ensemble``, which changes no tile: a change of it
    reruns no prediction of the map's model (the ``prediction`` settings file)."""
    settings = region_of(wildcards).settings["prediction"]
    return {k: v for k, v in settings.items() if k != "ensemble"}


def product_labels(wildcards):
    """What a map's products say of the region beside their pixels: its ``description`` (the
    STAC Item's), whether it is synthetic (tags, quick-look, Item) and the Sentinel-2 period
    (the Item's datetime; a composite of kind file states it as ``datetime``): params of the
    map's mosaic rules, so an edit of any remakes the products and no prediction."""
    return {
        "description": region_of(wildcards).settings.get("description", ""),
        **uncertainty_labels(wildcards),
    }


def uncertainty_labels(wildcards):
    """:func:`product_labels` but the description, which the uncertainty products do not state
    (their Item's is their band's): params of rule mosaic_uncertainty."""
    region = region_of(wildcards)
    period = region.settings["sources"].get("sentinel2", {}).get("datetime")
    return {"synthetic": region.synthetic, "period": period}


def pretrained_checkpoint(wildcards):
    """The pretrained checkpoint fine-tuning starts from; none when pretraining is switched off."""
    if training_settings(wildcards)["pretrain"]:
        return f"results/{wildcards.region}/models/pretrain.pt"
    return []


def pretrained_option(wildcards):
    found = pretrained_checkpoint(wildcards)
    return f"--pretrained {found}" if found else ""


def cv_pretrained_checkpoint(wildcards):
    if wildcards.model == "miso":
        return pretrained_checkpoint(wildcards)
    return []


def cv_pretrained_option(wildcards):
    found = cv_pretrained_checkpoint(wildcards)
    return f"--pretrained {found}" if found else ""


def cv_fold_gpus(wildcards):
    return 0 if wildcards.model == "rf" else 1


def cv_models(region):
    """Models compared in the report: RF, MiSo, and the ablation without pretraining."""
    ev = REGIONS[region].settings["evaluation"]
    models = ["rf", "miso"]
    if ev["ablation_no_pretrain"] and REGIONS[region].settings["training"]["pretrain"]:
        models.append("miso_nopretrain")
    return models


def cv_fold_outputs(wildcards):
    ev = evaluation_settings(wildcards)
    return [
        f"results/{wildcards.region}/cv/{wildcards.task}/{model}_{split}_f{fold}.parquet"
        for model in cv_models(wildcards.region)
        for split in ev["splits"]
        for fold in range(ev["folds"])
    ]


def neighbour_stacks(wildcards, region=None):
    """The stacks the tile's crops may read: its own and every stacked tile (mapped or context)
    within the reach of its crops (of ``region``'s prediction settings: default the run's)."""
    tile = known_tile(wildcards.region, wildcards.tile, stacked=False)
    tiles = (region or region_of(wildcards)).tile_context(tile)
    return [stack_path(wildcards.region, t) for t in tiles]


def predicted_tiles(region, task):
    return [f"results/{region}/predict/{task}/{t}.tif" for t in tiles_of(region)]


def task_tiles(wildcards):
    """The predicted tiles of the region and task of the wildcards (a mosaic's input)."""
    return predicted_tiles(wildcards.region, wildcards.task)


def report_truth(wildcards):
    """A synthesized region's hidden truth raster of the task (its report compares the held-out
    predictions with it; the reliability figure of a binary task); none elsewhere."""
    if wildcards.region in SYNTHESIZED_REGIONS:
        return [f"resources/{wildcards.region}/truth/{wildcards.task}.tif"]
    return []


def maps_of(region):
    return [f"maps/{task}_{region}.tif" for task in TASKS]


def reports_of(region):
    return [f"results/{region}/reports/{task}.md" for task in TASKS]


# -- Elevation cells and weights by URL (issue 13): static lists, checksums in the lock file. ---
# A `cells` source is fetched per 1 x 1 degree cell (rule fetch_dem_cell); the cells a tile's
# stack reads are a pure function of the lattice and the stack halos (mapper.sources.cells),
# computed for all tiles of a region at once on first use and memoised.
from mapper.sources.cells import CELL_PATTERN, region_cells
from mapper.sources.weights import weights_by_name, weights_path

CELLS_REGIONS = [
    name
    for name, r in REGIONS.items()
    if any(s["kind"] == "cells" for s in r.settings["sources"].values())
]


def dem_cell_records(region, source, tile):
    """The records of the cells the stack of ``tile`` reads (rule fetch_dem_cell writes them)."""
    cells = region_cells(REGIONS[region])[tile]
    return [f"resources/{region}/sources/{source}/{cell}.json" for cell in cells]


try:  # local file name of weights given by URL -> the region whose lock file records them
    WEIGHTS_REGIONS = weights_by_name(REGIONS)
except MapperError as exc:
    sys.exit(f"error: {exc}")


def satlas_weights_file(wildcards):
    """The SatlasPretrain weights training reads: fetched by rule fetch_weights when the region
    gives a URL, the region's local file when it gives a path, none for a random start."""
    value = region_of(wildcards).settings["model"]["satlas_weights"]
    if value and not is_url(value):
        local_file(
            value, f"the SatlasPretrain weights of region '{wildcards.region}'", wildcards.region
        )
    return weights_path(value) or []


def cv_fold_weights(wildcards):
    """The SatlasPretrain weights a fold reads: MiSo's; none for a forest."""
    return [] if wildcards.model == "rf" else satlas_weights_file(wildcards)


def weights_region(wildcards):
    """The region whose lock file records the weights file of the wildcards."""
    return WEIGHTS_REGIONS[wildcards.filename]


def weights_url(wildcards):
    """The URL of the weights file of the wildcards (a params trigger: another URL of the same
    file name downloads again)."""
    return REGIONS[weights_region(wildcards)].settings["model"]["satlas_weights"]
