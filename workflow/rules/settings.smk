# What the training side is computed with beside the stacks, each section of settings as a small
# JSON file that the samples, training and cross-validation jobs take as an input (not params):
# those jobs read the stacks as `ancient`, and when a stack reruns Snakemake looks neither at
# their params nor at their other inputs (snakemake/snakemake#4166), so a changed setting, a new
# observation table or boundary given with a data fix (a corrected DEM) would leave the models as
# trained. This job depends on no stack, so its params (the section) and inputs (the boundary for
# `area`, the observation table for `observations`) are always compared: a change rewrites its
# file, and what reads it reruns.


rule region_settings:
    input:
        section_inputs,
    output:
        "results/{region}/settings/{section}.json",
    log:
        "logs/settings/{region}_{section}.log",
    wildcard_constraints:
        section=one_of(SETTINGS_SECTIONS),
    localrule: True
    params:
        value=canonical(section_settings),
    run:
        write_settings_file(params.value, list(input), output[0], log[0])
