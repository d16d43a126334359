# Stage 8: all tiles of a region into Cloud-Optimized GeoTIFFs in maps/, with overviews,
# provenance metadata, a quick-look PNG, a QGIS style and a STAC Item.


rule mosaic_nsp:
    input:
        tiles=predicted_tiles_nsp,
        model="results/{region}/models/nsp.pt",
    output:
        cog="maps/nsp_{region}.tif",
        quicklook=report(
            "maps/nsp_{region}.png",
            category="Maps",
            caption="../report/map_quicklook.rst",
        ),
        style="maps/nsp_{region}.qml",
        item="maps/nsp_{region}.stac.json",
    log:
        "logs/mosaic/{region}_nsp.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=CONFIG_FILE,
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task nsp --model {input.model} --out {output.cog} {input.tiles} --log {log}"


rule mosaic_soilorder:
    input:
        tiles=predicted_tiles_soilorder,
        model="results/{region}/models/soilorder.pt",
    output:
        cog="maps/soilorder_{region}.tif",
        probabilities="maps/soilorder_{region}_probabilities.tif",
        quicklook=report(
            "maps/soilorder_{region}.png",
            category="Maps",
            caption="../report/map_quicklook.rst",
        ),
        style="maps/soilorder_{region}.qml",
        item="maps/soilorder_{region}.stac.json",
    log:
        "logs/mosaic/{region}_soilorder.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=CONFIG_FILE,
    shell:
        "python -m mapper mosaic --config {params.config} --region {wildcards.region}"
        " --task soilorder --model {input.model} --out {output.cog} {input.tiles} --log {log}"
