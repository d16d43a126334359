"""Read any lattice window across the tiles' stacks (the VRT over them: :mod:`mapper.vrt`).

A window is a ``rasterio.windows.Window`` in global lattice pixel coordinates (see
:mod:`mapper.grid`). It may cross tile borders and reach outside the tiles at hand: pixels of tiles
that have no stack (or lie above/left of the lattice origin) are NaN, the stack's nodata. Because
stacks are seamless (see :mod:`mapper.stack`), a window read across four tiles equals the same
window of a single pass over the region.

Training and prediction read thousands of crops: :class:`StackReader` keeps the stack files open
(at most ``max_open`` at once, least recently used closed first) and checks each file once
(CRS, tile bounds, size, band names). Reads are serialised by a lock, so threads may share a
reader (e.g. one prefetching while another computes); for parallel reads use one per thread. After
a fork (e.g. a DataLoader worker) it reopens its files in the new process by itself, and it
pickles without its open handles.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.raster import gdal_reason, open_raster

logger = logging.getLogger(__name__)


def stacks_by_tile(paths: Iterable[str | Path]) -> dict[str, Path]:
    """``{tile id: path}`` from stack files named ``<tile id>.tif`` (the stack stage's naming),
    as :class:`StackReader` takes them."""
    out: dict[str, Path] = {}
    for p in map(Path, paths):
        tile = p.name.removesuffix(".tif")
        try:
            Lattice.parse(tile)
        except ValueError:
            raise InputError(
                f"{p}: a stack file must be named <tile id>.tif (e.g. R0012C0034.tif); pass the "
                "files the stack stage wrote"
            ) from None
        if tile in out and out[tile] != p:
            raise InputError(f"{p}: tile {tile} given twice ({out[tile]}); pass one per tile")
        out[tile] = p
    return out


def _band_indexes(bands: Sequence[str] | None) -> list[int]:
    """1-based stack band indexes of ``bands`` (names from STACK_BANDS; None = all 19)."""
    if bands is None:
        return list(range(1, len(STACK_BANDS) + 1))
    unknown = [b for b in bands if b not in STACK_BANDS]
    if unknown:
        raise ValueError(f"unknown stack band(s) {unknown}; known: {', '.join(STACK_BANDS)}")
    return [STACK_BANDS.index(b) + 1 for b in bands]


def band_problem(descriptions: Sequence[str | None]) -> str | None:
    """What is wrong with a stack's band descriptions, in a few words (None when they are
    :data:`STACK_BANDS`): the missing or extra bands, else the first band out of place."""
    have = [d or "" for d in descriptions]
    if len(have) != len(STACK_BANDS):
        missing = [b for b in STACK_BANDS if b not in have]
        extra = [d for d in have if d not in STACK_BANDS]
        parts = [f"missing {', '.join(map(repr, missing))}" if missing else "",
                 f"unknown {', '.join(map(repr, extra))}" if extra else ""]
        detail = ", ".join(p for p in parts if p)
        return f"{len(have)} bands, a stack has {len(STACK_BANDS)}" + (f", {detail}" * bool(detail))
    for i, (got, want) in enumerate(zip(have, STACK_BANDS, strict=True), start=1):
        if got != want:
            return f"band {i} is {got!r} where a stack has {want!r}"
    return None


def _check_window(window: Window) -> tuple[int, int, int, int]:
    vals = (window.col_off, window.row_off, window.width, window.height)
    if any(float(v) != int(v) for v in vals) or window.width < 0 or window.height < 0:
        raise ValueError(f"{window} is not a whole-pixel lattice window")
    return tuple(int(v) for v in vals)  # type: ignore[return-value]


class StackReader:
    """Reads lattice windows from a region's tile stacks, keeping the files open.

    ``stacks`` maps tile ids to stack files; ``lattice`` is the region's lattice (its ``tile_px``
    must be the stacks'). Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, stacks: Mapping[str, str | Path], lattice: Lattice, max_open: int = 64
    ) -> None:
        self.stacks = {tile: Path(p) for tile, p in stacks.items()}
        self.lattice = lattice
        self.max_open = max(1, int(max_open))
        self._open: OrderedDict[str, rasterio.DatasetReader] = OrderedDict()
        self._checked: set[str] = set()
        self._pid = os.getpid()
        self._lock = threading.Lock()

    # -- file handles ---------------------------------------------------------------------------
    def _dataset(self, tile: str) -> rasterio.DatasetReader:
        ds = self._open.get(tile)
        if ds is not None:
            self._open.move_to_end(tile)
            return ds
        path = self.stacks[tile]
        ds = open_raster(path)
        if tile not in self._checked:
            try:
                self._check(tile, path, ds)
            except InputError:
                ds.close()
                raise
            self._checked.add(tile)
        self._open[tile] = ds
        while len(self._open) > self.max_open:
            _, old = self._open.popitem(last=False)
            old.close()
        return ds

    def _check(self, tile: str, path: Path, ds: rasterio.DatasetReader) -> None:
        lat = self.lattice
        if ds.crs is None or ds.crs != CRS.from_user_input(lat.crs):
            raise InputError(
                f"{path}: CRS {ds.crs} is not the lattice's {lat.crs}; rebuild the stack"
            )
        if (ds.height, ds.width) != lat.tile_shape or not ds.transform.almost_equals(
            lat.tile_transform(tile), precision=1e-6
        ):
            raise InputError(
                f"{path}: its grid ({ds.width}x{ds.height} at {tuple(ds.transform)[:6]}) is not "
                f"tile {tile} of the lattice (tile_px {lat.tile_px}); rebuild the stack or pass "
                "the region's own stacks"
            )
        problem = band_problem(list(ds.descriptions))
        if problem:
            raise InputError(
                f"{path}: {problem} (see mapper.bands.STACK_BANDS); rebuild the stack"
            )
        if ds.nodata is not None and not math.isnan(ds.nodata):
            # its nodata value would be read as data: -9999 as an elevation
            raise InputError(
                f"{path}: nodata {ds.nodata:g}, not NaN as the stack stage writes; rebuild the "
                "stack (mapper stack), or write its nodata as NaN"
            )

    def close(self) -> None:
        """Close every open file (the reader can still be used: files reopen on demand)."""
        with self._lock:
            if os.getpid() == self._pid:
                for ds in self._open.values():
                    ds.close()
            self._open = OrderedDict()

    def __enter__(self) -> StackReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------
    def read(self, window: Window, bands: Sequence[str] | None = None) -> np.ndarray:
        """The window's pixels, ``[bands, height, width]`` float32; NaN where no stack has data."""
        if os.getpid() != self._pid:  # forked: the parent's handles and lock are not ours
            self._lock = threading.Lock()
            self._open = OrderedDict()
            self._pid = os.getpid()
        with self._lock:
            return self._read(window, bands)

    def _read(self, window: Window, bands: Sequence[str] | None) -> np.ndarray:
        col, row, width, height = _check_window(window)
        indexes = _band_indexes(bands)
        out = np.full((len(indexes), height, width), np.nan, dtype=np.float32)
        if width == 0 or height == 0:
            return out
        p = self.lattice.tile_px
        for tile in self.lattice.tiles_in_window(Window(col, row, width, height)):
            if tile not in self.stacks:
                continue
            tw = self.lattice.tile_window(tile)
            c0, r0 = max(col, int(tw.col_off)), max(row, int(tw.row_off))
            c1 = min(col + width, int(tw.col_off) + p)
            r1 = min(row + height, int(tw.row_off) + p)
            if c1 <= c0 or r1 <= r0:
                continue
            src_win = Window(c0 - int(tw.col_off), r0 - int(tw.row_off), c1 - c0, r1 - r0)
            ds = self._dataset(tile)
            try:
                data = ds.read(indexes, window=src_win, out_dtype="float32")
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(
                    f"{self.stacks[tile]}: damaged or truncated stack, read failed "
                    f"({gdal_reason(exc)}); rebuild the stack (delete it and rerun its stack job)"
                ) from None
            out[:, r0 - row : r1 - row, c0 - col : c1 - col] = data
        return out


def read_window(
    stacks: Mapping[str, str | Path],
    lattice: Lattice,
    window: Window,
    bands: Sequence[str] | None = None,
) -> np.ndarray:
    """Assemble a lattice window from the tiles' stacks: ``[bands, H, W]`` float32, NaN outside.

    ``bands`` are stack band names (None: all 19, in STACK_BANDS order). For many reads, use
    :class:`StackReader`, which keeps the files open.
    """
    with StackReader(stacks, lattice) as reader:
        return reader.read(window, bands)
