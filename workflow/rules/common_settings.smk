# Helpers of the settings each job is computed with: params given as canonical JSON, the settings
# files of rule region_settings (workflow/rules/settings.smk), and the source and stack sections
# the fetch and stack jobs list among their params. Included after common.smk.


from mapper.training_settings import cv_sections, fold_draw, training_sections
from mapper.sources.exclusions import composite_settings
from mapper.sources.weights import is_url

TRAINING_SECTIONS = ("training", *(f"finetune_{task}" for task in TASKS))
"""The training section's files (mapper.training_settings.training_sections): what every training
job reads, and each task's fine-tuning epochs, so that one task's epochs retrain that task alone."""
CV_SECTIONS = ("cv_rf", "cv_miso")
"""What each model's folds read of the evaluation section (mapper.training_settings.cv_sections):
a setting of one model reruns its folds alone."""
PREDICTION_SECTIONS = ("prediction", "prediction_at_res")
"""What a tile's prediction is computed with beside its stacks and model: the map's
(prediction_settings) and, for the resolution report's coarser tiles, the same less ``out_res``
(their {res} is in their path), so that the map's out_res reruns none of them."""
PLAN_SECTIONS = ("folds", "cv_plan")
"""What the cross-validation is drawn and reported with: the folds job's draw (fold_draw) and
which folds each report gathers (cv_plan_settings)."""
SETTINGS_SECTIONS = (
    "area", "observations", "stack", "model", *TRAINING_SECTIONS, *CV_SECTIONS,
    *PREDICTION_SECTIONS, *PLAN_SECTIONS,
)  # fmt: skip
"""The sections written out by rule region_settings (workflow/rules/settings.smk)."""


def canonical(settings):
    """A params function giving ``settings``' value as JSON text with sorted keys. Snakemake
    compares params by their repr, in which a dict's key order counts: the same settings in
    another order (a reformatted region file, an override naming a default) would rerun. A number
    written as an int or a float (40 or 40.0) is already one value: the config's validation gives
    each number its schema type (mapper.config)."""

    @functools.wraps(settings)
    def param(wildcards):
        return json.dumps(settings(wildcards), indent=1, sort_keys=True)

    return param


def section_settings(wildcards):
    """The region's settings section of the wildcards (``area``: what beside the boundary file
    defines the mapped area; ``observations``: the observation source's section; ``training``
    and ``finetune_<task>``: TRAINING_SECTIONS; ``cv_rf`` and ``cv_miso``: CV_SECTIONS;
    ``prediction`` and ``prediction_at_res``: PREDICTION_SECTIONS; ``folds`` and ``cv_plan``:
    PLAN_SECTIONS)."""
    if wildcards.section == "area":
        return area_settings(wildcards)
    if wildcards.section == "observations":
        return source_settings(wildcards.region, "observations")
    if wildcards.section in PREDICTION_SECTIONS:
        prediction = prediction_settings(wildcards)
        if wildcards.section == "prediction_at_res":
            prediction.pop("out_res")
        return prediction
    if wildcards.section == "cv_plan":
        return cv_plan_settings(wildcards)
    settings = region_of(wildcards).settings
    if wildcards.section == "folds":
        return fold_draw(settings)
    if wildcards.section in TRAINING_SECTIONS:
        return training_sections(settings["training"])[wildcards.section]
    if wildcards.section in CV_SECTIONS:
        return cv_sections(settings)[wildcards.section]
    return settings[wildcards.section]


def section_inputs(wildcards):
    """The files a section's readers are computed from beside the stacks, whose checksums its
    settings file records: the boundary (``area``), the observation table (``observations``) and
    SatlasPretrain weights given as a local file (``model``; weights given by URL are pinned by
    the lock file, and another URL is another section). A changed one rewrites the file, so its
    readers rerun also when a stack reruns in the same run (the readers' own inputs are not
    looked at then: settings.smk), and weights replaced in place retrain."""
    if wildcards.section == "area":
        return [boundary_file(wildcards)]
    if wildcards.section == "observations":
        return region_observations(wildcards)
    if wildcards.section == "model":
        weights = region_of(wildcards).settings["model"]["satlas_weights"]
        return [weights] if weights and not is_url(weights) else []
    return []


def settings_files(*sections):
    """An input function: the region's files of ``sections`` (rule region_settings)."""

    def files(wildcards):
        return [f"results/{wildcards.region}/settings/{s}.json" for s in sections]

    return files


def finetune_settings_file(wildcards):
    """The fine-tuning epochs of the job's task (rule region_settings). Planning a task's model
    also checks that the region's observation table (kind ``file``) labels some point of the
    task inside the region (:func:`task_labels_error`): else the plan stops here, naming the
    table, rather than the fine-tuning job after the stacks and pretraining."""
    error = task_labels_error(wildcards.region, wildcards.task)
    if error:
        sys.exit(f"error: {error}")
    return f"results/{wildcards.region}/settings/finetune_{wildcards.task}.json"


def task_labels_error(region, task):
    """The plan's error line for a task whose labels the region's observation table (kind
    ``file``, present and passing :func:`observation_table_error`) gives at no point inside the
    region, or None (other kinds, and tables those checks refuse, are left to them)."""
    settings = source_settings(region, "observations")
    if settings["kind"] != "file":
        return None
    path = source_inputs(region, "observations")[0]
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    counts = observation_table_check(region, path, stat.st_mtime_ns, stat.st_size)[1]
    if counts is None or counts.get(task, 1) > 0:
        return None
    from mapper.tasks import TASKS

    column = TASKS[task].label_column
    others = ", ".join(f"maps/{t}_{region}.tif" for t, n in counts.items() if n > 0)
    return (
        f"{path}: no point inside region {region} has a {column} label, so its {task} model "
        f"cannot be trained; add {task} labels to the table"
        + (f", or make only the other maps ({others})" if others else "")
    )


def cv_settings(wildcards):
    """The settings files a fold of the wildcards' model is computed with (CV_SECTIONS): a
    forest's its own section; MiSo's the model and ``cv_miso`` sections (``cv_miso`` holds the
    training section less the keys of pretraining alone: the pretrained checkpoint is an input
    of its own), and its task's fine-tuning epochs when ``evaluation.epochs`` is null
    (mapper.evaluate). Each with ``area`` (the region's boundary and lattice, which every job
    loading the region reads)."""
    if wildcards.model == "rf":
        return settings_files("area", "cv_rf")(wildcards)
    files = settings_files("model", "area", "cv_miso")(wildcards)
    if not region_of(wildcards).settings["evaluation"]["epochs"]:
        files.append(finetune_settings_file(wildcards))
    return files


def cv_plan_settings(wildcards):
    """Which folds a region's reports gather (cv_fold_outputs): the models, the splits and the
    fold count. A report's input list says it too, but Snakemake does not compare that list
    below a stack that reruns (settings.smk), so a model switched off in the same run as a data
    fix would stay in the report."""
    ev = region_of(wildcards).settings["evaluation"]
    return {
        "models": cv_models(wildcards.region),
        "splits": list(ev["splits"]),
        "folds": int(ev["folds"]),
    }


def write_settings_file(text, inputs, path, log):
    """Write one settings section (``text``, the canonical JSON of its params) and the sha256 of
    each of its ``inputs`` as JSON, atomically; say so in ``log``."""
    from mapper.files import atomic_path, file_sha256

    content = {"settings": json.loads(text), "inputs": {f: file_sha256(f) for f in inputs}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(f"wrote {path}: the settings its readers are computed with\n")


# -- the source and stack sections given as params of the fetch and stack jobs --


def source_section(wildcards):
    """The region file's section of the wildcards' source: a params trigger of its fetch jobs,
    so that a change of URL or template fetches again (the run config, a params function of the
    input, is not compared)."""
    return source_settings(wildcards.region, wildcards.source)


def area_settings(wildcards):
    """What, beside the boundary file, defines the mapped area and the tiles it is cut into (the
    buffer, the lattice and ``tile_px``, which name a tile id's area): a change of it reruns the
    jobs that read the area (params trigger)."""
    region = region_of(wildcards)
    lattice = region.lattice
    return {
        "buffer_m": region.settings["buffer_m"],
        "tile_px": lattice.tile_px,
        "grid": [lattice.crs, lattice.origin_x, lattice.origin_y, lattice.res],
    }


def tile_footprint(wildcards):
    """The area the wildcards' tile id names (left, bottom, right, top, in the lattice's CRS): a
    params trigger of the jobs whose output is named by the tile id (its composite, its stack),
    since the same id names another area when ``tile_px`` or the grid changes. A tile that is
    not one of the region's stacked tiles (a typo in ``-R <its composite>``) stops the plan."""
    lattice = region_of(wildcards).lattice
    tile = stacked_tile(wildcards)
    return [lattice.crs, *map(float, lattice.window_bounds(lattice.tile_window(tile)))]


def composite_section(wildcards):
    """The settings a tile's Sentinel-2 composite is made with (its fetch job's params): the
    source's section with only the ids of the ``exclude`` entries whose tiles overlap this one,
    so that a new entry fetches again the composites of the tiles it names and nothing else."""
    return composite_settings(
        source_settings(wildcards.region, "sentinel2"),
        wildcards.tile,
        region_of(wildcards).lattice.tile_px,
    )


def region_sources(wildcards):
    """Every source section of the region (a params trigger of the demo's synthesis: a change
    of its seed makes the demo's sources again)."""
    return REGIONS[wildcards.region].settings["sources"]


def http_entry(wildcards):
    """The entry (URL, sha256, size) of the file of an http source that the wildcards name: a
    params trigger, so that a new URL or checksum under the same file name downloads again."""
    for entry in source_settings(wildcards.region, wildcards.source).get("files", []):
        if http_file_name(entry) == wildcards.filename:
            return entry
    raise ValueError(
        f"region {wildcards.region}: source {wildcards.source} has no file {wildcards.filename!r}"
    )


def stack_settings(wildcards):
    """The region's stack section: a params trigger of the stacks, and of the samples (their
    covariates are read from the stacks), so that the models train on stacks made as the maps'
    are."""
    return region_of(wildcards).settings["stack"]
