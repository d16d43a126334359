# A region's settings sections that the training side is computed with, each as a small JSON file
# that the samples, training and cross-validation jobs take as inputs (not params): those jobs read
# the stacks as `ancient`, and Snakemake does not look at the params of a job downstream of an
# ancient input whose producer reruns (snakemake/snakemake#4166), so a changed setting given
# with a data fix (a corrected DEM) would leave the models as trained. This job has no input,
# so its params are always compared: a changed section rewrites its file, and what reads it reruns.


rule region_settings:
    output:
        "results/{region}/settings/{section}.json",
    log:
        "logs/settings/{region}_{section}.log",
    wildcard_constraints:
        section=one_of(SETTINGS_SECTIONS),
    localrule: True
    params:
        value=section_settings,
    run:
        write_settings_file(params.value, output[0], log[0])
