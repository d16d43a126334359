# Helpers of the settings each job is computed with: params given as canonical JSON, and the
# settings files of rule region_settings (workflow/rules/settings.smk). Included after common.smk.


SETTINGS_SECTIONS = ("area", "observations", "stack", "model", "training", "evaluation")
"""The sections written out by rule region_settings (workflow/rules/settings.smk)."""


def canonical(settings):
    """A params function giving ``settings``' value as JSON text with sorted keys. Snakemake
    compares params by their repr, in which a dict's key order counts: the same settings in
    another order (a reformatted region file, an override naming a default) would rerun."""

    @functools.wraps(settings)
    def param(wildcards):
        return json.dumps(settings(wildcards), indent=1, sort_keys=True)

    return param


def section_settings(wildcards):
    """The region's settings section of the wildcards (``area``: what beside the boundary file
    defines the mapped area; ``observations``: the observation source's section)."""
    if wildcards.section == "area":
        return area_settings(wildcards)
    if wildcards.section == "observations":
        return source_settings(wildcards.region, "observations")
    return region_of(wildcards).settings[wildcards.section]


def section_inputs(wildcards):
    """The files a section's readers are computed from beside the stacks, whose checksums its
    settings file records: the boundary (``area``) and the observation table
    (``observations``). A changed one rewrites the file, so its readers rerun also when a stack
    reruns in the same run (the readers' own inputs are not looked at then: settings.smk)."""
    if wildcards.section == "area":
        return [boundary_file(wildcards)]
    if wildcards.section == "observations":
        return region_observations(wildcards)
    return []


def settings_files(*sections):
    """An input function: the region's files of ``sections`` (rule region_settings)."""

    def files(wildcards):
        return [f"results/{wildcards.region}/settings/{s}.json" for s in sections]

    return files


def write_settings_file(text, inputs, path, log):
    """Write one settings section (``text``, the canonical JSON of its params) and the sha256 of
    each of its ``inputs`` as JSON, atomically; say so in ``log``."""
    from mapper.files import atomic_path, file_sha256

    content = {"settings": json.loads(text), "inputs": {f: file_sha256(f) for f in inputs}}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    Path(log).write_text(f"wrote {path}: the settings its readers are computed with\n")
