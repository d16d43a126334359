# Zone layers: the polygons (permafrost zones, MLRAs; synthetic climate zones for the demo) that the
# evaluation reports break the cross-validation results down by. Each layer is prepared once into
# EPSG:3338, one polygon per zone, cut to the region (mapper/zones.py).


rule demo_zones:
    # The demo region's SYNTHETIC climate zones, from its synthetic climate normals; a file of its
    # own, so that the demo's sources and their manifest stay as they are.
    input:
        climate="resources/{region}/sources/climate.tif",
    output:
        "resources/{region}/sources/zones.geojson",
    log:
        "logs/sources/{region}_demo_zones.log",
    wildcard_constraints:
        region=one_of(SYNTHESIZED_REGIONS),
    conda:
        "../../envs/mapper.yaml"
    shell:
        "python -m mapper demo-zones --climate {input.climate} --out {output} --log {log}"


rule fetch_zone_file:
    # One file of a zone layer published over HTTP(S): retries, resume (Range), verified against
    # the region file's sha256, else against (or recorded in) the region's lock file.
    output:
        file="resources/{region}/zones/{layer}/{filename}",
        manifest="resources/{region}/zones/{layer}/{filename}.json",
    log:
        "logs/sources/{region}_zones_{layer}_{filename}.log",
    wildcard_constraints:
        layer=zone_layer_names(),
        filename=zone_file_names(),
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        entry=canonical(zone_file_entry),
    shell:
        "python -m mapper fetch-zone --config {params.config} --region {wildcards.region}"
        " --layer {wildcards.layer} --file {wildcards.filename:q} --out {output.file:q}"
        " --log {log:q}"


rule zone_layer:
    # A zone layer in EPSG:3338, one (Multi)Polygon per value of its field, cut to the region.
    input:
        files=zone_layer_inputs,
        boundary=boundary_file,
    output:
        "resources/{region}/zones/{layer}.geojson",
    log:
        "logs/sources/{region}_zones_{layer}.log",
    wildcard_constraints:
        layer=zone_layer_names(),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        settings=canonical(zone_layer_settings),
        area=canonical(area_settings),  # the layer is cut around the buffered boundary
    shell:
        "python -m mapper zone-layer --config {params.config} --region {wildcards.region}"
        " --layer {wildcards.layer} --out {output} {input.files:q} --log {log}"
