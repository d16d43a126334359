# Stage 6: 5-fold cross-validation on the Random, SH-1km and SH-10km splits, MiSo (with and
# without pretraining) against Random Forest on the same folds; one job per model, split and fold
# (so a cluster runs them side by side), then a report per task, with the results by zone of the
# region's zone layers (workflow/rules/zones.smk).


rule cv_fold:
    input:
        samples="results/{region}/samples/points.parquet",
        folds="results/{region}/samples/folds.parquet",
        # the SatlasPretrain weights (model.satlas_weights; fetched when given by URL,
        # verified against the lock file, so a re-download alone retrains nothing)
        weights=ancient(cv_fold_weights),
        pretrained=cv_pretrained_checkpoint,
        # ancient: a re-stacked tile is re-predicted with the models as trained (a single-tile
        # rerun); retrain on purpose with -R results/<region>/samples/points.parquet
        stacks=ancient(cv_fold_stacks),
        boundary=boundary_file,
        # each model's own settings (CV_SECTIONS): a forest setting reruns the forest's folds
        settings=cv_settings,
    output:
        "results/{region}/cv/{task}/{model}_{split}_f{fold}.parquet",
    log:
        "logs/evaluate/{region}_{task}_{model}_{split}_f{fold}.log",
    wildcard_constraints:
        model=one_of(MODELS),
        split=one_of(SPLITS),
        fold=r"\d+",
    conda:
        "../../envs/mapper.yaml"
    resources:
        gpu=cv_fold_gpus,
    params:
        config=run_config,
        pretrained=cv_pretrained_option,
    shell:
        "python -m mapper cv-fold --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {wildcards.model} --split {wildcards.split}"
        " --fold {wildcards.fold} --samples {input.samples} --folds {input.folds}"
        " {params.pretrained}"
        " --out {output} {input.stacks} --log {log}"


rule report:
    input:
        folds=cv_fold_outputs,
        # which folds it gathers, as a file (settings.smk)
        plan=settings_files("cv_plan"),
        zones=zone_layers,
        truth=report_truth,
    output:
        markdown=report(
            "results/{region}/reports/{task}.md",
            category="Evaluation",
            caption="../report/evaluation_table.rst",
        ),
        figures="results/{region}/reports/{task}.json",
        bars=report(
            "results/{region}/reports/{task}_splits.png",
            category="Evaluation",
            caption="../report/evaluation_splits.rst",
        ),
        confusion=report(
            "results/{region}/reports/{task}_confusion.png",
            category="Evaluation",
            caption="../report/evaluation_confusion.rst",
        ),
        reliability=report(
            "results/{region}/reports/{task}_reliability.png",
            category="Evaluation",
            caption="../report/evaluation_reliability.rst",
        ),
    log:
        "logs/evaluate/{region}_{task}_report.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        truth=lambda wildcards, input: f"--truth {input.truth}" if input.truth else "",
    shell:
        "python -m mapper report --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --out {output.markdown} {input.folds} --zones {input.zones}"
        " {params.truth} --log {log}"


# A synthetic region's maps against its hidden truth by decile of their uncertainty products
# (mapper/uncertainty_report.py); part of `make demo`: it reads rasters only (seconds).
rule uncertainty_report:
    input:
        maps=expand("maps/{task}_{{region}}.tif", task=TASKS),
        uncertainty=expand("maps/{task}_{{region}}_uncertainty.tif", task=TASKS),
        truth=expand("resources/{{region}}/truth/{task}.tif", task=TASKS),
    output:
        markdown=report(
            "results/{region}/reports/uncertainty.md",
            category="Evaluation",
            caption="../report/uncertainty_deciles.rst",
        ),
        figures="results/{region}/reports/uncertainty.json",
        deciles=report(
            "results/{region}/reports/uncertainty_deciles.png",
            category="Evaluation",
            caption="../report/uncertainty_deciles.rst",
        ),
    log:
        "logs/evaluate/{region}_uncertainty_report.log",
    wildcard_constraints:
        region=one_of(SYNTHESIZED_REGIONS),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
    shell:
        "python -m mapper uncertainty-report --config {params.config}"
        " --region {wildcards.region} --maps {input.maps} --uncertainty {input.uncertainty}"
        " --truth {input.truth} --out {output.markdown} --log {log}"


# Resolution consistency (mapper/resolution.py): the same models' maps at each coarser out_res
# (rule predict_at_res) against the 10 m map aggregated to their cells, and the seconds each
# resolution's predict jobs logged; part of `make demo-reports`.
rule resolution_report:
    input:
        tiles=res_tiles,
    output:
        markdown=report(
            "results/{region}/reports/resolution.md",
            category="Evaluation",
            caption="../report/resolution_table.rst",
        ),
        figures="results/{region}/reports/resolution.json",
    log:
        "logs/evaluate/{region}_resolution_report.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        logs=res_logs,
    shell:
        "python -m mapper resolution-report --config {params.config}"
        " --region {wildcards.region} --out {output.markdown} {input.tiles}"
        " --logs {params.logs} --log {log}"
