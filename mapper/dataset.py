"""Training crops for MiSo: crop windows, query points, labels; point prediction for CV.

Crops are square windows of ``crop_px`` lattice pixels (global lattice pixel coordinates, see
:mod:`mapper.grid`) read through one :class:`mapper.windows.StackReader` kept open, normalised by a
:class:`mapper.normalise.Normaliser`. Two kinds, as the reference trains:

- *labelled* crops, centred on a training point's pixel with a random integer shift of up to
  ``shift_fraction * crop_px`` pixels per axis (at most ``crop_px / 2 - 1``, so the point stays
  inside). One epoch visits every training point at least once as a labelled query: points are
  taken in a seeded random order and a point already queried in an earlier crop of the epoch does
  not start a crop of its own (clustered surveys would otherwise repeat the same context many
  times per epoch).
- *unlabelled* crops, centred on a uniformly random position inside the region's mapped area
  (its boundary buffered by ``buffer_m``), making ``unlabelled_fraction`` of all crops (for
  pretraining: every crop).

A crop near the region's edge reads the stacks of the context tiles around the mapped ones
(:meth:`mapper.config.Region.stacked_tiles`), so it sees the sources beyond the edge as an
interior crop sees them, as prediction's crops do.

Query points of a crop, in this slot order (the n-th slot of every crop in a batch has the same
role, as the InfoNCE loss arranges them, see :mod:`mapper.losses`):
1. every training point inside the crop, the centre point first (at most ``MAX_LABELLED``),
   padded to the batch's largest count with masked slots;
2. ``random_points`` points uniformly at random in the crop;
3. ``grid_points`` points on a regular grid (cell centres of a near-square grid).
Labelled queries sit at the points' exact EPSG:3338 positions; random and grid points are
continuous positions.

Coordinates per query: ``coords`` crop-normalised (x, y) in [-1, 1] with +-1 the crop's outer
pixel edges (the centre of column j of a P-px crop is x = -1 + (2j + 1) / P; y = -1 is the top
edge of the top row) and ``xy`` the same point in EPSG:3338 metres. ``valid`` marks queries whose
pixel is valid (:func:`mapper.normalise.valid`); ``mask`` marks labelled queries on a valid pixel;
a binary task's targets are 0/1 floats, a multiclass task's class indices with ``IGNORE_INDEX``
where unlabelled or on an invalid pixel.

With ``augment``, each crop of a batch is then turned by a random multiple of 90 degrees and
mirrored or not (one of the 8 symmetries of the square, :func:`dihedral`), its crop-normalised
query coordinates moved with it (``xy`` stays the true place, and pixel values are kept, so
aspect still names the true direction): the landscape's texture has no
preferred direction, and the few hundred labelled points of a region are seen in 8 ways.

Everything random is drawn from ``numpy.random.default_rng([seed, stream, epoch])``: a given epoch
is the same whether training ran straight through or resumed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
import torch
from rasterio.windows import Window
from scipy.spatial import cKDTree
from torch import Tensor

from mapper.devices import ieee_float32
from mapper.errors import InputError
from mapper.grid import Lattice
from mapper.losses import IGNORE_INDEX
from mapper.normalise import Normaliser
from mapper.tasks import PRETRAIN, get_task
from mapper.windows import StackReader

logger = logging.getLogger(__name__)

MAX_LABELLED = 32
"""Labelled queries per crop at most (a dense survey site can hold hundreds in one crop)."""

RANDOM_DRAWS = 4_000_000
"""Random crop centres drawn per round at most (64 MB of coordinates)."""

STREAMS = {"pretrain": 1, "finetune": 2, "normalise": 3}
"""Random stream numbers, so pretraining and fine-tuning crops differ at the same seed."""


@dataclass(frozen=True)
class CropSettings:
    """The training section's crop settings (see mapper/schemas/region.schema.yaml)."""

    crop_px: int
    shift_fraction: float
    random_points: int
    grid_points: int
    unlabelled_fraction: float
    batch_size: int
    seed: int
    augment: bool = False

    @classmethod
    def from_training(cls, training: dict[str, Any]) -> CropSettings:
        return cls(
            crop_px=int(training["crop_px"]),
            shift_fraction=float(training["shift_fraction"]),
            random_points=int(training["random_points"]),
            grid_points=int(training["grid_points"]),
            unlabelled_fraction=float(training["unlabelled_fraction"]),
            batch_size=int(training["batch_size"]),
            seed=int(training["seed"]),
            augment=bool(training["augment"]),
        )

    @property
    def max_shift(self) -> int:
        return max(0, min(int(self.shift_fraction * self.crop_px), self.crop_px // 2 - 1))


@dataclass(frozen=True)
class PointSet:
    """Labelled training points: EPSG:3338 ``xy`` [M, 2], lattice ``rowcol`` [M, 2] int64, and
    ``labels`` [M] (0/1 for a binary task, class index for a multiclass one)."""

    xy: np.ndarray
    rowcol: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> PointSet:
        return cls(np.zeros((0, 2)), np.zeros((0, 2), dtype=np.int64), np.zeros(0))


@dataclass(frozen=True)
class CropPlan:
    """One crop: its upper-left lattice pixel and the training points queried in it."""

    row_off: int
    col_off: int
    points: np.ndarray  # int64 indices into the PointSet, centre point first
    centred: bool = False  # a labelled crop (centred on points[0]), else a random crop


@dataclass
class Batch:
    """One training batch (torch tensors; shapes with B crops and N query slots)."""

    s2: Tensor  # [B, 9, P, P]
    cov: Tensor  # [B, 10, P, P]
    coords: Tensor  # [B, N, 2] crop-normalised (x, y)
    xy: Tensor  # [B, N, 2] EPSG:3338 metres
    valid: Tensor  # [B, N] bool: the query's pixel is valid
    mask: Tensor  # [B, N] bool: labelled query
    target: Tensor  # [B, N] float 0/1 (binary) or int64 class / IGNORE_INDEX (multiclass)
    windows: list[Window]

    @property
    def labelled(self) -> int:
        return int(self.mask.sum())

    def to(self, device: torch.device) -> Batch:
        """The batch with its tensors on ``device`` (itself on the CPU; pinned, asynchronous
        copies to a GPU)."""
        if device.type == "cpu":
            return self
        moved = {name: getattr(self, name).pin_memory().to(device, non_blocking=True)
                 for name in ("s2", "cov", "coords", "xy", "valid", "mask", "target")}
        return dataclasses.replace(self, **moved)


def crop_coords(
    lattice: Lattice, row_off: int, col_off: int, crop_px: int, xy: np.ndarray
) -> np.ndarray:
    """Crop-normalised (x, y) [..., 2] of EPSG:3338 points ``xy`` [..., 2] in a lattice crop."""
    left = lattice.origin_x + col_off * lattice.res
    top = lattice.origin_y - row_off * lattice.res
    size = crop_px * lattice.res
    out = np.empty(np.shape(xy), dtype=np.float64)
    out[..., 0] = -1.0 + 2.0 * (xy[..., 0] - left) / size
    out[..., 1] = -1.0 + 2.0 * (top - xy[..., 1]) / size
    return out


def crop_xy(lattice: Lattice, row_off: int, col_off: int, crop_px: int,
            coords: np.ndarray) -> np.ndarray:
    """Inverse of :func:`crop_coords`: EPSG:3338 metres of crop-normalised coordinates."""
    left = lattice.origin_x + col_off * lattice.res
    top = lattice.origin_y - row_off * lattice.res
    size = crop_px * lattice.res
    out = np.empty(np.shape(coords), dtype=np.float64)
    out[..., 0] = left + (coords[..., 0] + 1.0) * size / 2.0
    out[..., 1] = top - (coords[..., 1] + 1.0) * size / 2.0
    return out


def dihedral(image: np.ndarray, coords: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 symmetries of the square applied to a crop and its query points.

    ``image`` [..., P, P], ``coords`` [..., 2] crop-normalised (x, y); ``k`` in 0..7: ``k % 4``
    quarter turns (numpy's ``rot90`` on the last two axes, counter-clockwise as displayed), then
    a left-right mirror when ``k >= 4``. A quarter turn moves the content at (x, y) to (y, -x)
    and the mirror moves (x, y) to (-x, y), so every query still sees the pixels it saw.
    """
    x, y = coords[..., 0], coords[..., 1]
    for _ in range(k % 4):
        image = np.rot90(image, axes=(-2, -1))
        x, y = y, -x
    if k >= 4:
        image = image[..., ::-1]
        x = -x
    return np.ascontiguousarray(image), np.stack([x, y], axis=-1)


def augment(s2: np.ndarray, cov: np.ndarray, coords: np.ndarray,
            turns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crop k of a batch (``s2`` [B, 9, P, P], ``cov`` [B, 10, P, P], ``coords`` [B, N, 2])
    under the symmetry ``turns[k]`` of :func:`dihedral`; new arrays."""
    s2, cov, coords = s2.copy(), cov.copy(), coords.copy()
    for k, turn in enumerate(turns):
        s2[k], _ = dihedral(s2[k], coords[k], int(turn))
        cov[k], coords[k] = dihedral(cov[k], coords[k], int(turn))
    return s2, cov, coords


def grid_coords(n: int) -> np.ndarray:
    """``n`` crop-normalised points on a near-square grid of cell centres, row-major [n, 2] (the
    first ``n`` of it; a region's ``training.grid_points`` is a square number, a full grid)."""
    if n <= 0:
        return np.zeros((0, 2))
    nx = math.ceil(math.sqrt(n))
    ny = math.ceil(n / nx)
    gx = -1.0 + (2.0 * np.arange(nx) + 1.0) / nx
    gy = -1.0 + (2.0 * np.arange(ny) + 1.0) / ny
    xx, yy = np.meshgrid(gx, gy)
    return np.stack([xx.ravel(), yy.ravel()], axis=1)[:n]


class CropDataset:
    """Batches of crops for one task (``"pretrain"`` or a map task of :mod:`mapper.tasks`).

    ``points``: the training points (none for pretraining). ``boundary``: the region's mapped area
    (EPSG:3338) where unlabelled crops are centred. ``unlabelled_crops``: crops per epoch when there
    are no training points (pretraining). The reader stays open for the dataset's life.
    """

    def __init__(
        self,
        reader: StackReader,
        normaliser: Normaliser,
        settings: CropSettings,
        boundary: shapely.Geometry,
        task: str,
        points: PointSet | None = None,
        unlabelled_crops: int = 0,
    ) -> None:
        self.reader = reader
        self.lattice = reader.lattice
        self.normaliser = normaliser
        self.settings = settings
        self.boundary = boundary
        shapely.prepare(self.boundary)
        self.task = task
        self.multiclass = task != PRETRAIN and get_task(task).multiclass
        self.points = points if points is not None else PointSet.empty()
        self._tree = cKDTree(self.points.rowcol) if len(self.points) else None
        self.unlabelled_crops = int(unlabelled_crops)
        self.unread: set[int] = set()
        """Training points (indices into ``points``) a batch found on a pixel without data."""

    # -- planning (no I/O) -------------------------------------------------------------------------
    def _points_in(self, row_off: int, col_off: int, first: int | None) -> np.ndarray:
        """Training points inside a crop window, ``first`` leading, then by distance to centre."""
        if self._tree is None:
            return np.zeros(0, dtype=np.int64)
        p = self.settings.crop_px
        centre = (row_off + (p - 1) / 2.0, col_off + (p - 1) / 2.0)
        near = np.asarray(self._tree.query_ball_point(centre, r=p / 2.0, p=np.inf), dtype=np.int64)
        rc = self.points.rowcol[near] if len(near) else np.zeros((0, 2), dtype=np.int64)
        inside = near[
            (rc[:, 0] >= row_off) & (rc[:, 0] < row_off + p)
            & (rc[:, 1] >= col_off) & (rc[:, 1] < col_off + p)
        ]
        d = np.abs(self.points.rowcol[inside] - np.array(centre)).sum(axis=1)
        inside = inside[np.lexsort((inside, d))]
        if first is not None:
            inside = np.concatenate([[first], inside[inside != first]])
        return inside[:MAX_LABELLED].astype(np.int64)

    def random_windows(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``n`` crop upper-left pixels whose crop centre lies inside the region boundary:
        centres drawn uniformly in its bounding box, those outside dropped, each round drawing
        twice the crops still missing over the share of the box the boundary covers (so a
        region of scattered sites or a long corridor, a small share of its box, takes about one
        round as a square does; at most ``RANDOM_DRAWS`` points a round)."""
        left, bottom, right, top = self.boundary.bounds
        box = (right - left) * (top - bottom)
        share = self.boundary.area / box if box > 0 else 0.0
        p = self.settings.crop_px
        out: list[tuple[int, int]] = []
        for _ in range(1000 if share > 0 else 0):
            if len(out) >= n:
                break
            # (a square region, share 1 up to rounding, draws 2 x what is missing, as it did)
            m = min(RANDOM_DRAWS, max(16, math.ceil(2 * (n - len(out)) / min(share, 1.0) - 1e-6)))
            x = rng.uniform(left, right, m)
            y = rng.uniform(bottom, top, m)
            ok = shapely.contains_xy(self.boundary, x, y)
            rows, cols = self.lattice.pixels_of(x[ok], y[ok])
            out.extend((int(r) - p // 2, int(c) - p // 2) for r, c in zip(rows, cols, strict=True))
        if len(out) < n:
            raise InputError(
                f"could place only {len(out)} of {n} random crops with their centre inside the "
                f"mapped area ({self.boundary.area / 1e6:.3g} km^2, {share:.2%} of its bounding "
                "box); check the region's boundary (a polygon with an area)")
        return out[:n]

    def plan_epoch(self, epoch: int, stream: str) -> list[CropPlan]:
        """The crops of one epoch, in training order (module doc)."""
        s = self.settings
        rng = np.random.default_rng([s.seed, STREAMS[stream], epoch])
        plans: list[CropPlan] = []
        if len(self.points):
            covered = np.zeros(len(self.points), dtype=bool)
            for i in rng.permutation(len(self.points)):
                if covered[i]:
                    continue
                r, c = self.points.rowcol[i]
                dr, dc = rng.integers(-s.max_shift, s.max_shift + 1, size=2)
                r0, c0 = int(r - s.crop_px // 2 + dr), int(c - s.crop_px // 2 + dc)
                members = self._points_in(r0, c0, int(i))
                covered[members] = True
                plans.append(CropPlan(r0, c0, members, centred=True))
        f = s.unlabelled_fraction
        if not len(self.points):
            n_unlabelled = self.unlabelled_crops
        else:  # f < 1 (the schema's limit): f of all crops are unlabelled
            n_unlabelled = int(round(len(plans) * f / (1.0 - f)))
        for r0, c0 in self.random_windows(n_unlabelled, rng):
            plans.append(CropPlan(r0, c0, self._points_in(r0, c0, None)))
        order = rng.permutation(len(plans))
        return [plans[i] for i in order]

    # -- reading ---------------------------------------------------------------------------------
    def batches(self, epoch: int, stream: str) -> Iterator[Batch]:
        """The epoch's batches, ``batch_size`` crops each (the last one may be smaller)."""
        plans = self.plan_epoch(epoch, stream)
        rng = np.random.default_rng([self.settings.seed, STREAMS[stream], epoch, 1])
        b = self.settings.batch_size
        for start in range(0, len(plans), b):
            yield self.make_batch(plans[start : start + b], rng)

    def n_batches(self, epoch: int, stream: str) -> int:
        return math.ceil(len(self.plan_epoch(epoch, stream)) / self.settings.batch_size)

    def read(self, plan: CropPlan) -> np.ndarray:
        p = self.settings.crop_px
        return self.reader.read(Window(plan.col_off, plan.row_off, p, p))

    def make_batch(self, plans: list[CropPlan], rng: np.random.Generator) -> Batch:
        """Read, normalise and assemble crops with their query points (module doc)."""
        s, lat = self.settings, self.lattice
        p = s.crop_px
        n_lab = max((len(pl.points) for pl in plans), default=0)
        n = n_lab + s.random_points + s.grid_points
        bsz = len(plans)
        stacks = np.stack([self.read(pl) for pl in plans])  # [B, 19, P, P]
        s2, cov = self.normaliser(stacks)
        ok_px = self.normaliser.valid(stacks)  # [B, P, P]
        coords = np.zeros((bsz, n, 2))
        xy = np.zeros((bsz, n, 2))
        mask = np.zeros((bsz, n), dtype=bool)
        target = np.full((bsz, n), IGNORE_INDEX if self.multiclass else 0,
                         dtype=np.int64 if self.multiclass else np.float32)
        grid = grid_coords(s.grid_points)
        for k, pl in enumerate(plans):
            m = len(pl.points)
            if m:
                pxy = self.points.xy[pl.points]
                xy[k, :m] = pxy
                coords[k, :m] = crop_coords(lat, pl.row_off, pl.col_off, p, pxy)
                mask[k, :m] = True
                target[k, :m] = self.points.labels[pl.points]
            rand = rng.uniform(-1.0, 1.0, size=(s.random_points, 2))
            q = np.concatenate([rand, grid]) if len(grid) else rand
            coords[k, n_lab:] = q
            xy[k, n_lab:] = crop_xy(lat, pl.row_off, pl.col_off, p, q)
            if m < n_lab:  # padding slots: the crop centre, masked out
                xy[k, m:n_lab] = crop_xy(lat, pl.row_off, pl.col_off, p, np.zeros((1, 2)))
        cols = np.clip(np.floor((coords[..., 0] + 1.0) * p / 2.0), 0, p - 1).astype(np.int64)
        rows = np.clip(np.floor((coords[..., 1] + 1.0) * p / 2.0), 0, p - 1).astype(np.int64)
        valid = ok_px[np.arange(bsz)[:, None], rows, cols]
        # a training point whose pixel the stacks now leave without data (a tile stacked again
        # since the samples were made: training reads stacks as ancient) teaches nothing from
        # an all-zero input: out of the supervised loss as of the contrastive ones
        for k in np.flatnonzero((mask & ~valid)[:, :n_lab].any(axis=1)):
            slots = np.flatnonzero(mask[k, :n_lab] & ~valid[k, :n_lab])
            self.unread.update(int(i) for i in plans[k].points[slots])
        mask &= valid
        if self.multiclass:
            target[:, :n_lab][~mask[:, :n_lab]] = IGNORE_INDEX
        valid[:, :n_lab] &= mask[:, :n_lab]
        if s.augment:  # drawn last, so that without it the other draws are unchanged
            s2, cov, coords = augment(s2, cov, coords, rng.integers(8, size=bsz))
        return Batch(
            s2=torch.from_numpy(s2),
            cov=torch.from_numpy(cov),
            coords=torch.from_numpy(coords.astype(np.float32)),
            xy=torch.from_numpy(xy.astype(np.float32)),
            valid=torch.from_numpy(valid),
            mask=torch.from_numpy(mask),
            target=torch.from_numpy(target),
            windows=[Window(pl.col_off, pl.row_off, p, p) for pl in plans],
        )

    def normaliser_pixels(self, n_crops: int = 64, max_pixels: int | None = None,
                          seed: int = 0) -> np.ndarray:
        """Stack pixels of up to ``n_crops`` crops of the ``"normalise"`` stream (its epoch 0:
        crops of their own, not a training epoch's), to fit a normaliser.

        The crops whole, ``[n, 19, P, P]``, when they hold at most ``max_pixels`` pixels (None:
        always); else a table ``[n * k, 19]`` of ``k = max_pixels // n`` pixels drawn at random
        (seeded) from each crop, so that many places are sampled in bounded memory.
        """
        plans = self.plan_epoch(0, "normalise")[:n_crops]
        area = self.settings.crop_px ** 2
        if max_pixels is None or len(plans) * area <= max_pixels:
            return np.stack([self.read(pl) for pl in plans])
        k = max(1, max_pixels // len(plans))
        rng = np.random.default_rng([seed, len(plans), k])
        parts = []
        for plan in plans:
            crop = self.read(plan)
            parts.append(crop.reshape(len(crop), area)[:, rng.choice(area, k, replace=False)].T)
        return np.concatenate(parts)


def predict_points(
    model: Any,
    normaliser: Normaliser,
    reader: StackReader,
    xy: np.ndarray,
    crop_px: int,
    batch_size: int = 32,
) -> np.ndarray:
    """Logits [N, n_out] of MiSo at EPSG:3338 points ``xy`` [N, 2]: one crop centred on each.

    Each point's crop is the ``crop_px`` window whose centre pixel (index ``crop_px // 2``) holds
    the point; the query sits at the point's exact position. Visual branch only (as prediction),
    in IEEE float32 on a GPU too, as prediction (:func:`mapper.devices.ieee_float32`).
    """
    lat = reader.lattice
    xy = np.asarray(xy, dtype=np.float64)
    rows, cols = lat.pixels_of(xy[:, 0], xy[:, 1])
    rows, cols = rows - crop_px // 2, cols - crop_px // 2
    out = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode(), ieee_float32():
        for start in range(0, len(xy), batch_size):
            part = slice(start, start + batch_size)
            stacks = np.stack([
                reader.read(Window(int(c), int(r), crop_px, crop_px))
                for r, c in zip(rows[part], cols[part], strict=True)
            ])
            s2, cov = normaliser(stacks)
            coords = np.stack([
                crop_coords(lat, int(r), int(c), crop_px, p[None])
                for r, c, p in zip(rows[part], cols[part], xy[part], strict=True)
            ])  # [b, 1, 2]
            feats = model.encode(torch.from_numpy(s2).to(device), torch.from_numpy(cov).to(device))
            logits = model.predict(feats, torch.from_numpy(coords.astype(np.float32)).to(device))
            out.append(logits[:, 0].cpu().numpy())
    n_out = int(getattr(model, "n_out", 1))
    return np.concatenate(out) if out else np.zeros((0, n_out), dtype=np.float32)
