# Stage 8: all tiles of a region into Cloud-Optimized GeoTIFFs in maps/, with overviews,
# provenance metadata, a quick-look PNG, a QGIS style and a STAC Item. One rule per kind of task
# (mapper/tasks.py): a binary task's map is a probability, a multiclass task's the most probable
# class plus the class probabilities.


rule mosaic_probability:
    input:
        tiles=task_tiles,
        model="results/{region}/models/{task}.pt",
        boundary=boundary_file,
    output:
        cog="maps/{task}_{region}.tif",
        quicklook=report(
            "maps/{task}_{region}.png",
            category="Maps",
            caption="../report/map_quicklook.rst",
        ),
        style="maps/{task}_{region}.qml",
        item="maps/{task}_{region}.stac.json",
    log:
        "logs/mosaic/{region}_{task}.log",
    wildcard_constraints:
        task=one_of(task_names("binary")),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        area=canonical(area_settings),
        labels=canonical(product_labels),
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {input.model} --out {output.cog} {input.tiles}"
        " --log {log}"


rule mosaic_classes:
    input:
        tiles=task_tiles,
        model="results/{region}/models/{task}.pt",
        boundary=boundary_file,
    output:
        cog="maps/{task}_{region}.tif",
        probabilities="maps/{task}_{region}_probabilities.tif",
        quicklook=report(
            "maps/{task}_{region}.png",
            category="Maps",
            caption="../report/map_quicklook.rst",
        ),
        style="maps/{task}_{region}.qml",
        item="maps/{task}_{region}.stac.json",
    log:
        "logs/mosaic/{region}_{task}.log",
    wildcard_constraints:
        task=one_of(task_names("multiclass")),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        area=canonical(area_settings),
        labels=canonical(product_labels),
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {input.model} --out {output.cog} {input.tiles}"
        " --log {log}"


# The uncertainty product beside each map (mapper/products/uncertainty.py): the normalised
# entropy of the map's probabilities and, with prediction.ensemble members, their spread
# (binary tasks) or disagreement (multiclass tasks).
rule mosaic_uncertainty:
    input:
        tiles=task_tiles,
        model="results/{region}/models/{task}.pt",
        member_models=member_models,
        member_tiles=member_tiles,
        boundary=boundary_file,
    output:
        cog="maps/{task}_{region}_uncertainty.tif",
        quicklook=report(
            "maps/{task}_{region}_uncertainty.png",
            category="Maps",
            caption="../report/map_quicklook.rst",
        ),
        style="maps/{task}_{region}_uncertainty.qml",
        item="maps/{task}_{region}_uncertainty.stac.json",
    log:
        "logs/mosaic/{region}_{task}_uncertainty.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        area=canonical(area_settings),
        labels=canonical(uncertainty_labels),
    shell:
        "python -m mapper uncertainty --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {input.model} --out {output.cog} {input.tiles}"
        " --member-models {input.member_models} --member-tiles {input.member_tiles}"
        " --log {log}"
