# Helpers of the uncertainty and resolution products (mapper/uncertainty.py,
# mapper/resolution.py), included right after common.smk. An ensemble member and a coarser out_res are the same commands (finetune, predict) run with the
# run's configuration changed in one setting: a second configuration file, named by its content
# like the first, says what that job ran with.
import dataclasses

from mapper.experiment import COMPARED_RES


@functools.cache
def variant_config(region, section, key, value, why):
    """The run's configuration file with ``<section>.<key>`` of ``region`` set to ``value``."""
    changed = dict(RUN_CONFIG, region_overrides={region: {section: {key: value}}})
    return str(write_run_config(resolve_config(changed, why), ".snakemake/mapper"))


def ensemble_size(region):
    return REGIONS[region].settings["prediction"]["ensemble"]


def member_seed(wildcards):
    """Member k's training seed: the region's training.seed + k (the map's model is member 0)."""
    return training_settings(wildcards)["seed"] + int(wildcards.member)


def member_run_config(wildcards, input):
    """The run's configuration with member k's training seed (a params function of input, as
    run_config: the training section among the params is what reruns a member)."""
    seed = member_seed(wildcards)
    why = f"ensemble member {wildcards.member}'s training.seed {seed}"
    return variant_config(wildcards.region, "training", "seed", seed, why)


def res_run_config(wildcards, input):
    """The run's configuration with prediction.out_res = {res} m."""
    res = float(wildcards.res)
    why = f"the resolution report's out_res {res:g} m"
    return variant_config(wildcards.region, "prediction", "out_res", res, why)


def neighbour_stacks_at_res(wildcards):
    """The stacks the tile's crops read at the resolution report's {res}: which crops a tile runs
    depends on the out cells it answers (as neighbour_stacks, with out_res = {res})."""
    region = region_of(wildcards)
    prediction = {**region.settings["prediction"], "out_res": float(wildcards.res)}
    at_res = dataclasses.replace(region, settings={**region.settings, "prediction": prediction})
    return neighbour_stacks(wildcards, at_res)


def member_tiles(wildcards):
    """Every ensemble member's predicted tiles of the region and task (prediction.ensemble
    members; none when it is 0)."""
    r, task = wildcards.region, wildcards.task
    return [
        f"results/{r}/predict/{task}_m{k}/{t}.tif"
        for k in range(1, ensemble_size(r) + 1)
        for t in tiles_of(r)
    ]


def member_models(wildcards):
    r, task = wildcards.region, wildcards.task
    return [f"results/{r}/models/{task}_m{k}.pt" for k in range(1, ensemble_size(r) + 1)]


def uncertainty_maps_of(region):
    return [f"maps/{task}_{region}_uncertainty.tif" for task in TASKS]


def compared_res(region):
    """The compared out_res (m) coarser than the region's own (COMPARED_RES)."""
    own = REGIONS[region].settings["prediction"]["out_res"]
    return [res for res in COMPARED_RES if res > own]


def res_tiles(wildcards):
    """The region's predicted tiles of every task at its out_res (10 m by default) and at each
    coarser compared one (the resolution report's input; a tile's task and out_res are in its
    tags)."""
    r = wildcards.region
    tiles = [p for task in TASKS for p in predicted_tiles(r, task)]
    tiles += [
        f"results/{r}/predict_{res}m/{task}/{t}.tif"
        for task in TASKS
        for res in compared_res(r)
        for t in tiles_of(r)
    ]
    return tiles


def res_logs(wildcards):
    """The logs of the predict jobs of res_tiles, in the same order (the report sums the seconds
    they logged)."""
    r = wildcards.region
    logs = [f"logs/predict/{r}_{task}_{t}.log" for task in TASKS for t in tiles_of(r)]
    logs += [
        f"logs/predict/{r}_{task}_{t}_{res}m.log"
        for task in TASKS
        for res in compared_res(r)
        for t in tiles_of(r)
    ]
    return logs
