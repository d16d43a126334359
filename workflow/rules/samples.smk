# Stage 3, samples: observation points -> per-point stack values (for Random Forest) and crop
# locations (for MiSo); then their fold ids for the Random, SH-1km and SH-10km splits, in a file
# of their own, which only the cross-validation reads (the maps' models do not depend on them).


rule samples:
    input:
        observations=region_observations,
        # ancient: a re-stacked tile is re-predicted with the models as trained (a single-tile
        # rerun); retrain on purpose with -R results/<region>/samples/points.parquet
        stacks=ancient(region_stacks),
        boundary=boundary_file,
        settings=settings_files("area", "observations", "stack"),
    output:
        "results/{region}/samples/points.parquet",
    log:
        "logs/samples/{region}.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
    shell:
        "python -m mapper samples --config {params.config} --region {wildcards.region}"
        " --observations {input.observations:q} --out {output} {input.stacks} --log {log}"


rule folds:
    input:
        samples="results/{region}/samples/points.parquet",
        # the draw (evaluation.folds, training.seed) as a file, not params (settings.smk)
        settings=settings_files("folds"),
    output:
        "results/{region}/samples/folds.parquet",
    log:
        "logs/samples/{region}_folds.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
    shell:
        "python -m mapper folds --config {params.config} --region {wildcards.region}"
        " --samples {input.samples} --out {output} --log {log}"
