"""Wall-to-wall prediction of one tile: crops on the global crop lattice, batched through MiSo,
Gaussian-weighted and blended (stage 7).

What a tile's pixels are: for every out cell of the tile (``out_res`` m, aligned with the lattice;
see :mod:`mapper.blending`), the weighted mean (tapered Gaussian weights), over every crop of the
global crop lattice whose support holds the cell's centre, of that crop's *probability* at the
cell's centre (sigmoid of a binary task's logit, e.g. NSP; softmax of a multiclass task's, e.g. the
7 soil orders). Probabilities are blended rather than logits so that the result is a probability
(and the 7 class probabilities still sum to 1) whatever the weights. Because the crop lattice is
global and the crops covering a cell are visited in the same order from every tile, a tile equals
the same cells of one pass over the whole region: no seams, and mosaics made with any ``tile_px``
agree.

Reading: the crops reach up to ``crop_px - 1`` pixels beyond the tile, so the tile reads the
stacks around it (given on the command line): the region's stacked tiles, mapped or *context*
tiles (:meth:`mapper.config.Region.stacked_tiles`: every tile within a crop's reach of the mapped
area), so a crop at the region's edge reads the sources wherever they have data, as an interior
crop does. A stacked tile within reach that was not given is an error (its absence would silently
change the tile); beyond the stacked tiles no run crop reads.

Nodata: a 10 m pixel is valid where the normaliser says so (all Sentinel-2 bands and elevation
finite); an out cell is valid when any of its 10 m pixels is and its centre lies inside the
region's mapped area (the boundary buffered by ``buffer_m``, :func:`mapper.grid.cells_inside`).
Only valid cells are decoded, and a crop with no valid cell of the tile is not run at all, so
ocean, cloud gaps and the part of an edge tile outside the region cost nothing; a tile whose stack
is marked ``MAPPER_EMPTY=true`` is written as nodata without loading the model.

Precision and negligible weights (the region's ``prediction.precision`` and ``min_weight``):
``float32`` is the exact path; ``bfloat16`` runs the implicit queries, most of the decoder's
work, under autocast (matrix products in bfloat16, about 2x the float32 rate on CPUs with
AVX-512 BF16 and on data-centre GPUs) and keeps the encoders, mappers and heads in float32
(:meth:`mapper.models.miso.MiSo.predict_packed` says why). With ``min_weight`` eps > 0 a crop
does not decode a cell whose normalised weight (its weight over the cell's total over all crops,
:meth:`mapper.blending.CropLattice.axis_total`) is below eps; the cell's blend of the other crops
then moves by less than the skipped share.

Batching never changes a value. CPU (and GPU) kernels are chosen by the shape of a product, and
different kernels round differently: the demo encoder's features differ in the last bit between
5 and 8 crops per call, and a decoded query between calls of 3 and 4 queries. Within one shape
a row's value does not depend on the other rows. So every model call has one shape: the encoders
see ``batch_size`` crops (the last group of a tile padded with blank crops), and the queries of
consecutive crops are packed into calls of exactly ``points_per_call`` points
(:mod:`mapper.models.implicit`), only the tile's last call padded (at most one call's worth per
tile, against a whole batch's padding per batch before). A cell's value is therefore the same at
every tile size, whichever crops share its calls, in either precision (tested bit for bit);
``batch_size`` and the device choose the shapes, so they may change the last bit.

Memory is bounded per tile and independent of the region: crops stream through a bounded queue of
crop rows (one row of crops read at a time, the next prefetched by one thread), batches of
``batch_size`` crops go through the model, and the blend accumulates ``sum(w p)`` and ``sum(w)`` in
float32 arrays of the tile's size, divided in place. On CUDA, host batches are pinned and copied
asynchronously; on the CPU the result is deterministic (byte-identical reruns).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely
import torch
from affine import Affine
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.blending import Blender, Crop, CropLattice
from mapper.config import Region
from mapper.errors import CheckpointError, InputError
from mapper.files import file_sha256
from mapper.grid import Lattice, cells_inside
from mapper.normalise import Normaliser
from mapper.progress import bar as progress_bar
from mapper.query_stream import PRECISIONS, QueryStream
from mapper.raster import open_raster, write_geotiff
from mapper.tasks import get_task
from mapper.windows import StackReader

if TYPE_CHECKING:
    from tqdm import tqdm

logger = logging.getLogger(__name__)

CPU_POINTS_BUDGET = {"float32": 2**16, "bfloat16": 2**20}
"""On the CPU, query points per model call = this / embedding width, within CPU_POINTS_RANGE.

float32: the decoder's per-neighbour activations are [points, 4, hidden] tensors streamed through
a dozen element-wise operations; keeping them near the cache size (about 1 MB) made the demo
model's decoder twice as fast as decoding a whole 64 px crop per call (measured best of 5, 1
thread: 0.11 s per crop at 512 points per call, 0.18 at 4096, 0.34 at 8192). bfloat16 matrix
kernels need larger products to reach their rate (2 threads, 8 crops' tables, 7 classes, per
query): demo model 10.2 us at 4096 points per call, 10.4 at 2048, 11.0 at 8192, 15.8 at 512
(float32 23-25); Swin-V2-B widths 224 us at 1024, 239 at 512 (float32 441-443).
"""
CPU_POINTS_RANGE = {"float32": (128, 8192), "bfloat16": (512, 4096)}
GPU_POINTS_PER_CALL = 16384
"""On CUDA, query points per model call: large enough to keep a GPU busy; at the reference widths
the largest per-neighbour activation is then 16384 x 4 x 1024 floats (256 MB)."""
MASK_ROWS = 256
"""Rows of the tile read at once to find its valid pixels."""


@dataclass
class PredictStats:
    """What a tile cost: counts and seconds per phase (main thread unless said otherwise)."""

    tile: str = ""
    crops: int = 0
    crops_skipped: int = 0
    queries: int = 0
    valid_cells: int = 0
    cells: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    @property
    def total(self) -> float:
        return float(self.seconds.get("total", 0.0))


@dataclass
class _Item:
    """One crop ready for the model: inputs, and where its answers go in the tile."""

    crop: Crop
    s2: np.ndarray  # [9, P, P] float32
    cov: np.ndarray  # [10, P, P] float32
    index: np.ndarray  # [n] flat indices of its valid cells in the tile's out grid
    coords: np.ndarray  # [n, 2] crop-normalised (x, y)
    xy: np.ndarray  # [n, 2] EPSG:3338 metres
    weights: np.ndarray  # [n] blending weights


def points_per_call(emb_dim: int, device_type: str = "cpu", precision: str = "float32") -> int:
    """Query points per decoder call for a model of embedding width ``emb_dim`` on a device."""
    if device_type == "cuda":
        return GPU_POINTS_PER_CALL
    low, high = CPU_POINTS_RANGE[precision]
    return min(high, max(low, CPU_POINTS_BUDGET[precision] // max(1, emb_dim)))


def choose_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TilePredictor:
    """Runs a loaded MiSo model over the crops of tiles (see the module docstring).

    ``lattice``: the region's lattice; ``crops``: the prediction crop lattice; ``area``: the
    mapped area (EPSG:3338; None: every cell); ``batch_size``: crops per model call;
    ``precision``: "float32" (exact) or "bfloat16" (autocast); ``min_weight``: normalised weight
    below which a crop does not decode a cell (0: every cell); ``prefetch``: read the next crop row
    in a background thread while the model runs.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        normaliser: Normaliser,
        lattice: Lattice,
        crops: CropLattice,
        task: str,
        *,
        area: shapely.Geometry | None = None,
        batch_size: int = 16,
        device: torch.device | str | None = None,
        precision: str = "float32",
        min_weight: float = 0.0,
        prefetch: bool = True,
        progress: bool = True,
    ) -> None:
        self.device = choose_device(str(device) if device else None)
        self.model = model.to(self.device).eval()
        self.normaliser = normaliser
        self.lattice = lattice
        self.crops = crops
        self.task = task
        self.area = area
        self.n_out = get_task(task).n_outputs
        self.batch_size = max(1, int(batch_size))
        if precision not in PRECISIONS:
            raise InputError(f"precision {precision!r} must be one of {', '.join(PRECISIONS)}")
        if not 0.0 <= min_weight < 1.0:
            raise InputError(f"min_weight {min_weight} must be in [0, 1)")
        self.precision = precision
        self.min_weight = float(min_weight)
        self.prefetch = prefetch
        self.progress = progress
        self.out_res = lattice.res * crops.factor
        self.pin = self.device.type == "cuda"
        emb = int(getattr(getattr(model, "cfg", None), "emb_dim", 1024))
        self.points_per_call = points_per_call(emb, self.device.type, precision)

    # -- geometry --------------------------------------------------------------------------------
    def out_window(self, tile: str) -> Window:
        """The tile's cells on the out grid (global out-grid indices)."""
        return self.crops.out_window(self.lattice.tile_window(tile))

    def context_window(self, tile: str) -> Window:
        """Lattice pixels that the tile's crops read (the tile plus up to crop_px - 1 around)."""
        return self.crops.reach(self.out_window(tile))

    # -- validity --------------------------------------------------------------------------------
    def valid_cells(self, reader: StackReader, tile: str) -> np.ndarray:
        """Bool [h, w] on the tile's out grid: any valid 10 m pixel under the cell, and the
        cell's centre inside the mapped area (when one is set). A cell straddling the tile's edge
        (an out_res whose ratio does not divide the tile) reads its pixels in the neighbour."""
        ow = self.out_window(tile)
        k = self.crops.factor
        h, w = int(ow.height), int(ow.width)
        rows = max(1, MASK_ROWS // k)  # out rows per strip
        inside = None
        if self.area is not None:
            inside = cells_inside(self.area, self.lattice, ow, k)
            if not inside.any():  # an edge tile's part outside the area: nothing to read
                return inside
        out = np.zeros((h, w), dtype=bool)
        col0, row0 = int(ow.col_off) * k, int(ow.row_off) * k
        for r in range(0, h, rows):
            n = min(rows, h - r)
            strip = reader.read(Window(col0, row0 + r * k, w * k, n * k))
            ok = self.normaliser.valid(strip)  # [n k, w k]
            out[r:r + n] = ok.reshape(n, k, w, k).any(axis=(1, 3))
        if inside is not None:
            out &= inside
        return out

    # -- the tile --------------------------------------------------------------------------------
    def predict(self, reader: StackReader, tile: str) -> tuple[np.ndarray, PredictStats]:
        """Blended probabilities [n_out, h, w] float32 (NaN nodata) of ``tile`` and its costs."""
        stats = PredictStats(tile=tile)
        start = time.perf_counter()
        t0 = time.perf_counter()
        valid = self.valid_cells(reader, tile)
        stats.add("read_mask", time.perf_counter() - t0)
        ow = self.out_window(tile)
        h, w = int(ow.height), int(ow.width)
        stats.cells, stats.valid_cells = h * w, int(valid.sum())
        blender = Blender(self.n_out, h, w)
        if valid.any():
            self._totals = (self.crops.axis_total(int(ow.row_off), int(ow.row_off) + h),
                            self.crops.axis_total(int(ow.col_off), int(ow.col_off) + w))
            self._run(reader, tile, valid, blender, stats)
            if self.min_weight > 0 and (blender.sum_w[valid.reshape(-1)] <= 0).any():
                raise InputError(
                    f"tile {tile}: prediction.min_weight {self.min_weight:g} skips every crop at "
                    "some cells (more crops overlap there than 1 / min_weight); lower "
                    "prediction.min_weight in the region file"
                )
        t0 = time.perf_counter()
        out = blender.result(valid)
        stats.add("blend", time.perf_counter() - t0)
        stats.add("total", time.perf_counter() - start)
        return out, stats

    def _cells(self, crop: Crop, valid: np.ndarray, ow: Window) -> np.ndarray:
        """Bool [rows, cols] over the crop's cells in the tile: valid, and (with ``min_weight``)
        a normalised weight of at least ``min_weight``."""
        r_off, c_off = int(ow.row_off), int(ow.col_off)
        sub = valid[crop.r_lo - r_off:crop.r_hi - r_off, crop.c_lo - c_off:crop.c_hi - c_off]
        if self.min_weight <= 0 or not sub.any():
            return sub
        ty, tx = self._totals
        wy = self.crops.weights_1d(crop.rows, crop.r_lo, crop.r_hi) / ty[crop.r_lo - r_off:
                                                                           crop.r_hi - r_off]
        wx = self.crops.weights_1d(crop.cols, crop.c_lo, crop.c_hi) / tx[crop.c_lo - c_off:
                                                                           crop.c_hi - c_off]
        return sub & (np.outer(wy, wx) >= self.min_weight)

    def _plan(self, tile: str, valid: np.ndarray) -> list[tuple[int, list[Crop]]]:
        """Crop rows to run: crops with at least one cell of the tile to decode, lattice order."""
        ow = self.out_window(tile)
        rows: dict[int, list[Crop]] = {}
        for crop in self.crops.crops_for(ow):
            if self._cells(crop, valid, ow).any():
                rows.setdefault(crop.i, []).append(crop)
        return sorted(rows.items())

    def _row_items(
        self, reader: StackReader, tile: str, valid: np.ndarray, crops: list[Crop],
        stats: PredictStats,
    ) -> list[_Item]:
        """Read one row of crops as one window, normalise it, cut it into model items."""
        p = self.crops.crop_px
        ow = self.out_window(tile)
        r_off, c_off, width = int(ow.row_off), int(ow.col_off), int(ow.width)
        col0 = min(c.cols.start for c in crops)
        col1 = max(c.cols.start for c in crops) + p
        row0 = crops[0].rows.start
        t0 = time.perf_counter()
        stack = reader.read(Window(col0, row0, col1 - col0, p))
        t1 = time.perf_counter()
        s2, cov = self.normaliser(stack)
        t2 = time.perf_counter()
        items = []
        for crop in crops:
            rr, cc = np.nonzero(self._cells(crop, valid, ow))
            coords = self.crops.crop_coords(crop)[rr, cc]  # [n, 2] (x, y)
            weights = self.crops.weights(crop)[rr, cc]
            gr, gc = rr + crop.r_lo, cc + crop.c_lo  # global out-grid cells
            xy = np.stack([self.lattice.origin_x + (gc + 0.5) * self.out_res,
                           self.lattice.origin_y - (gr + 0.5) * self.out_res], axis=-1)
            a = crop.cols.start - col0
            items.append(_Item(
                crop=crop,
                s2=s2[:, :, a:a + p],
                cov=cov[:, :, a:a + p],
                index=(gr - r_off) * width + (gc - c_off),
                coords=coords.astype(np.float32),
                xy=xy.astype(np.float32),
                weights=weights,
            ))
        t3 = time.perf_counter()
        stats.add("read", t1 - t0)
        stats.add("normalise", t2 - t1 + t3 - t2)
        return items

    def _items(
        self, reader: StackReader, tile: str, valid: np.ndarray,
        plan: list[tuple[int, list[Crop]]], stats: PredictStats,
    ) -> Iterator[_Item]:
        """Every crop item in lattice order; rows read ahead by one thread when prefetching."""
        if not self.prefetch:
            for _, crops in plan:
                yield from self._row_items(reader, tile, valid, crops, stats)
            return
        worker_stats = PredictStats()
        rows: queue.Queue = queue.Queue(maxsize=1)  # one row waiting + one being read: bounded
        stop = threading.Event()

        def work() -> None:
            try:
                for _, crops in plan:
                    if stop.is_set():
                        return
                    rows.put(self._row_items(reader, tile, valid, crops, worker_stats))
                rows.put(None)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                rows.put(exc)

        thread = threading.Thread(target=work, name=f"read-{tile}", daemon=True)
        thread.start()
        try:
            while True:
                t0 = time.perf_counter()
                got = rows.get()
                stats.add("wait_read", time.perf_counter() - t0)
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                yield from got
        finally:
            stop.set()
            while thread.is_alive():  # unblock a worker waiting to put
                try:
                    rows.get_nowait()
                except queue.Empty:
                    time.sleep(0.01)
            for key, value in worker_stats.seconds.items():
                stats.add(key, value)

    def _run(self, reader: StackReader, tile: str, valid: np.ndarray, blender: Blender,
             stats: PredictStats) -> None:
        plan = self._plan(tile, valid)
        n_crops = sum(len(c) for _, c in plan)
        stats.crops = n_crops
        stats.crops_skipped = sum(1 for _ in self.crops.crops_for(self.out_window(tile))) - n_crops
        bar = _progress(n_crops, tile, self.progress)
        stream = QueryStream(self, blender, stats)
        group: list[_Item] = []
        try:
            for item in self._items(reader, tile, valid, plan, stats):
                group.append(item)
                if len(group) == self.batch_size:
                    stream.add(group)
                    bar.update(len(group))
                    group = []
            if group:
                stream.add(group)
                bar.update(len(group))
            stream.finish()
        finally:
            bar.close()

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        if self.pin:
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _progress(total: int, tile: str, enabled: bool) -> tqdm:
    return progress_bar(total, f"predict {tile}", "crop", disable=not enabled)


# -- the command --------------------------------------------------------------------------------


def stacks_by_tile(stacks: list[str | Path], lattice: Lattice) -> dict[str, Path]:
    """Tile id -> stack path, from the file names ``<tile>.tif``."""
    out: dict[str, Path] = {}
    for s in stacks:
        path = Path(s)
        tile = path.name.removesuffix(".tif")
        try:
            lattice.parse(tile)
        except ValueError:
            raise InputError(
                f"{path}: a stack must be named <tile id>.tif (e.g. R0012C0034.tif); pass the "
                "stage's stack files"
            ) from None
        out[tile] = path
    return out


def _is_empty(path: Path) -> bool:
    with open_raster(path) as ds:
        return ds.tags().get("MAPPER_EMPTY", "false").lower() == "true"


@dataclass(frozen=True, kw_only=True)
class PredictOptions:
    """How :func:`predict_tile` runs the model; the settings of what it computes are the region's.

    ``batch_size``: crops per encoder call (speed and memory; see the module docstring on
    shapes); ``device``:
    a torch device name (default: CUDA when present, else the CPU); ``progress``: a progress bar
    on stderr. Precision and ``min_weight`` are the region's ``prediction`` settings.
    """

    batch_size: int = 16
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
    from mapper.models.checkpoint import load_checkpoint

    spec = get_task(task)
    lattice = region.lattice
    prediction = region.settings["prediction"]
    crops = CropLattice.from_settings(prediction, lattice.res)
    by_tile = stacks_by_tile(stacks, lattice)
    if tile not in by_tile:
        raise InputError(f"no stack for tile {tile} among the {len(by_tile)} given; pass "
                         f"results/{region.name}/stack/{tile}.tif")
    if not Path(model_path).is_file():
        raise CheckpointError(f"{model_path}: no such checkpoint; train the model first or fix "
                              "the path")
    sha = file_sha256(model_path)
    tags = {
        "MAPPER_TILE": tile,
        "MAPPER_TASK": task,
        "MAPPER_MODEL_SHA256": sha,
        "MAPPER_OUT_RES": f"{lattice.res * crops.factor:g}",
        "MAPPER_BLENDING": f"weighted mean of probabilities over {crops.describe()}",
        "MAPPER_PRECISION": prediction["precision"],
        "MAPPER_MIN_WEIGHT": f"{prediction['min_weight']:g}",
        "MAPPER_SYNTHETIC": str(region.synthetic).lower(),
    }
    names = spec.output_names
    res = lattice.res * crops.factor
    ow = crops.out_window(lattice.tile_window(tile))  # the out cells whose centre is in the tile
    transform = Affine(res, 0.0, lattice.origin_x + int(ow.col_off) * res, 0.0, -res,
                       lattice.origin_y - int(ow.row_off) * res)
    if _is_empty(by_tile[tile]):
        logger.info("%s: stack marked empty; writing nodata without running the model", tile)
        data = np.full((len(names), int(ow.height), int(ow.width)), np.nan, dtype=np.float32)
        write_geotiff(out, data, transform, lattice.crs, nodata=np.nan, descriptions=names,
                      tags={**tags, "MAPPER_EMPTY": "true"})
        return PredictStats(tile=tile, cells=int(ow.height * ow.width))

    model, meta = load_checkpoint(model_path, expect_task=task,
                                  expect_size=region.settings["model"]["size"])
    if meta.bands != STACK_BANDS:
        raise CheckpointError(f"{model_path}: trained on bands {meta.bands}, not the stack's "
                              f"{STACK_BANDS}; retrain on current stacks")
    normaliser = Normaliser.from_dict(meta.normalisation)
    predictor = TilePredictor(model, normaliser, lattice, crops, task, area=region.area(),
                              batch_size=options.batch_size, device=options.device,
                              precision=prediction["precision"],
                              min_weight=prediction["min_weight"], progress=options.progress)
    _check_neighbours(predictor, tile, by_tile, set(region.stacked_tiles()))
    with StackReader(by_tile, lattice) as reader:
        data, stats = predictor.predict(reader, tile)
    t0 = time.perf_counter()
    write_geotiff(out, data, transform, lattice.crs, nodata=np.nan, descriptions=names,
                  tags={**tags, "MAPPER_EMPTY": str(stats.valid_cells == 0).lower()})
    stats.add("write", time.perf_counter() - t0)
    logger.info(
        "%s: %d crops (%d skipped), %d queries, %.1f s (%s); %d of %d cells valid",
        tile, stats.crops, stats.crops_skipped, stats.queries, stats.total,
        ", ".join(f"{k} {v:.1f}" for k, v in sorted(stats.seconds.items()) if k != "total"),
        stats.valid_cells, stats.cells,
    )
    return stats


def _check_neighbours(predictor: TilePredictor, tile: str, given: dict[str, Path],
                      stacked: set[str]) -> None:
    """Every stacked tile (mapped or context) the crops reach must be given (a missing one would
    change the tile)."""
    needed = predictor.lattice.tiles_in_window(predictor.context_window(tile))
    missing = sorted(t for t in needed if t in stacked and t not in given)
    if missing:
        raise InputError(
            f"tile {tile}: its crops read the region's stacked tiles {', '.join(missing)} but "
            "their stacks were not given; pass every stack within the crops' reach (the "
            "workflow's neighbour_stacks)"
        )
