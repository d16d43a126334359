"""Training crops: query coordinates, labelled points, determinism, point prediction crops."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import shapely
import torch
import training_data as T
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.dataset import (
    CropDataset,
    CropSettings,
    augment,
    crop_coords,
    crop_xy,
    dihedral,
    grid_coords,
    predict_points,
)
from mapper.errors import InputError
from mapper.losses import IGNORE_INDEX
from mapper.normalise import Normaliser
from mapper.splits import train_test_indices
from mapper.train import _points, normaliser_crops
from mapper.windows import StackReader, stacks_by_tile


@pytest.fixture(scope="module")
def tiny(training_region: dict, training_samples: dict) -> dict:
    """The training region and its samples, a reader of its stacks and a normalisation."""
    reader = StackReader(stacks_by_tile(training_region["stacks"]),
                         training_region["region"].lattice)
    norm = Normaliser.fit(T.fields())
    yield {**training_region, **training_samples, "reader": reader, "norm": norm}
    reader.close()


def _dataset(tiny: dict, task: str = "nsp", **changes: object) -> tuple[CropDataset, np.ndarray]:
    training = {**tiny["region"].settings["training"], **changes}
    train, _ = train_test_indices(tiny["folded"], "random", 0, task)
    ds = CropDataset(tiny["reader"], tiny["norm"], CropSettings.from_training(training),
                     tiny["region"].boundary(), task, _points(tiny["table"], task, train))
    return ds, train


def test_labelled_queries_map_back_to_their_points(tiny: dict) -> None:
    ds, train = _dataset(tiny)
    lat = tiny["region"].lattice
    table = tiny["table"]
    p = ds.settings.crop_px
    checked = 0
    for batch in ds.batches(0, "finetune"):
        for k, win in enumerate(batch.windows):
            m = batch.mask[k].numpy()
            coords = batch.coords[k].numpy().astype(np.float64)[m]
            xy = batch.xy[k].numpy().astype(np.float64)[m]
            back = crop_xy(lat, int(win.row_off), int(win.col_off), p, coords)
            np.testing.assert_allclose(back, xy, atol=0.15)  # float32 metres at ~1.6e6
            assert (np.abs(coords) < 1).all()
            # each labelled query is a training point, in the pixel of the crop that holds it
            rows = [int(np.argmin(np.hypot(table["x"].iloc[train] - a, table["y"].iloc[train] - b)))
                    for a, b in xy]
            pts = table.iloc[train[rows]]
            np.testing.assert_allclose(pts[["x", "y"]].to_numpy(), xy, atol=0.15)
            col_in = np.floor((coords[:, 0] + 1) * p / 2).astype(int)
            row_in = np.floor((coords[:, 1] + 1) * p / 2).astype(int)
            np.testing.assert_array_equal(col_in, pts["col"].to_numpy() - int(win.col_off))
            np.testing.assert_array_equal(row_in, pts["row"].to_numpy() - int(win.row_off))
            np.testing.assert_array_equal(batch.target[k].numpy()[m], pts["nsp"].to_numpy())
            checked += int(m.sum())
    assert checked >= len(train)


def test_crop_coordinate_convention() -> None:
    lat = T.lattice()
    p = 32
    # pixel centres of column j / row i of the crop
    j, i = np.arange(p), np.arange(p)
    xs = lat.origin_x + (100 + j + 0.5) * lat.res
    ys = lat.origin_y - (200 + i + 0.5) * lat.res
    c = crop_coords(lat, 200, 100, p, np.stack([xs, ys], axis=1))
    np.testing.assert_allclose(c[:, 0], -1 + (2 * j + 1) / p)
    np.testing.assert_allclose(c[:, 1], -1 + (2 * i + 1) / p)
    corner = crop_coords(lat, 200, 100, p, np.array([[lat.origin_x + 100 * lat.res,
                                                      lat.origin_y - 200 * lat.res]]))
    np.testing.assert_allclose(corner, [[-1, -1]])  # upper-left corner of the crop
    np.testing.assert_allclose(grid_coords(4), [[-0.5, -0.5], [0.5, -0.5], [-0.5, 0.5],
                                                [0.5, 0.5]])


def test_epochs_are_deterministic_and_cover_every_training_point(tiny: dict) -> None:
    ds, train = _dataset(tiny)
    a = list(ds.batches(1, "finetune"))
    b = list(ds.batches(1, "finetune"))
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for name in ("s2", "cov", "coords", "xy", "valid", "mask", "target"):
            assert torch.equal(getattr(x, name), getattr(y, name))
    other = ds.plan_epoch(2, "finetune")
    first = ds.plan_epoch(1, "finetune")
    assert [(p.row_off, p.col_off) for p in other] != [(p.row_off, p.col_off) for p in first]
    queried = np.unique(np.concatenate([p.points for p in first]))
    assert len(queried) == len(train)
    # labelled crops keep the starting point inside, shifted at most shift_fraction * crop
    s = ds.settings
    centred = [p for p in first if p.centred]
    for plan in centred:
        r, c = ds.points.rowcol[plan.points[0]]
        assert abs(r - plan.row_off - s.crop_px // 2) <= s.max_shift
        assert abs(c - plan.col_off - s.crop_px // 2) <= s.max_shift
    # unlabelled_fraction 0.5: as many random crops as labelled ones
    assert len(first) - len(centred) == len(centred)


def test_query_slots_padding_and_soil_order_targets(tiny: dict) -> None:
    ds, _ = _dataset(tiny, "soilorder", random_points=3, grid_points=5)
    batch = next(iter(ds.batches(0, "finetune")))
    n_lab = int(batch.mask.sum(dim=1).max())
    assert batch.coords.shape[1] == n_lab + 3 + 5
    assert batch.target.dtype == torch.int64
    assert (batch.target[~batch.mask] == IGNORE_INDEX).all()
    assert (batch.target[batch.mask] >= 0).all()
    pad = ~batch.mask[:, :n_lab]
    assert not batch.valid[:, :n_lab][pad].any()  # padding takes no part in any loss
    assert batch.s2.shape[1:] == (9, 32, 32) and batch.cov.shape[1:] == (10, 32, 32)
    assert float(batch.s2.max()) <= 1 and float(batch.s2.min()) >= 0


class _Hole:
    """A stack reader whose pixel (row, col) of the lattice reads as nodata (a tile stacked
    again since its samples were made), otherwise the given reader."""

    def __init__(self, reader: StackReader, row: int, col: int) -> None:
        self.reader, self.row, self.col = reader, row, col
        self.lattice = reader.lattice

    def read(self, window: Window) -> np.ndarray:
        data = self.reader.read(window).copy()
        r, c = self.row - int(window.row_off), self.col - int(window.col_off)
        if 0 <= r < data.shape[1] and 0 <= c < data.shape[2]:
            data[:, r, c] = np.nan
        return data


@pytest.mark.parametrize("task", ["nsp", "soilorder"])
def test_a_training_point_on_a_pixel_now_without_data_takes_no_part(tiny: dict,
                                                                    task: str) -> None:
    """Its slot is out of the supervised loss (mask off; a soil order's target ignored) as of the
    contrastive ones (valid off); every other training point keeps its label."""
    ds, train = _dataset(tiny, task)
    table = tiny["table"]
    hole = train[0]
    row, col = int(table["row"].iloc[hole]), int(table["col"].iloc[hole])
    ds.reader = _Hole(tiny["reader"], row, col)
    x, y = table["x"].iloc[hole], table["y"].iloc[hole]
    seen_hole = kept = 0
    for batch in ds.batches(0, "finetune"):
        at = (np.abs(batch.xy[..., 0].numpy() - x) < 0.2) & (np.abs(batch.xy[..., 1].numpy()
                                                                  - y) < 0.2)
        n_lab = batch.mask.shape[1] - ds.settings.random_points - ds.settings.grid_points
        at[:, n_lab:] = False  # random and grid queries are no training point
        seen_hole += int(at.sum())
        assert not batch.mask.numpy()[at].any() and not batch.valid.numpy()[at].any()
        if task == "soilorder":
            assert (batch.target.numpy()[at] == IGNORE_INDEX).all()
            assert (batch.target[batch.mask] >= 0).all()
        kept += int(batch.mask.sum())
    assert seen_hole >= 1
    assert ds.unread == {0}  # the point, for the training loop's warning
    ds.reader = tiny["reader"]
    assert kept == sum(int(b.mask.sum()) for b in ds.batches(0, "finetune")) - seen_hole


def test_pretraining_crops_lie_in_the_region(tiny: dict) -> None:
    training = tiny["region"].settings["training"]
    ds = CropDataset(tiny["reader"], tiny["norm"], CropSettings.from_training(training),
                     tiny["region"].boundary(), "pretrain", unlabelled_crops=10)
    plans = ds.plan_epoch(0, "pretrain")
    assert len(plans) == 10 and all(len(p.points) == 0 for p in plans)
    lat = tiny["region"].lattice
    left, bottom, right, top = tiny["region"].boundary().bounds
    for p in plans:
        cx = lat.origin_x + (p.col_off + 16) * lat.res
        cy = lat.origin_y - (p.row_off + 16) * lat.res
        assert left - 10 <= cx <= right + 10 and bottom - 10 <= cy <= top + 10


@pytest.mark.parametrize("shape", ["corridor", "scattered sites"])
def test_random_crops_fill_a_region_that_is_a_small_share_of_its_box(tiny: dict,
                                                                     shape: str) -> None:
    """A 1 km wide corridor 990 km long on the diagonal (0.2 % of its bounding box) and three
    4 km sites 600 km apart (0.01 %): every crop centre lies inside, as many as asked, where
    drawing twice the missing crops over the whole box, round after round, placed too few."""
    lat = tiny["region"].lattice
    x0, y0 = lat.origin_x + 5000, lat.origin_y - 600_000
    if shape == "corridor":  # diagonal: its box is 700 km square
        area = shapely.LineString([(x0, y0), (x0 + 700_000, y0 + 700_000)]).buffer(500)
    else:
        area = shapely.MultiPolygon([shapely.box(x0 + d, y0 + d, x0 + d + 4000, y0 + d + 4000)
                                     for d in (0, 300_000, 600_000)])
    training = tiny["region"].settings["training"]
    ds = CropDataset(tiny["reader"], tiny["norm"], CropSettings.from_training(training), area,
                     "pretrain", unlabelled_crops=1024)
    windows = ds.random_windows(1024, np.random.default_rng(0))
    assert len(windows) == 1024
    half = ds.settings.crop_px // 2
    rows = np.array([r for r, _ in windows]) + half
    cols = np.array([c for _, c in windows]) + half
    x = lat.origin_x + (cols + 0.5) * lat.res
    y = lat.origin_y - (rows + 0.5) * lat.res
    assert shapely.contains_xy(area.buffer(lat.res), x, y).all()
    if shape == "scattered sites":  # each site gets crops, about in proportion to its area
        counts = [int(shapely.contains_xy(part.buffer(lat.res), x, y).sum())
                  for part in area.geoms]
        assert min(counts) > 250


def test_random_crops_in_a_boundary_without_area_say_so(tiny: dict) -> None:
    lat = tiny["region"].lattice
    line = shapely.box(lat.origin_x, lat.origin_y - 1000, lat.origin_x + 1000, lat.origin_y
                       ).boundary
    training = tiny["region"].settings["training"]
    ds = CropDataset(tiny["reader"], tiny["norm"], CropSettings.from_training(training), line,
                     "pretrain", unlabelled_crops=4)
    with pytest.raises(InputError, match=r"^could place only 0 of 4 random crops with their "
                                         r"centre inside the mapped area \(0 km\^2, 0\.00% of "
                                         r"its bounding box\); check the region's boundary"):
        ds.random_windows(4, np.random.default_rng(0))


class _EchoModel:
    """Returns the query coordinates as logits and records the crops it was given."""

    n_out = 2

    def eval(self) -> None:
        pass

    def parameters(self):  # the device predict_points computes on: the CPU
        yield torch.empty(0)

    def encode(self, s2: torch.Tensor, cov: torch.Tensor) -> SimpleNamespace:
        self.tf32 = (torch.backends.cudnn.conv.fp32_precision,
                     torch.backends.cuda.matmul.fp32_precision)
        return SimpleNamespace(s2=s2)

    def predict(self, feats: SimpleNamespace, coords: torch.Tensor) -> torch.Tensor:
        return coords.clone()


def test_point_prediction_centres_a_crop_on_each_point(tiny: dict) -> None:
    table = tiny["table"]
    xy = table[["x", "y"]].to_numpy()[:7]
    model = _EchoModel()
    out = predict_points(model, tiny["norm"], tiny["reader"], xy, 32, batch_size=3)
    assert out.shape == (7, 2)
    assert model.tf32 == ("ieee", "ieee")  # IEEE float32 as the maps, TF32 off on a GPU
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"  # torch's default again after
    # the query lies in the crop's centre pixel (column and row index 16 of 32)
    centre = -1 + (2 * 16 + 1) / 32
    assert (np.abs(out - centre) <= 1 / 32 + 1e-6).all()
    lat = tiny["region"].lattice
    r, c = table["row"].iloc[0], table["col"].iloc[0]
    win = Window(int(c) - 16, int(r) - 16, 32, 32)
    back = crop_xy(lat, int(win.row_off), int(win.col_off), 32, out[:1].astype(np.float64))
    np.testing.assert_allclose(back[0], xy[0], atol=0.05)


def test_each_symmetry_keeps_every_query_on_its_pixel() -> None:
    p = 8
    image = np.arange(2 * p * p, dtype=np.float32).reshape(2, p, p)  # every pixel distinct
    rows, cols = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    coords = np.stack([-1 + (2 * cols + 1) / p, -1 + (2 * rows + 1) / p], axis=-1).reshape(-1, 2)
    seen = set()
    for k in range(8):
        turned, moved = dihedral(image, coords, k)
        c = np.floor((moved[:, 0] + 1) * p / 2).astype(int)
        r = np.floor((moved[:, 1] + 1) * p / 2).astype(int)
        np.testing.assert_array_equal(turned[:, r, c], image[:, rows.ravel(), cols.ravel()])
        seen.add(turned.tobytes())
    assert len(seen) == 8  # the 8 symmetries differ
    s2, cov = np.stack([image] * 3), np.stack([image] * 3)
    q = np.stack([coords[:5]] * 3)
    a, b, moved = augment(s2, cov, q, np.array([0, 3, 6]))
    np.testing.assert_array_equal(a[0], image)  # identity
    np.testing.assert_array_equal(b[1], dihedral(image, q[1], 3)[0])
    np.testing.assert_allclose(moved[2], dihedral(image, q[2], 6)[1])


def test_normaliser_pixels_sample_many_crops_in_bounded_memory(tiny: dict) -> None:
    """Within the pixel budget the crops come whole; past it, each of the same crops gives the
    same number of its own pixels, drawn reproducibly."""
    ds, _ = _dataset(tiny)
    p = ds.settings.crop_px
    whole = ds.normaliser_pixels(8, max_pixels=8 * p * p)
    assert whole.shape == (8, len(STACK_BANDS), p, p)
    table = ds.normaliser_pixels(8, max_pixels=8 * 50, seed=3)
    assert table.shape == (8 * 50, len(STACK_BANDS))
    np.testing.assert_array_equal(table, ds.normaliser_pixels(8, max_pixels=8 * 50, seed=3))
    assert not np.array_equal(table, ds.normaliser_pixels(8, max_pixels=8 * 50, seed=4),
                              equal_nan=True)
    for i in range(8):  # every drawn pixel is a pixel of its own crop
        crop = whole[i].reshape(len(STACK_BANDS), -1).T
        rows = table[i * 50 : (i + 1) * 50]
        found = [np.flatnonzero((np.isclose(crop, r, equal_nan=True)).all(axis=1)) for r in rows]
        assert all(len(f) for f in found)
    assert normaliser_crops(419.4) == 64  # the demo: the 64 crops it always had
    assert normaliser_crops(1600.0) == 64 and normaliser_crops(1601.0) == 65
    assert normaliser_crops(1.72e6) == 4096  # Alaska
