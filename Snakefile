# mapper: 10 m maps of near-surface permafrost and soil taxonomic order for Alaska with MiSo.
#
#   snakemake --cores 2 maps/nsp_demo.tif                                # demo region, offline
#   snakemake --cores 32 maps/nsp_alaska.tif                             # one machine
#   snakemake --profile workflow/profiles/slurm maps/nsp_alaska.tif      # SLURM cluster
import os
import sys

from snakemake.utils import min_version

from mapper.config import (
    RUN_CONFIG_ENV,
    check_places,
    job_config,
    load_region,
    read_yaml,
    resolve_config,
)
from mapper.sources.exclusions import check_exclusions
from mapper.errors import MapperError

min_version("9.0")


configfile: "config/config.yaml"


# The configuration of this run: the config files and --config merged, each region file read with
# its region_overrides, validated against mapper's schemas (defaults filled; an error is one line
# naming the file(s) and the key, as in every `python -m mapper` command). Jobs get it by value:
# a job that parses this file again (a cluster job, a `run:` job) reads the file the run wrote
# (common.smk: RUN_CONFIG_FILE, named in the environment it inherits), never the region files as
# they are by the time it starts. Each region (REGIONS, what the rules read) has its boundary read
# and placed on the lattice too. A SystemExit's text is printed as it is: one line, no traceback.
try:
    CONFIG_SOURCE = " + ".join(dict.fromkeys(map(os.path.abspath, workflow.configfiles)))
    if workflow.remote_exec or workflow.subprocess_exec:
        RUN_CONFIG = job_config(os.environ.get(RUN_CONFIG_ENV), config, CONFIG_SOURCE)
    else:
        for _path in workflow.configfiles:  # Snakemake's reader keeps a key given twice silently
            read_yaml(_path)
        RUN_CONFIG = resolve_config(config, CONFIG_SOURCE)
    REGIONS = {name: load_region(RUN_CONFIG, name) for name in RUN_CONFIG["regions"]}
    for _region in REGIONS.values():
        check_places(_region)
        check_exclusions(_region)
except MapperError as exc:
    sys.exit(f"error: {exc}")


include: "workflow/rules/common.smk"
include: "workflow/rules/common_settings.smk"
include: "workflow/rules/common_zones.smk"
include: "workflow/rules/variants.smk"
include: "workflow/rules/settings.smk"
include: "workflow/rules/sources.smk"
include: "workflow/rules/stack.smk"
include: "workflow/rules/samples.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/zones.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/mosaic.smk"


rule all:
    default_target: True
    input:
        demo_products(),


rule demo:
    # `make demo`: the maps of the embedded (synthetic) demo region, with their quick-looks, their
    # uncertainty products and the uncertainty's check against the demo's hidden truth.
    input:
        maps_of("demo"),
        uncertainty_maps_of("demo"),
        "results/demo/reports/uncertainty.md",
        "results/demo/stack.vrt",


rule demo_reports:
    # `make demo-reports`: the demo's cross-validation reports (MiSo vs Random Forest) and its
    # resolution consistency report (maps at 20 and 50 m against the 10 m map).
    input:
        reports_of("demo"),
        "results/demo/reports/resolution.md",
