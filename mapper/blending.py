"""The crop lattice of prediction and the tapered-Gaussian blending of overlapping crops.

Conventions:

- Positions are in *global* lattice pixels of the 10 m grid (see :mod:`mapper.grid`): row ``r``,
  column ``c`` is the pixel whose upper-left corner is ``r`` pixels below and ``c`` right of the
  lattice origin. A continuous position ``p`` (rows or columns) puts pixel ``j``'s centre at
  ``j + 0.5``.
- Crops are ``crop_px`` square. Along each axis crop ``i`` starts at ``i*stride + offset(i)``,
  where ``offset(i)`` is 0 unless ``stagger_px`` (S) is set: then ``offset(i)`` in ``[0, S)`` is
  the one that makes the start fall on the residue ``rank(i) * S // 16`` modulo S, with
  ``rank(i)`` the bit-reversed ``i mod 16`` (0, 8, 4, 12, 2, ...). So neighbouring crops' starts
  differ by about half of S modulo S, and every 16 crops visit 16 residues spread over S (every
  residue for S = 16), whatever the stride. Crop ``(i, j)`` covers pixels
  ``[start(i), start(i) + crop)`` x ``[start(j), start(j) + crop)``. The crop lattice depends
  only on the crop indices, so it is the same for every tile of every region, which is what makes
  a tile's values equal those of one pass over the whole region: a pixel is predicted by the same
  crops, with the same weights, in the same order, whichever tile it falls in.
- Why stagger. The encoders cut a crop into attention windows (in Swin's first stages 16 or 32 px
  for the demo model, 32 and 64 px for Swin-V2-T/B) and their features change faster across a
  window border than inside a window; the crop's centre, where its weight peaks, always lies on
  such a border (crops are multiples of 32 px). With crops starting at multiples of 32 px those
  borders fall on the same map lines in every crop, and the map shows blocks on a 16/32 px
  lattice (demo NSP map: 1.7 times the pixel-to-pixel change across lines at multiples of 32 px
  than elsewhere, 1.3 at odd multiples of 16 px). Staggered starts put each crop's borders
  elsewhere, so no line of the map is a border of every crop; a stagger as wide as the stride
  also spreads the crops' centres, so that no other period (the stride's) takes the lattice's
  place. (Tapering the weights alone changes little at ``sigma_scale`` 0.125: 1.79 instead of
  1.81 on the demo's central tiles; staggering over the stride: 0.98.)
- Output cells are ``factor`` x ``factor`` blocks of lattice pixels (``out_res = factor * res``),
  on a grid aligned with the lattice origin: out cell ``R`` covers pixels ``[R*factor,
  (R+1)*factor)`` and its centre lies at ``p = (R + 0.5) * factor``; a tile holds the out cells
  whose centre lies in it (:meth:`CropLattice.out_window`), so the factor need not divide the
  tile size (50 m cells on 512 px tiles straddle tile edges). A crop answers for the out
  cells whose centre lies in its *support*, the central ``support_px`` of the crop,
  ``[start + m, start + m + support)`` with ``m = (crop - support) / 2`` (half-open, like pixel
  coverage); the outer ``m`` pixels are context only (default: ``support = crop``). With
  ``stride + stagger <= support`` the supports of consecutive crops leave no gap, so every cell
  is answered with a positive weight (where they abut, ``stride = support`` without stagger, an
  out cell centred on the edge between two would get none: such settings are refused).
- Crop-normalised coordinates are those of :mod:`mapper.models.implicit`: ``-1 + 2 (p - start) /
  crop``, -1 and +1 the crop's outer edges (pixel centre ``j`` of the crop at ``-1 + (2j+1)/P``).
- Weights: per axis a Gaussian of the distance ``d`` of the cell centre from the crop centre
  (``d = j - (P-1)/2`` at pixel centres), ``sigma = sigma_scale * crop``, minus its value at the
  support's edge, ``g(d) - g(support / 2)``: positive inside the support and zero at its edge, so
  a cell's weight changes continuously as it passes from one crop's support to the next. (MONAI's
  ``sliding_window_inference(mode="gaussian")`` stops the Gaussian at the crop's edge and clamps
  it below at 1e-3; both make a step at every crop border, which with ``sigma_scale`` 0.25 was
  the largest lattice jump of the demo map.) The 2-D weight is the outer product. Blended output
  = ``sum(w p) / sum(w)``, accumulated in float32 in lattice order (:class:`Blender`).
- Negligible weights: a cell's *normalised* weight in a crop is its weight over the cell's total
  over every crop (:meth:`CropLattice.axis_total`, separable like the weights). Prediction may skip
  decoding a cell in crops where that is below ``min_weight`` (eps): the blend of the rest then
  differs from the full blend by less than the skipped share of the weight.

Everything here is arithmetic on small arrays; the model and the rasters live in
:mod:`mapper.predictor`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from mapper.errors import ConfigError

BATCH_SIZE = 16
"""Prediction crops per model call by default: the predict rule's ``batch_size`` resource (a
profile may set it per machine), ``python -m mapper predict --batch-size`` and the predictor's.
Speed and memory only: a cell's value does not depend on it (mapper/predictor.py)."""

MODEL_MULTIPLE = 32
"""Crops must be a multiple of the encoders' coarsest stride (Swin stage 4: 32 px)."""

STAGGER_CYCLE = 16
"""Crops per cycle of staggered offsets (the offsets of 16 consecutive crops are all different)."""


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def _bit_reversed(i: int, bits: int = 4) -> int:
    """``i`` (0 .. 2**bits - 1) with its ``bits`` binary digits in reverse order."""
    return int(format(i, f"0{bits}b")[::-1], 2)


STAGGER_ORDER = tuple(_bit_reversed(k) for k in range(STAGGER_CYCLE))
"""Residue rank of crop ``i`` is ``STAGGER_ORDER[i % 16]``: 0, 8, 4, 12, 2, 10, 6, 14, 1, ..."""


def gaussian_1d(d: np.ndarray, sigma: float) -> np.ndarray:
    """``exp(-d^2 / (2 sigma^2))`` in float64: 1 at ``d = 0`` (the crop centre)."""
    d = np.asarray(d, dtype=np.float64)
    return np.exp(-(d * d) / (2.0 * sigma * sigma))


@dataclass(frozen=True)
class Span:
    """Out cells ``[lo, hi)`` (global out-grid indices) that one crop answers for along one axis."""

    start: int  # the crop's first lattice pixel along this axis
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return max(0, self.hi - self.lo)


@dataclass(frozen=True)
class CropLattice:
    """The global crop lattice and output grid of prediction (module docstring for conventions).

    ``crop_px``, ``stride_px``, ``support_px`` (None: the whole crop) and ``stagger_px`` in
    lattice pixels; ``sigma_scale`` as a fraction of the crop; ``factor`` = out_res / lattice res
    (1 for 10 m output, 2 for 20 m, 5 for 50 m).
    """

    crop_px: int
    stride_px: int
    sigma_scale: float = 0.125
    factor: int = 1
    support_px: int | None = None
    stagger_px: int = 0

    def __post_init__(self) -> None:
        if self.crop_px <= 0 or self.crop_px % MODEL_MULTIPLE:
            raise ConfigError(
                f"prediction.crop_px {self.crop_px} must be a positive multiple of "
                f"{MODEL_MULTIPLE} (the encoders' coarsest stride); fix the region file"
            )
        support = self.support
        if not 2 <= support <= self.crop_px or (self.crop_px - support) % 2:
            raise ConfigError(
                f"prediction.support_px {support} must be even and between 2 and crop_px "
                f"{self.crop_px} (the central part of a crop that answers); fix the region file"
            )
        if not 0 <= self.stagger_px <= self.stride_px:
            raise ConfigError(
                f"prediction.stagger_px {self.stagger_px} must be between 0 and stride_px "
                f"{self.stride_px} (crops must start in order); fix the region file"
            )
        if not 1 <= self.stride_px or self.stride_px + self.stagger_px > support:
            raise ConfigError(
                f"prediction.stride_px {self.stride_px} plus stagger_px {self.stagger_px} must be "
                f"between 1 and the support {support} px (a larger step leaves pixels no crop "
                "answers); fix the region file"
            )
        if self.sigma_scale <= 0:
            raise ConfigError(f"prediction.sigma_scale {self.sigma_scale} must be > 0")
        if not 1 <= self.factor <= support:
            raise ConfigError(
                f"output factor {self.factor} (out_res / res) must be between 1 and the support "
                f"{support} px; choose a finer prediction.out_res"
            )
        if self._cells_on_abutting_supports():
            raise ConfigError(
                f"prediction.stride_px {self.stride_px} equals the support {support} px with no "
                f"stagger, and out cells of {self.factor} px are then centred on the edge between "
                "two crops' supports, where both weights are zero (cells left unpredicted); use a "
                "smaller stride_px, a stagger_px, or another out_res"
            )

    def _cells_on_abutting_supports(self) -> bool:
        """Whether consecutive supports abut (stride = support, no stagger: the one case
        ``stride + stagger <= support`` allows without overlap) and an out cell's centre
        ``(2R + 1) k / 2`` falls on a support's first pixel ``a = i stride + m``: the taper is zero
        there and the previous support ends just before it. ``a`` modulo ``2k`` repeats within
        ``2k`` crops."""
        if self.stagger_px or self.stride_px != self.support:
            return False
        k, m = self.factor, (self.crop_px - self.support) // 2
        return any(2 * a % k == 0 and (2 * a // k) % 2 == 1
                   for a in (i * self.stride_px + m for i in range(2 * k)))

    @classmethod
    def from_settings(cls, prediction: dict, res: float) -> CropLattice:
        """From a region's validated ``prediction`` section and the lattice ``res``.

        ``out_res`` must be a whole multiple of ``res`` (out cells are blocks of lattice pixels);
        it need not divide the tile size (:meth:`out_window`).
        """
        out_res = float(prediction["out_res"])
        ratio = out_res / res
        factor = round(ratio)
        if factor < 1 or abs(ratio - factor) > 1e-9:
            raise ConfigError(
                f"prediction.out_res {out_res:g} m is not a whole multiple of the lattice's "
                f"{res:g} m; use e.g. {res:g}, {2 * res:g} or {5 * res:g}"
            )
        support = prediction["support_px"]
        return cls(
            crop_px=int(prediction["crop_px"]),
            stride_px=int(prediction["stride_px"]),
            sigma_scale=float(prediction["sigma_scale"]),
            factor=factor,
            support_px=None if support is None else int(support),
            stagger_px=int(prediction["stagger_px"]),
        )

    @property
    def sigma(self) -> float:
        """Gaussian sigma in lattice pixels."""
        return self.sigma_scale * self.crop_px

    @property
    def support(self) -> int:
        """Width of the answering centre of a crop, in lattice pixels."""
        return self.crop_px if self.support_px is None else int(self.support_px)

    def describe(self) -> str:
        """One line for provenance metadata."""
        parts = [f"crops of {self.crop_px} px answering their central {self.support} px",
                 f"stride {self.stride_px} px"]
        if self.stagger_px:
            parts.append(f"starts staggered by up to {self.stagger_px - 1} px")
        return (", ".join(parts) + f"; weights a Gaussian of sigma {self.sigma_scale:g} x crop "
                "less its value at the support's edge")

    # -- one axis ---------------------------------------------------------------------------------
    def start(self, index: int) -> int:
        """First lattice pixel of crop ``index`` along one axis (module docstring)."""
        base = index * self.stride_px
        if not self.stagger_px:
            return base
        residue = STAGGER_ORDER[index % STAGGER_CYCLE] * self.stagger_px // STAGGER_CYCLE
        return base + (residue - base) % self.stagger_px

    def span(self, index: int) -> Span:
        """Out cells answered by crop ``index`` along one axis (centre in its support).

        Cell ``R``'s centre is ``(2R + 1) k / 2``; ``2 a <= (2R + 1) k < 2 (a + support)`` with
        ``a`` the support's first pixel.
        """
        start = self.start(index)
        a = start + (self.crop_px - self.support) // 2
        k = self.factor
        lo = _ceil_div(2 * a - k, 2 * k)
        hi = _ceil_div(2 * (a + self.support) - k, 2 * k)
        return Span(start=start, lo=lo, hi=hi)

    def indices(self, cell_lo: int, cell_hi: int) -> range:
        """Crop indices along one axis that answer at least one out cell in ``[cell_lo, cell_hi)``.

        Starts grow with the index (offsets are below ``stagger <= stride``), so the answer is a
        contiguous range; the bounds below bracket it (a crop's
        start lies within ``stagger`` px after ``i * stride``; its support within the crop).
        """
        if cell_hi <= cell_lo:
            return range(0)
        k, s = self.factor, self.stride_px
        first = math.floor(((2 * cell_lo + 1) * k / 2 - self.crop_px - self.stagger_px) / s) - 1
        last = math.floor(((2 * cell_hi - 1) * k / 2) / s) + 1
        hits = [i for i in range(first, last + 1)
                if self.span(i).hi > cell_lo and self.span(i).lo < cell_hi]
        return range(hits[0], hits[-1] + 1) if hits else range(0)

    def coords(self, span: Span, lo: int, hi: int) -> np.ndarray:
        """Crop-normalised coordinates of out cells ``[lo, hi)`` in a crop (float64, -1..1)."""
        centres = (2 * np.arange(lo, hi) + 1) * self.factor / 2.0
        return -1.0 + 2.0 * (centres - span.start) / self.crop_px

    def weights_1d(self, span: Span, lo: int, hi: int) -> np.ndarray:
        """Per-axis tapered Gaussian of out cells ``[lo, hi)`` in a crop (float64, >= 0)."""
        centres = (2 * np.arange(lo, hi) + 1) * self.factor / 2.0
        g = gaussian_1d(centres - span.start - self.crop_px / 2.0, self.sigma)
        edge = gaussian_1d(np.array([self.support / 2.0]), self.sigma)[0]
        return np.maximum(g - edge, 0.0)

    # -- crops of a tile --------------------------------------------------------------------------
    def crops_for(self, out_window: Window) -> Iterator[Crop]:
        """Every crop answering at least one out cell of ``out_window`` (out-grid cells), row-major.

        The order is that of the global crop lattice, so the crops covering a cell are visited in
        the same order from any tile (float sums identical, not merely close).
        """
        r0, c0 = int(out_window.row_off), int(out_window.col_off)
        r1, c1 = r0 + int(out_window.height), c0 + int(out_window.width)
        cols = [(j, self.span(j)) for j in self.indices(c0, c1)]
        for i in self.indices(r0, r1):
            rs = self.span(i)
            for j, cs in cols:
                yield Crop(i, j, rs, cs, max(rs.lo, r0), min(rs.hi, r1), max(cs.lo, c0),
                           min(cs.hi, c1))

    def out_window(self, window: Window) -> Window:
        """The out cells whose centre lies in the lattice window ``window`` (a tile): cell ``R``
        along an axis when ``a <= (R + 0.5) k < a + n`` for the window's ``[a, a + n)``.

        So every out cell belongs to exactly one tile whatever ``factor``: with a factor that
        divides the tile size the cells are the tile's ``k`` x ``k`` blocks; with one that does not
        (50 m cells on 512 px tiles) a tile's first or last cell may straddle its edge by up to
        ``k // 2`` pixels, and its cell count varies by one from tile to tile.
        """
        k = self.factor

        def axis(a: int, n: int) -> tuple[int, int]:
            lo = _ceil_div(2 * a - k, 2 * k)
            return lo, _ceil_div(2 * (a + n) - k, 2 * k) - lo

        c0, w = axis(int(window.col_off), int(window.width))
        r0, h = axis(int(window.row_off), int(window.height))
        return Window(c0, r0, w, h)

    def reach(self, out_window: Window) -> Window:
        """The lattice pixels read by the crops answering cells of ``out_window`` (a window in
        lattice pixels; empty when no crop answers). Pure arithmetic on the two axes' crop
        ranges, so the DAG can ask it for every tile of the state."""
        r0, c0 = int(out_window.row_off), int(out_window.col_off)
        rows = self.indices(r0, r0 + int(out_window.height))
        cols = self.indices(c0, c0 + int(out_window.width))
        if not rows or not cols:
            return Window(0, 0, 0, 0)
        top, left = self.start(rows[0]), self.start(cols[0])
        bottom, right = self.start(rows[-1]) + self.crop_px, self.start(cols[-1]) + self.crop_px
        return Window(left, top, right - left, bottom - top)

    def reads(self, out_window: Window) -> Window:
        """The lattice pixels a tile's prediction reads for the cells of ``out_window``: the
        crops' :meth:`reach` and the cells' own pixels, which the validity mask reads. They
        differ when a cell straddles the tile's edge (an out_res whose factor does not divide the
        tile) and crops abut (``stride_px + stagger_px`` equal to the support), so that no crop
        reaches the cell's far pixels."""
        k = self.factor
        cells = Window(int(out_window.col_off) * k, int(out_window.row_off) * k,
                       int(out_window.width) * k, int(out_window.height) * k)
        reach = self.reach(out_window)
        if not reach.width or not reach.height:
            return cells
        left, top = min(reach.col_off, cells.col_off), min(reach.row_off, cells.row_off)
        right = max(reach.col_off + reach.width, cells.col_off + cells.width)
        bottom = max(reach.row_off + reach.height, cells.row_off + cells.height)
        return Window(left, top, right - left, bottom - top)

    def axis_total(self, lo: int, hi: int) -> np.ndarray:
        """Per-axis weight summed over every crop answering out cells ``[lo, hi)`` (float64).

        The 2-D weights are outer products over all pairs of row and column crops, so a cell's
        total weight is ``axis_total`` of its row times that of its column: the normaliser of
        the blend, known before any crop is decoded. Summed in crop order, so a cell's total is
        the same from every window that holds it.
        """
        total = np.zeros(max(0, hi - lo), dtype=np.float64)
        for a, b, w in self._axis_weights(lo, hi):
            total[a - lo:b - lo] += w
        return total

    def _axis_weights(self, lo: int, hi: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Per crop answering out cells ``[lo, hi)`` along one axis, in crop order: the cells
        ``[a, b)`` it answers there and their per-axis weights."""
        for i in self.indices(lo, hi):
            span = self.span(i)
            a, b = max(span.lo, lo), min(span.hi, hi)
            if b > a:
                yield a, b, self.weights_1d(span, a, b)

    def axis_top_share(self, lo: int, hi: int) -> np.ndarray:
        """Per-axis largest share of one crop in a cell's weight, over out cells ``[lo, hi)``
        (float64; 0 where no crop answers). A cell's largest normalised 2-D weight is its row's
        times its column's (the weights are outer products): with ``min_weight`` above it, every
        crop is skipped there."""
        total = self.axis_total(lo, hi)
        top = np.zeros_like(total)
        for a, b, w in self._axis_weights(lo, hi):
            top[a - lo:b - lo] = np.maximum(top[a - lo:b - lo], w)
        return np.divide(top, total, out=np.zeros_like(top), where=total > 0)

    def period_cells(self) -> int:
        """Out cells after which the crop lattice repeats along an axis: crop ``i + P`` is crop
        ``i`` moved by ``P * stride_px`` pixels when ``P`` is a whole number of stagger cycles
        and of ``stagger_px / gcd(stride_px, stagger_px)`` (the residues), and a whole number of
        cells (``P * stride_px`` a multiple of ``factor``)."""
        crops = 1
        if self.stagger_px:
            crops = math.lcm(STAGGER_CYCLE,
                             self.stagger_px // math.gcd(self.stride_px, self.stagger_px))
        px = crops * self.stride_px
        return math.lcm(px, self.factor) // self.factor

    def lowest_top_share(self) -> float:
        """The smallest, over every cell of the lattice, of the largest normalised 2-D weight of
        one crop there (:meth:`axis_top_share` over one period, squared: rows and columns share
        the lattice). A ``min_weight`` above it leaves cells without a crop."""
        n = self.period_cells()
        return float(self.axis_top_share(n, 2 * n).min() ** 2)

    def weights(self, crop: Crop) -> np.ndarray:
        """2-D weights of the crop's cells inside the window: the outer product of the axes'."""
        wy = self.weights_1d(crop.rows, crop.r_lo, crop.r_hi)
        wx = self.weights_1d(crop.cols, crop.c_lo, crop.c_hi)
        return np.outer(wy, wx)

    def crop_coords(self, crop: Crop) -> np.ndarray:
        """[n_rows, n_cols, 2] crop-normalised (x, y) of the crop's cells inside the window."""
        y = self.coords(crop.rows, crop.r_lo, crop.r_hi)
        x = self.coords(crop.cols, crop.c_lo, crop.c_hi)
        yy, xx = np.meshgrid(y, x, indexing="ij")
        return np.stack([xx, yy], axis=-1)


@dataclass(frozen=True)
class Crop:
    """One crop of the lattice and the part of an out window it answers for.

    ``(i, j)`` crop indices (row, col); ``rows``/``cols`` its spans; ``[r_lo, r_hi) x [c_lo,
    c_hi)`` the out cells (global out-grid indices) it answers inside the window.
    """

    i: int
    j: int
    rows: Span
    cols: Span
    r_lo: int
    r_hi: int
    c_lo: int
    c_hi: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.r_hi - self.r_lo, self.c_hi - self.c_lo)


class Blender:
    """Running ``sum(w p)`` and ``sum(w)`` over an out window, float32 (bounded by the window).

    ``add`` takes a crop's probabilities at some of its cells (flat indices into the window) and
    their weights; ``result`` divides in place, with NaN where nothing was added or ``valid`` is
    false. float32 accumulators: a cell sums a handful of crops (about 4 at a stride of half the
    support) always in lattice order, so the sum is exact to about 1e-7, far below a stored
    percent, and the same from every tile; a 4096 px tile of 7 classes takes 0.54 GB (float64
    and a divided copy took 2.5 GB).
    """

    def __init__(self, n_bands: int, height: int, width: int) -> None:
        self.shape = (n_bands, height, width)
        self.sum_wp = np.zeros((n_bands, height * width), dtype=np.float32)
        self.sum_w = np.zeros(height * width, dtype=np.float32)

    def add(self, index: np.ndarray, weights: np.ndarray, values: np.ndarray) -> None:
        """``index`` [n] flat cell indices (unique), ``weights`` [n], ``values`` [n_bands, n]."""
        w = np.asarray(weights, dtype=np.float32)
        self.sum_wp[:, index] += w * np.asarray(values, dtype=np.float32)
        self.sum_w[index] += w

    def result(self, valid: np.ndarray | None = None) -> np.ndarray:
        """float32 [n_bands, height, width]: the weighted mean, NaN = nodata. Divides the
        accumulator in place (no copy): call once, last."""
        n, h, w = self.shape
        bad = self.sum_w <= 0
        if valid is not None:
            bad |= ~np.asarray(valid, dtype=bool).reshape(-1)
        safe = np.where(bad, np.float32(1), self.sum_w)
        np.divide(self.sum_wp, safe, out=self.sum_wp)
        self.sum_wp[:, bad] = np.nan
        return self.sum_wp.reshape(n, h, w)
