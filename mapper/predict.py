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

Reading: the crops reach up to ``crop_px - 1`` pixels beyond the tile, so the tile reads its
neighbours' stacks (given on the command line); a neighbour that is not part of the region has no
stack and reads as NaN (nodata), exactly as in a single pass over the region. A neighbour that IS
part of the region but was not given is an error (its absence would silently change the tile).

Nodata: a 10 m pixel is valid where the normaliser says so (all Sentinel-2 bands and elevation
finite); an out cell is valid when any of its 10 m pixels is. Only valid cells are decoded, and a
crop with no valid cell of the tile is not run at all, so ocean and cloud gaps cost nothing; a tile
whose stack is marked ``MAPPER_EMPTY=true`` is written as nodata without loading the model.

Memory is bounded per tile and independent of the region: crops stream through a bounded queue of
crop rows (one row of crops read at a time, the next prefetched by one thread), batches of
``batch_size`` crops go through the model, and the blend accumulates ``sum(w p)`` and ``sum(w)`` in
float64 arrays of the tile's size. On CUDA, host batches are pinned and copied asynchronously and
bf16 autocast is available; on the CPU the result is deterministic (byte-identical reruns).
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
import torch
from affine import Affine
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.blending import Blender, Crop, CropLattice
from mapper.config import Region
from mapper.errors import CheckpointError, InputError
from mapper.files import file_sha256
from mapper.grid import Lattice
from mapper.normalise import Normaliser
from mapper.progress import bar as progress_bar
from mapper.raster import open_raster, write_geotiff
from mapper.tasks import get_task
from mapper.windows import StackReader

if TYPE_CHECKING:
    from tqdm import tqdm

logger = logging.getLogger(__name__)

CPU_POINTS_BUDGET = 2**16
"""On the CPU, query points per model call (batch x chunk) = this / embedding width, 128..8192.

The decoder's per-neighbour activations are [points, 4, hidden] tensors streamed through a dozen
element-wise operations; keeping them near the cache size (about 1 MB) made the demo model's
decoder twice as fast as decoding a whole 64 px crop per call (measured best of 5, 1 thread:
0.11 s per crop at 512 points per call, 0.18 at 4096, 0.34 at 8192).
"""
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


def points_per_call(emb_dim: int, device_type: str = "cpu") -> int:
    """Query points per decoder call for a model of embedding width ``emb_dim`` on a device."""
    if device_type == "cuda":
        return GPU_POINTS_PER_CALL
    return min(8192, max(128, CPU_POINTS_BUDGET // max(1, emb_dim)))


def choose_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TilePredictor:
    """Runs a loaded MiSo model over the crops of tiles (see the module docstring).

    ``lattice``: the region's lattice; ``crops``: the prediction crop lattice; ``batch_size``:
    crops per model call; ``bf16``: autocast to bfloat16 (CUDA mainly); ``prefetch``: read the
    next crop row in a background thread while the model runs.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        normaliser: Normaliser,
        lattice: Lattice,
        crops: CropLattice,
        task: str,
        *,
        batch_size: int = 16,
        device: torch.device | str | None = None,
        bf16: bool = False,
        prefetch: bool = True,
        progress: bool = True,
    ) -> None:
        self.device = choose_device(str(device) if device else None)
        self.model = model.to(self.device).eval()
        self.normaliser = normaliser
        self.lattice = lattice
        self.crops = crops
        self.task = task
        self.n_out = get_task(task).n_outputs
        self.batch_size = max(1, int(batch_size))
        self.bf16 = bf16
        self.prefetch = prefetch
        self.progress = progress
        self.out_res = lattice.res * crops.factor
        self.pin = self.device.type == "cuda"
        emb = int(getattr(getattr(model, "cfg", None), "emb_dim", 1024))
        self.points_per_call = points_per_call(emb, self.device.type)

    # -- geometry --------------------------------------------------------------------------------
    def out_window(self, tile: str) -> Window:
        """The tile's cells on the out grid (global out-grid indices)."""
        w = self.lattice.tile_window(tile)
        k = self.crops.factor
        return Window(w.col_off // k, w.row_off // k, w.width // k, w.height // k)

    def context_window(self, tile: str) -> Window:
        """Lattice pixels that the tile's crops read (the tile plus up to crop_px - 1 around)."""
        crops = self.crops.crops_for(self.out_window(tile))
        rows_cols = [(c.rows.start, c.cols.start) for c in crops]
        r0 = min(r for r, _ in rows_cols)
        c0 = min(c for _, c in rows_cols)
        r1 = max(r for r, _ in rows_cols) + self.crops.crop_px
        c1 = max(c for _, c in rows_cols) + self.crops.crop_px
        return Window(c0, r0, c1 - c0, r1 - r0)

    # -- validity --------------------------------------------------------------------------------
    def valid_cells(self, reader: StackReader, tile: str) -> np.ndarray:
        """Bool [h, w] on the tile's out grid: any valid 10 m pixel under the cell."""
        w = self.lattice.tile_window(tile)
        k = self.crops.factor
        size = self.lattice.tile_px
        rows = max(k, (MASK_ROWS // k) * k)
        out = np.zeros((size // k, size // k), dtype=bool)
        for r in range(0, size, rows):
            h = min(rows, size - r)
            strip = reader.read(Window(w.col_off, w.row_off + r, size, h))
            ok = self.normaliser.valid(strip)  # [h, size]
            out[r // k:(r + h) // k] = ok.reshape(h // k, k, size // k, k).any(axis=(1, 3))
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
            self._run(reader, tile, valid, blender, stats)
        t0 = time.perf_counter()
        out = blender.result(valid)
        stats.add("blend", time.perf_counter() - t0)
        stats.add("total", time.perf_counter() - start)
        return out, stats

    def _plan(self, tile: str, valid: np.ndarray) -> list[tuple[int, list[Crop]]]:
        """Crop rows to run: crops with at least one valid cell of the tile, in lattice order."""
        ow = self.out_window(tile)
        r_off, c_off = int(ow.row_off), int(ow.col_off)
        rows: dict[int, list[Crop]] = {}
        for crop in self.crops.crops_for(ow):
            sub = valid[crop.r_lo - r_off:crop.r_hi - r_off, crop.c_lo - c_off:crop.c_hi - c_off]
            if sub.any():
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
            sub = valid[crop.r_lo - r_off:crop.r_hi - r_off, crop.c_lo - c_off:crop.c_hi - c_off]
            rr, cc = np.nonzero(sub)
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
        batch: list[_Item] = []
        try:
            for item in self._items(reader, tile, valid, plan, stats):
                batch.append(item)
                if len(batch) == self.batch_size:
                    self._batch(batch, blender, stats)
                    bar.update(len(batch))
                    batch = []
            if batch:
                self._batch(batch, blender, stats)
                bar.update(len(batch))
        finally:
            bar.close()

    def _batch(self, batch: list[_Item], blender: Blender, stats: PredictStats) -> None:
        """Encode a batch of crops, decode their valid cells, blend the probabilities."""
        t0 = time.perf_counter()
        b = len(batch)
        n_max = max(len(it.index) for it in batch)
        coords = np.zeros((b, n_max, 2), dtype=np.float32)
        xy = np.zeros((b, n_max, 2), dtype=np.float32)
        for k, it in enumerate(batch):
            n = len(it.index)
            coords[k, :n], xy[k, :n] = it.coords, it.xy
            coords[k, n:], xy[k, n:] = it.coords[0], it.xy[0]  # padding: decoded, then dropped
        s2 = self._to_device(np.stack([it.s2 for it in batch]))
        cov = self._to_device(np.stack([it.cov for it in batch]))
        coords_t, xy_t = self._to_device(coords), self._to_device(xy)
        t1 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16,
                                                    enabled=self.bf16):
            feats = self.model.encode(s2, cov)
            self._sync()
            t2 = time.perf_counter()
            logits = self.model.predict(feats, coords_t, xy_t,
                                        chunk=max(1, self.points_per_call // b))
            logits = logits.float()
            probs = torch.sigmoid(logits) if self.n_out == 1 else torch.softmax(logits, dim=-1)
            probs = probs.cpu().numpy()  # [B, N, n_out]
        t3 = time.perf_counter()
        for k, it in enumerate(batch):
            n = len(it.index)
            blender.add(it.index, it.weights, probs[k, :n].T)
        t4 = time.perf_counter()
        stats.queries += sum(len(it.index) for it in batch)
        stats.add("to_device", t1 - t0)
        stats.add("encode", t2 - t1)
        stats.add("decode", t3 - t2)
        stats.add("blend", t4 - t3)

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

    ``batch_size``: crops per model call (it changes only float rounding); ``device``: a torch
    device name (default: CUDA when present, else the CPU); ``bf16``: bfloat16 autocast (CUDA
    mainly; lower precision); ``progress``: a progress bar on stderr.
    """

    batch_size: int = 16
    device: str | None = None
    bf16: bool = False
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

    ``stacks``: the tile's stack and its neighbours' (``<tile>.tif`` names). Output: float32
    GeoTIFF on the tile's bounds at ``prediction.out_res``, EPSG:3338, one probability band per
    class (NSP: 1, descriptions = class names), NaN nodata, written atomically.
    """
    from mapper.models.checkpoint import load_checkpoint

    spec = get_task(task)
    lattice = region.lattice
    crops = CropLattice.from_settings(region.settings["prediction"], lattice.res, lattice.tile_px)
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
        "MAPPER_SYNTHETIC": str(region.synthetic).lower(),
    }
    names = spec.output_names
    res = lattice.res * crops.factor
    size = lattice.tile_px // crops.factor
    left, _, _, top = lattice.tile_bounds(tile)
    transform = Affine(res, 0.0, left, 0.0, -res, top)
    if _is_empty(by_tile[tile]):
        logger.info("%s: stack marked empty; writing nodata without running the model", tile)
        data = np.full((len(names), size, size), np.nan, dtype=np.float32)
        write_geotiff(out, data, transform, lattice.crs, nodata=np.nan, descriptions=names,
                      tags={**tags, "MAPPER_EMPTY": "true"})
        return PredictStats(tile=tile, cells=size * size)

    model, meta = load_checkpoint(model_path, expect_task=task,
                                  expect_size=region.settings["model"]["size"])
    if meta.bands != STACK_BANDS:
        raise CheckpointError(f"{model_path}: trained on bands {meta.bands}, not the stack's "
                              f"{STACK_BANDS}; retrain on current stacks")
    normaliser = Normaliser.from_dict(meta.normalisation)
    predictor = TilePredictor(model, normaliser, lattice, crops, task,
                              batch_size=options.batch_size, device=options.device,
                              bf16=options.bf16, progress=options.progress)
    _check_neighbours(predictor, tile, by_tile, set(region.tiles()))
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
                      region_tiles: set[str]) -> None:
    """Every region tile the crops read must be given (a missing one would change the tile)."""
    needed = predictor.lattice.tiles_in_window(predictor.context_window(tile))
    missing = sorted(t for t in needed if t in region_tiles and t not in given)
    if missing:
        raise InputError(
            f"tile {tile}: its crops read region tiles {', '.join(missing)} but their stacks were "
            "not given; pass every neighbour's stack (crop_px must not exceed tile_px + 1 for the "
            "8 neighbours to suffice)"
        )
