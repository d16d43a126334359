"""What a region's schema cannot relate, checked when the config is read (so that a dry run
names the file, the key and the fix, not the first job that trips on it): the stack section
against the tile and pixel size, per-task epochs against the task registry, the training
schedule, the prediction crops against the lattice, and the zone layers' names. The sources'
settings are checked by :mod:`mapper.sources.settings_checks`."""

from __future__ import annotations

import math
from pathlib import Path

from mapper.blending import CropLattice
from mapper.errors import ConfigError


def check_region_settings(settings: dict, origin: str | Path, res: float) -> None:
    """Every check of this module on a region's validated ``settings`` (from ``origin``, named
    in messages), on a lattice of ``res`` metres."""
    _check_stack(settings, origin, res)
    _check_task_epochs(settings, origin)
    _check_training(settings, origin)
    _check_prediction(settings, origin, res)
    _check_zone_names(settings, origin)


def _check_prediction(settings: dict, origin: str | Path, res: float) -> None:
    """The ``prediction`` section's crops and output pixel against each other and the lattice:
    checked when the config is read, so that a dry run names the file (not a predict job)."""
    try:
        crops = CropLattice.from_settings(settings["prediction"], res)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    min_weight = float(settings["prediction"]["min_weight"])
    if min_weight > 0:
        share = crops.lowest_top_share()
        lowest = math.floor(share * 1e4) / 1e4  # as printed: rounded down, so it is accepted
        if share < min_weight:
            raise ConfigError(
                f"{origin}: prediction.min_weight {min_weight:g} skips every crop at some cells "
                f"(where crops overlap most, none weighs more than {lowest:g} of a cell); "
                f"give a min_weight of at most {lowest:g} (the shipped regions use 0.02)"
            )


def _check_task_epochs(settings: dict, origin: str | Path) -> None:
    """Epochs given per task must name every task of the registry, and nothing else."""
    from mapper.tasks import TASKS

    epochs = settings["training"]["finetune_epochs"]
    if isinstance(epochs, dict) and set(epochs) != set(TASKS):
        raise ConfigError(
            f"{origin}: key 'training.finetune_epochs' gives epochs for "
            f"{', '.join(sorted(epochs)) or 'no task'}; give one number, or one per task: "
            f"{', '.join(TASKS)}"
        )


def _check_zone_names(settings: dict, origin: str | Path) -> None:
    """Each zone layer's ``name`` is its file and its key in the reports: one name, one layer."""
    names = [layer["name"] for layer in settings["zones"]]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(
            f"{origin}: zones: the name {', '.join(repeated)} is given to more than one layer; "
            "give each layer its own name"
        )


def _check_training(settings: dict, origin: str | Path) -> None:
    """Training settings the schema cannot relate: a crop needs query points beyond its labelled
    ones (pretraining has no other), the grid queries a square lattice, and the learning rates
    must fall from the peak."""
    training = settings["training"]
    if int(training["random_points"]) + int(training["grid_points"]) < 1:
        raise ConfigError(
            f"{origin}: keys 'training.random_points' and 'training.grid_points' are both 0, "
            "which leaves pretraining and every crop without a labelled point no query point; "
            "set one of them to at least 1 (the reference: 16 and 16)"
        )
    grid = int(training["grid_points"])
    if math.isqrt(grid) ** 2 != grid:
        side = math.isqrt(grid)
        raise ConfigError(
            f"{origin}: key 'training.grid_points' ({grid}) is not a square number: the grid "
            "queries are a k x k lattice of cell centres over the crop, and a partial last row "
            f"would leave a corner unqueried; give {side ** 2} or {(side + 1) ** 2}"
        )
    peak = float(training["lr_max"])
    for key in ("lr_min", "warmup_lr"):
        if float(training[key]) > peak:
            raise ConfigError(
                f"{origin}: key 'training.{key}' ({training[key]}) is above 'training.lr_max' "
                f"({training['lr_max']}), the schedule's peak; set it to at most {peak}"
            )


def _check_stack(settings: dict, origin: str | Path, res: float) -> None:
    """The ``stack`` section against the tile size and pixel size: checked when the config is
    read, so that a dry run already names the key and the fix (not the first stack job)."""
    from mapper.terrain import tpi_radius_px

    section = settings["stack"]
    need = max(1, tpi_radius_px(float(section["tpi_radius_m"]), res))
    if int(section["halo_px"]) < need:
        raise ConfigError(
            f"{origin}: key 'stack.halo_px' ({section['halo_px']}) is smaller than the TPI disc "
            f"radius plus derivatives need ({need} px for tpi_radius_m={section['tpi_radius_m']} "
            f"at {res} m); raise halo_px to at least {need}"
        )
    block, tile = int(section["hydro_block_px"]), int(settings["tile_px"])
    if block % tile and tile % block:
        raise ConfigError(
            f"{origin}: key 'stack.hydro_block_px' ({block}) and tile_px ({tile}) must nest "
            f"(one divides the other); set hydro_block_px to a divisor or multiple of {tile}"
        )
