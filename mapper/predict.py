"""``predict_tile``: one tile's probabilities from a MiSo checkpoint, written as a GeoTIFF
(stage 7).

It finds the tile's stack and those of the stacked tiles its crops reach (mapped or context tiles,
:meth:`mapper.config.Region.stacked_tiles`; a stacked tile within reach that was not given is an
error, as its absence would silently change the tile), loads the checkpoint, checks its bands, and
runs :class:`mapper.predictor.TilePredictor`, which says what a tile's pixels are. A tile whose
stack is marked ``MAPPER_EMPTY=true`` is written as nodata without loading the model. The file is
written atomically, tagged with the model's checksum and the blending and precision settings.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine

from mapper.bands import input_bands
from mapper.blending import BATCH_SIZE, CropLattice
from mapper.config import Region
from mapper.errors import CheckpointError, InputError
from mapper.files import file_sha256
from mapper.normalise import Normaliser
from mapper.predictor import PredictStats, TilePredictor
from mapper.raster import (
    any_synthetic,
    check_written,
    open_raster,
    tag_is_true,
    write_geotiff,
    writing,
)
from mapper.tasks import get_task
from mapper.windows import StackReader, stacks_by_tile

if TYPE_CHECKING:  # torch is imported by the job that predicts, not by every importer
    from mapper.models.checkpoint import CheckpointMeta

logger = logging.getLogger(__name__)


def _is_empty(path: Path) -> bool:
    with open_raster(path) as ds:
        return tag_is_true(ds.tags(), "MAPPER_EMPTY")


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How :func:`predict_tile` runs the model; the settings of what it computes are the region's.

    ``batch_size``: crops per encoder call (speed and memory; see the module docstring on
    shapes); ``device``:
    a torch device name (default: CUDA when present, else the CPU); ``progress``: a progress bar
    on stderr. Precision and ``min_weight`` are the region's ``prediction`` settings.
    """

    batch_size: int = BATCH_SIZE
    device: str | None = None
    progress: bool = True


def predict_tile(
    region: Region,
    task: str,
    tile: str,
    model_path: str | Path,
    stacks: list[str | Path],
    out: str | Path,
    *,
    options: PredictOptions = PredictOptions(),
) -> PredictStats:
    """Predict ``tile`` of ``region`` for ``task`` with the checkpoint ``model_path`` into ``out``.

    ``stacks``: the tile's stack and those of the stacked tiles its crops reach
    (:meth:`mapper.config.Region.tile_context`; ``<tile>.tif`` names). Output: float32 GeoTIFF on
    the tile's out cells at ``prediction.out_res`` (those whose centre lies in the tile: its
    bounds unless the out_res's ratio to 10 m does not divide the tile size), EPSG:3338, one
    probability band per class (NSP: 1, descriptions = class names), NaN nodata (also every
    cell outside the mapped area), written atomically.
    """
    from mapper.models.checkpoint import check_checkpoint, load_checkpoint

    spec = get_task(task)
    lattice = region.lattice
    prediction = region.settings["prediction"]
    crops = CropLattice.from_settings(prediction, lattice.res)
    by_tile = stacks_by_tile(stacks)
    if tile not in by_tile:
        raise InputError(f"no stack for tile {tile} among the {len(by_tile)} given; pass "
                         f"results/{region.name}/stack/{tile}.tif")
    # the checks of the model's jobs, on every tile: an empty one too records the checkpoint
    expect = {"expect_task": task, "expect_size": region.settings["model"]["size"]}
    _check_inputs(model_path, check_checkpoint(model_path, **expect))
    sha = file_sha256(model_path)
    tags = {
        "MAPPER_TILE": tile,
        "MAPPER_TASK": task,
        "MAPPER_MODEL_SHA256": sha,
        "MAPPER_OUT_RES": f"{lattice.res * crops.factor:g}",
        "MAPPER_BLENDING": f"weighted mean of probabilities over {crops.describe()}",
        "MAPPER_PRECISION": prediction["precision"],
        "MAPPER_MIN_WEIGHT": f"{prediction['min_weight']:g}",
        # a stack made from a synthetic file (a demo file given to a real region) says so, and
        # so does every map made from it
        "MAPPER_SYNTHETIC": str(region.synthetic
                                or any_synthetic(list(by_tile.values()))).lower(),
    }
    names = spec.output_names
    res = lattice.res * crops.factor
    ow = crops.out_window(lattice.tile_window(tile))  # the out cells whose centre is in the tile
    transform = Affine(res, 0.0, lattice.origin_x + int(ow.col_off) * res, 0.0, -res,
                       lattice.origin_y - int(ow.row_off) * res)
    # An empty stack's out cells are all nodata when they lie in the tile; at an out_res that
    # does not divide tile_px, edge cells reach into the neighbours, whose pixels may be valid:
    # those tiles are predicted, so that a cell is the same at every tile size.
    if _is_empty(by_tile[tile]) and lattice.tile_px % crops.factor == 0:
        logger.info("%s: stack marked empty; writing nodata without running the model", tile)
        t0 = time.perf_counter()
        data = np.full((len(names), int(ow.height), int(ow.width)), np.nan, dtype=np.float32)
        _write_tile(out, data, transform, lattice.crs, names, {**tags, "MAPPER_EMPTY": "true"})
        stats = PredictStats(tile=tile, cells=int(ow.height * ow.width))
        stats.add("write", time.perf_counter() - t0)
        stats.add("total", stats.seconds["write"])
        _log_done(stats)
        return stats

    _check_neighbours(region, tile, by_tile)  # before the model is loaded: a cheap check first
    model, meta = load_checkpoint(model_path, **expect)
    normaliser = Normaliser.from_dict(meta.normalisation, model_path)
    predictor = TilePredictor(model, normaliser, lattice, crops, task, area=region.area(),
                              batch_size=options.batch_size, device=options.device,
                              precision=prediction["precision"],
                              min_weight=prediction["min_weight"], progress=options.progress)
    try:
        with StackReader(by_tile, lattice) as reader:
            data, stats = predictor.predict(reader, tile)
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        if not _is_out_of_memory(exc):
            raise
        raise _out_of_memory(tile, predictor.device, options.batch_size, exc) from None
    t0 = time.perf_counter()
    _write_tile(out, data, transform, lattice.crs, names,
                {**tags, "MAPPER_EMPTY": str(stats.valid_cells == 0).lower()})
    stats.add("write", time.perf_counter() - t0)
    _log_done(stats)
    return stats


CPU_ALLOCATOR_FAILED = "can't allocate memory"
"""In the RuntimeError of torch's CPU allocator out of host memory ("DefaultCPUAllocator: can't
allocate memory: you tried to allocate N bytes. Error code 12 (Cannot allocate memory)")."""


GPU_LIBRARY_ALLOC_FAILED = ("CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED")
"""In the RuntimeError of cuBLAS or cuDNN out of GPU memory for its handle or workspace ("CUDA
error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), not an
OutOfMemoryError."""


def _is_out_of_memory(exc: BaseException) -> bool:
    """A GPU or host allocation failure: torch's OutOfMemoryError, Python's MemoryError, the
    RuntimeError of torch's CPU allocator, or that of cuBLAS or cuDNN out of GPU memory."""
    import torch

    text = str(exc)
    return (isinstance(exc, (torch.OutOfMemoryError, MemoryError))
            or CPU_ALLOCATOR_FAILED in text
            or any(marker in text for marker in GPU_LIBRARY_ALLOC_FAILED))


def _out_of_memory(tile: str, device: object, batch_size: int, exc: BaseException
                   ) -> InputError:
    """The one error of a predict job out of memory: the batch size is what to lower (a retry
    with more host memory, as the SLURM profile's, would fail the same way on a GPU); on the CPU
    more host memory helps too."""
    text = " ".join(str(exc).split())
    if CPU_ALLOCATOR_FAILED in text:  # "[enforce fail at alloc_cpu.cpp:N] err == 0. ..."
        text = text[text.index(CPU_ALLOCATOR_FAILED):]
    reason = text.split(". ")[0][:120] or type(exc).__name__
    return InputError(
        f"tile {tile}: out of memory on {device} with batch size {batch_size} ({reason}); lower "
        "the batch size: --batch-size N, in the workflow the batch_size resource of rules "
        "predict, predict_member and predict_at_res (predict:batch_size=N)"
        + (", or give the job more memory (predict:mem_mb=N)"
           if getattr(device, "type", str(device)) == "cpu" else "")
        + ", in the set-resources of a copy of the profile (--set-resources on the command line "
        "replaces the profile's whole set-resources); the map does not depend on the batch size "
        "beyond the last bit of a float"
    )


def _check_inputs(model_path: str | Path, meta: CheckpointMeta) -> None:
    """The checkpoint's bands are the stack's as its model takes them, and its normalisation
    encodes the aspect as its model does; CheckpointError naming the file."""
    aspect = meta.config.aspect
    if meta.bands != input_bands(aspect):
        raise CheckpointError(f"{model_path}: trained on bands {meta.bands}, not the stack's as "
                              f"its model takes them, {input_bands(aspect)}; retrain on current "
                              "stacks")
    encoded = Normaliser.from_dict(meta.normalisation, model_path).aspect
    if encoded != aspect:
        raise CheckpointError(f"{model_path}: its normalisation encodes the aspect as "
                              f"{encoded!r} but its model takes it as {aspect!r}; retrain")


def _write_tile(out: str | Path, data: np.ndarray, transform: Affine, crs: str,
                names: list[str], tags: dict[str, str]) -> None:
    """The predicted tile's GeoTIFF; a failed write (a full disk) is one InputError naming
    ``out`` (:func:`mapper.raster.writing`) and leaves no file there."""
    with writing(out):
        write_geotiff(out, data, transform, crs, nodata=np.nan, descriptions=names, tags=tags)
    check_written(out)


def _log_done(stats: PredictStats) -> None:
    """The line every predict job logs once its tile is written, empty tiles included (the
    resolution report reads the cost from it: :data:`mapper.resolution.PREDICT_LINE`)."""
    logger.info(
        "%s: %d crops (%d skipped), %d queries, %.1f s (%s); %d of %d cells valid",
        stats.tile, stats.crops, stats.crops_skipped, stats.queries, stats.total,
        ", ".join(f"{k} {v:.1f}" for k, v in sorted(stats.seconds.items()) if k != "total"),
        stats.valid_cells, stats.cells,
    )


def _check_neighbours(region: Region, tile: str, given: dict[str, Path]) -> None:
    """Every stacked tile (mapped or context) the crops reach must be given (a missing one would
    change the tile): :meth:`mapper.config.Region.tile_context`."""
    missing = sorted(t for t in region.tile_context(tile) if t not in given)
    if missing:
        raise InputError(
            f"tile {tile}: its crops read the region's stacked tiles {', '.join(missing)} but "
            "their stacks were not given; pass every stack within the crops' reach (the "
            "workflow's neighbour_stacks)"
        )
