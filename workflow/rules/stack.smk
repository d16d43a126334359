# Stage 2, stack: every source warped onto the tile's 10 m lattice grid, terrain derived from the
# DEM read with a halo, one 19-band GeoTIFF per tile (the mapped tiles and the context tiles
# within a crop's reach of the mapped area); a VRT over the region's stacks.


rule stack:
    input:
        sentinel2=tile_sentinel2,
        dem=tile_dem,
        climate=tile_climate,
        # the files behind a source given as a VRT, within the tile's reach (not passed on: the
        # command reads them through the VRT)
        members=tile_vrt_members,
    output:
        "results/{region}/stack/{tile}.tif",
    log:
        "logs/stack/{region}_{tile}.log",
    conda:
        "../../envs/mapper.yaml"
    params:
        config=run_config,
        settings=canonical(stack_settings),
        tile=tile_footprint,
    shell:
        "python -m mapper stack --config {params.config} --region {wildcards.region}"
        " --tile {wildcards.tile} --sentinel2 {input.sentinel2:q} --dem {input.dem:q}"
        " --climate {input.climate:q} --out {output} --log {log}"


rule stack_vrt:
    input:
        region_stacks,
    output:
        "results/{region}/stack.vrt",
    log:
        "logs/stack/{region}_vrt.log",
    conda:
        "../../envs/mapper.yaml"
    shell:
        "python -m mapper stack-vrt --out {output} {input} --log {log}"
