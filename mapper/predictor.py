"""The tile predictor: one tile's cells from the crops of the global crop lattice, batched through
MiSo, Gaussian-weighted and blended (stage 7; the command that writes a tile is
:mod:`mapper.predict`).

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
stacks around it through a :class:`mapper.windows.StackReader`: the region's stacked tiles, mapped
or *context* tiles (:meth:`mapper.config.Region.stacked_tiles`: every tile within a crop's reach of
the mapped area), so a crop at the region's edge reads the sources wherever they have data, as an
interior crop does (:func:`mapper.predict.predict_tile` checks that every one within reach is
given); beyond the stacked tiles no run crop reads.

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
``batch_size`` and the device choose the shapes, so they may change the last bit. On a GPU,
float32 is IEEE float32 (:func:`mapper.devices.ieee_float32`: cuDNN's TF32 convolutions off).

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
from typing import TYPE_CHECKING

import numpy as np
import shapely
import torch
from rasterio.windows import Window

from mapper.blending import BATCH_SIZE, Blender, Crop, CropLattice
from mapper.devices import choose_device, ieee_float32
from mapper.errors import InputError
from mapper.grid import Lattice, cells_inside
from mapper.normalise import Normaliser
from mapper.progress import bar as progress_bar
from mapper.query_stream import PRECISIONS, QueryStream
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
    weights: np.ndarray  # [n] blending weights


def points_per_call(emb_dim: int, device_type: str = "cpu", precision: str = "float32") -> int:
    """Query points per decoder call for a model of embedding width ``emb_dim`` on a device."""
    if device_type == "cuda":
        return GPU_POINTS_PER_CALL
    low, high = CPU_POINTS_RANGE[precision]
    return min(high, max(low, CPU_POINTS_BUDGET[precision] // max(1, emb_dim)))


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
        batch_size: int = BATCH_SIZE,
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
        self.task_spec = get_task(task)
        self.n_out = self.task_spec.n_outputs
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
        """Lattice pixels that the tile's prediction reads (the tile plus up to crop_px - 1
        around: its crops, and the pixels of its out cells, :meth:`CropLattice.reads`)."""
        return self.crops.reads(self.out_window(tile))

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
            if self.min_weight > 0:  # known from the crop lattice: checked before any crop runs
                top = np.outer(self.crops.axis_top_share(int(ow.row_off), int(ow.row_off) + h),
                               self.crops.axis_top_share(int(ow.col_off), int(ow.col_off) + w))
                if (top[valid] < self.min_weight).any():
                    raise InputError(
                        f"tile {tile}: prediction.min_weight {self.min_weight:g} skips every crop "
                        f"at some cells (no crop weighs more than {top[valid].min():.3g} of them: "
                        "more crops overlap there than 1 / min_weight); lower "
                        "prediction.min_weight in the region file"
                    )
            with ieee_float32():  # float32 is float32 on a GPU too (TF32 convolutions off)
                self._run(reader, tile, valid, blender, stats)
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
            a = crop.cols.start - col0
            items.append(_Item(
                crop=crop,
                s2=s2[:, :, a:a + p],
                cov=cov[:, :, a:a + p],
                index=(gr - r_off) * width + (gc - c_off),
                coords=coords.astype(np.float32),
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
