# Stage 8: all tiles of a region into Cloud-Optimized GeoTIFFs in maps/, with overviews,
# provenance metadata, a quick-look PNG, a QGIS style and a STAC Item. One rule per kind of task
# (mapper/tasks.py): a binary task's map is a probability, a multiclass task's the most probable
# class plus the class probabilities.


rule mosaic_probability:
    input:
        tiles=task_tiles,
        model="results/{region}/models/{task}.pt",
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
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {input.model} --out {output.cog} {input.tiles}"
        " --log {log}"


rule mosaic_classes:
    input:
        tiles=task_tiles,
        model="results/{region}/models/{task}.pt",
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
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task {wildcards.task} --model {input.model} --out {output.cog} {input.tiles}"
        " --log {log}"
