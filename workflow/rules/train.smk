# Stages 4-5: contrastive pretraining on unlabelled crops, then supervised fine-tuning per task.
# Checkpoints carry their model config, band list and normalisation.


rule pretrain:
    input:
        samples="results/{region}/samples/points.parquet",
        # the SatlasPretrain weights (model.satlas_weights; fetched when given by URL,
        # verified against the lock file, so a re-download alone retrains nothing)
        weights=ancient(satlas_weights_file),
        # ancient: a re-stacked tile is re-predicted with the models as trained (a single-tile
        # rerun); retrain on purpose with -R results/<region>/samples/points.parquet
        stacks=ancient(region_stacks),
        boundary=boundary_file,
        settings=settings_files("model", "training", "area"),
    output:
        "results/{region}/models/pretrain.pt",
    log:
        "logs/train/{region}_pretrain.log",
    conda:
        "../../envs/mapper.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        config=run_config,
    shell:
        "python -m mapper pretrain --config {params.config} --region {wildcards.region}"
        " --samples {input.samples} --out {output} {input.stacks} --log {log}"


rule finetune:
    input:
        samples="results/{region}/samples/points.parquet",
        # the SatlasPretrain weights (model.satlas_weights; fetched when given by URL,
        # verified against the lock file, so a re-download alone retrains nothing)
        weights=ancient(satlas_weights_file),
        pretrained=pretrained_checkpoint,
        # ancient: a re-stacked tile is re-predicted with the models as trained (a single-tile
        # rerun); retrain on purpose with -R results/<region>/samples/points.parquet
        stacks=ancient(region_stacks),
        boundary=boundary_file,
        settings=settings_files("model", "training", "area"),
        epochs=finetune_settings_file,
    output:
        "results/{region}/models/{task}.pt",
    log:
        "logs/train/{region}_{task}.log",
    conda:
        "../../envs/mapper.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        config=run_config,
        pretrained=pretrained_option,
    shell:
        "python -m mapper finetune --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --samples {input.samples} {params.pretrained}"
        " --out {output} {input.stacks} --log {log}"


# Ensemble members of the uncertainty products (prediction.ensemble): member k is fine-tuned like
# the map's model, from the same pretrained checkpoint, with training.seed + k (the job's
# configuration file).
use rule finetune as finetune_member with:
    output:
        "results/{region}/models/{task}_m{member}.pt",
    log:
        "logs/train/{region}_{task}_m{member}.log",
    wildcard_constraints:
        member=r"[1-9]\d*",
    params:
        config=member_run_config,
        pretrained=pretrained_option,
