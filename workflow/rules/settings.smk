# What jobs are computed with beside the stacks, each section of settings as a small JSON file
# that the samples, training, cross-validation, prediction and report jobs take as an input (not
# params): when a stack reruns, Snakemake looks neither at the params nor at the other inputs of
# any job below it (snakemake/snakemake#4166; the training side reads the stacks as `ancient`,
# and a prediction sits below the models, which read them all), so a changed setting, a new
# observation table or boundary given with a data fix (a corrected DEM, one restacked tile) would
# leave the models as trained, and every other tile predicted with the old settings. This job
# depends on no stack, so its params (the section) and inputs (the boundary for `area`, the
# observation table for `observations`) are always compared: a change rewrites its file, and
# what reads it reruns.


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
