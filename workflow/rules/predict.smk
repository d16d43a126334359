# Stage 7: per tile and task, crops on one lattice shared by every tile, batched through MiSo,
# Gaussian-weighted and blended; a tile reads the context it needs from the stacks within its
# crops' reach (mapped and context tiles); only pixels inside the region's mapped area are decoded.


rule predict:
    input:
        model="results/{region}/models/{task}.pt",
        stacks=neighbour_stacks,
        boundary=boundary_file,
        # the prediction section as a file, not params: a restacked tile elsewhere in the same
        # run must not hide a changed setting from the other tiles (settings.smk)
        settings=settings_files("prediction"),
    output:
        "results/{region}/predict/{task}/{tile}.tif",
    log:
        "logs/predict/{region}_{task}_{tile}.log",
    conda:
        "../../envs/mapper.yaml"
    resources:
        gpu=1,
        batch_size=PREDICT_BATCH_SIZE,
    params:
        config=run_config,
        area=canonical(area_settings),
    shell:
        "python -m mapper predict --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --tile {wildcards.tile} --model {input.model}"
        " --batch-size {resources.batch_size} --out {output} {input.stacks} --log {log}"


# Ensemble members (prediction.ensemble, for the uncertainty products): the same command with
# member k's checkpoint (rule finetune_member).
use rule predict as predict_member with:
    input:
        model="results/{region}/models/{task}_m{member}.pt",
        stacks=neighbour_stacks,
        boundary=boundary_file,
        settings=settings_files("prediction"),
    output:
        "results/{region}/predict/{task}_m{member}/{tile}.tif",
    log:
        "logs/predict/{region}_{task}_m{member}_{tile}.log",
    wildcard_constraints:
        member=r"[1-9]\d*",


# The resolution report (rule resolution_report): the same command and models at a coarser
# out_res, given in the job's configuration file.
use rule predict as predict_at_res with:
    input:
        model="results/{region}/models/{task}.pt",
        stacks=neighbour_stacks_at_res,
        boundary=boundary_file,
        settings=settings_files("prediction_at_res"),
    output:
        "results/{region}/predict_{res}m/{task}/{tile}.tif",
    log:
        "logs/predict/{region}_{task}_{tile}_{res}m.log",
    wildcard_constraints:
        res=r"[1-9]\d*",
    params:
        config=res_run_config,
        area=canonical(area_settings),
