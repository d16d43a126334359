# Stage 1, sources: every input as local files with a manifest (what, where from, size, checksum).


rule demo_sources:
    # The demo region's sources, SYNTHETIC, made offline and deterministically from a seed.
    input:
        boundary=boundary_file,
    output:
        sentinel2="resources/{region}/sources/sentinel2.tif",
        dem="resources/{region}/sources/dem.tif",
        climate="resources/{region}/sources/climate.tif",
        observations="resources/{region}/sources/observations.csv",
        manifest="resources/{region}/sources/manifest.json",
        truth_nsp="resources/{region}/truth/nsp.tif",
        truth_soilorder="resources/{region}/truth/soilorder.tif",
    log:
        "logs/sources/{region}_demo.log",
    wildcard_constraints:
        region=one_of(SYNTHESIZED_REGIONS),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        out="resources/{region}",
        sources=canonical(region_sources),
    shell:
        "python -m mapper demo --config {params.config} --region {wildcards.region}"
        " --out {params.out} --log {log}"


rule fetch_http:
    # One file of an HTTP(S) source: retries, resume (Range) and sha256 verification.
    output:
        file="resources/{region}/sources/{source}/{filename}",
        manifest="resources/{region}/sources/{source}/{filename}.json",
    log:
        "logs/sources/{region}_{source}_{filename}.log",
    wildcard_constraints:
        source="sentinel2|dem|climate|observations",
        filename=http_file_names(),
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        entry=canonical(http_entry),
    shell:
        "python -m mapper fetch --config {params.config} --region {wildcards.region}"
        " --source {wildcards.source} --file {wildcards.filename:q} --out {output.file:q}"
        " --log {log:q}"


# -- climate normals from SNAP's monthly archives (kind snap) ----------------------------------


rule fetch_snap_archive:
    # One variable's zip of SNAP downscaled CRU TS monthly GeoTIFFs: retries, resume, verified
    # against the region file's sha256, else against (or recorded in) the region's lock file.
    output:
        archive="resources/{region}/sources/climate/snap_{variable}.zip",
        manifest="resources/{region}/sources/climate/snap_{variable}.zip.json",
    log:
        "logs/sources/{region}_climate_snap_{variable}.log",
    wildcard_constraints:
        region=one_of(SNAP_REGIONS),
        variable=one_of(SNAP_VARIABLES),
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        archive=canonical(snap_archive_settings),
        out="resources/{region}/sources",
    shell:
        "python -m mapper fetch --config {params.config} --region {wildcards.region}"
        " --source climate --file {wildcards.variable} --out {params.out} --log {log}"


rule snap_climate_normals:
    # precip_annual, summer_warmth, jan_tmin over the region's normal period: one 3-band raster.
    input:
        unpack(snap_archives),
    output:
        "resources/{region}/sources/climate/snap_normals.tif",
    log:
        "logs/sources/{region}_climate_snap_normals.log",
    wildcard_constraints:
        region=one_of(SNAP_REGIONS),
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        settings=canonical(snap_settings),
    shell:
        "python -m mapper climate-normals --config {params.config} --region {wildcards.region}"
        " --pr {input.pr:q} --tas {input.tas:q} --tasmin {input.tasmin:q} --out {output} --log {log}"


rule fetch_stac:
    # A tile's cloud-masked median Sentinel-2 L2A composite from a STAC search.
    output:
        composite="resources/{region}/sources/sentinel2/{tile}.tif",
        manifest="resources/{region}/sources/sentinel2/{tile}.json",
    log:
        "logs/sources/{region}_sentinel2_{tile}.log",
    wildcard_constraints:
        region=one_of(STAC_REGIONS),
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        settings=canonical(composite_section),
        tile=tile_footprint,
    shell:
        "python -m mapper fetch --config {params.config} --region {wildcards.region}"
        " --source sentinel2 --tile {wildcards.tile} --out {output.composite} --log {log}"


rule fetch_dem_cell:
    # One 1 x 1 degree elevation cell of a `cells` source, fetched once for all the tiles that
    # read it: the raster beside this record, checked against (or recorded in) the region's lock
    # file; a cell the server does not have (HTTP 404) is sea, and the record says so.
    output:
        record="resources/{region}/sources/{source}/{cell}.json",
    log:
        "logs/sources/{region}_{source}_{cell}.log",
    wildcard_constraints:
        region=one_of(CELLS_REGIONS),
        source="dem",
        cell=CELL_PATTERN,
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        settings=canonical(source_section),
    shell:
        "python -m mapper fetch --config {params.config} --region {wildcards.region}"
        " --source {wildcards.source} --cell {wildcards.cell} --out {output.record}"
        " --log {log}"


rule fetch_weights:
    # Pretrained weights a region gives by URL (model.satlas_weights), checked against (or
    # recorded in) that region's lock file.
    output:
        "resources/weights/{filename}",
    log:
        "logs/sources/weights_{filename}.log",
    wildcard_constraints:
        filename=one_of(sorted(WEIGHTS_REGIONS)),
    conda:
        "../../envs/mapper.yaml"
    resources:
        downloads=1,
    params:
        config=run_config,
        region=weights_region,
        url=weights_url,
    shell:
        "python -m mapper fetch-weights --config {params.config} --region {params.region}"
        " --out {output:q} --log {log:q}"
