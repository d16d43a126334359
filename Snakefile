# mapper: 10 m maps of near-surface permafrost and soil taxonomic order for Alaska with MiSo.
#
#   snakemake --cores 2 maps/nsp_demo.tif                                # demo region, offline
#   snakemake --cores 32 maps/nsp_alaska.tif                             # one machine
#   snakemake --profile workflow/profiles/slurm maps/nsp_alaska.tif      # SLURM cluster
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/stack.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/mosaic.smk"


rule all:
    input:
        demo_products(),
    default_target: True


rule demo:
    # `make demo`: everything the pipeline makes for the embedded (synthetic) demo region.
    input:
        demo_products(),
