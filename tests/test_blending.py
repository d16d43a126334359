"""Crop lattice covers every tile, staggered or not; tapered Gaussian weights; weighted mean."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from mapper.blending import Blender, CropLattice, gaussian_1d
from mapper.errors import ConfigError


def tapered_weights(p: int, sigma_scale: float, support: int) -> np.ndarray:
    """The weight map of an interior crop at 10 m, written out: a Gaussian of the pixel centres'
    distance from the crop centre less its value at the support's edge, over the support."""
    x = np.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1)[(p - support) // 2:(p + support) // 2]
    sigma = sigma_scale * p
    g = np.exp(-(x**2) / (2 * sigma**2)) - np.exp(-((support / 2) ** 2) / (2 * sigma**2))
    return np.outer(g, g)


def coverage(lattice: CropLattice, window: Window) -> np.ndarray:
    """How many crops answer each out cell of ``window``."""
    count = np.zeros((int(window.height), int(window.width)), dtype=int)
    for crop in lattice.crops_for(window):
        r = slice(crop.r_lo - int(window.row_off), crop.r_hi - int(window.row_off))
        c = slice(crop.c_lo - int(window.col_off), crop.c_hi - int(window.col_off))
        count[r, c] += 1
    return count


def total_weight(lattice: CropLattice, window: Window) -> np.ndarray:
    """Sum of the crops' weights at each out cell of ``window``."""
    out = np.zeros((int(window.height), int(window.width)))
    for crop in lattice.crops_for(window):
        r = slice(crop.r_lo - int(window.row_off), crop.r_hi - int(window.row_off))
        c = slice(crop.c_lo - int(window.col_off), crop.c_hi - int(window.col_off))
        out[r, c] += lattice.weights(crop)
    return out


def test_gaussian_formula_peak_and_sigma() -> None:
    assert gaussian_1d(np.array([0.0]), 8.0)[0] == 1.0
    # one sigma from the centre: exp(-1/2)
    assert gaussian_1d(np.array([8.0]), 8.0)[0] == pytest.approx(np.exp(-0.5))


@pytest.mark.parametrize(("crop", "stride", "sigma", "support"), [
    (64, 32, 0.125, None), (64, 24, 0.25, 48), (32, 16, 0.25, 32),
])
def test_interior_crop_weights_are_the_tapered_gaussian(crop: int, stride: int, sigma: float,
                                                       support: int | None) -> None:
    lat = CropLattice(crop, stride, sigma, 1, support_px=support)
    side = support or crop
    interior = [c for c in lat.crops_for(Window(0, 0, 512, 512)) if c.shape == (side, side)]
    assert interior
    for c in interior[:3]:
        w = lat.weights(c)
        np.testing.assert_allclose(w, tapered_weights(crop, sigma, side), rtol=1e-12)
        assert w.min() > 0  # every answered cell counts
        assert np.array_equal(w, w.T) and np.array_equal(w, w[::-1, ::-1])
        # the support is the crop's centre: the answered cells' first pixel
        assert c.r_lo - c.rows.start == c.c_lo - c.cols.start == (crop - side) // 2


def test_crop_centre_cell_weight_at_20m() -> None:
    """At 20 m a cell centre is 1 px off the crop centre at best; coordinates stay inside."""
    lat = CropLattice(64, 32, 0.125, 2)
    crop = next(c for c in lat.crops_for(Window(16, 16, 64, 64)) if c.shape == (32, 32))
    w = lat.weights(crop)
    assert w.shape == (32, 32)
    edge = np.exp(-(32**2) / (2 * 8.0**2))
    assert w.max() == pytest.approx((np.exp(-1 / (2 * 8.0**2)) - edge) ** 2)
    coords = lat.crop_coords(crop)
    assert coords.min() > -1 and coords.max() < 1
    np.testing.assert_allclose(coords[0, 0], [-1 + 2 / 64, -1 + 2 / 64])


def test_weights_vanish_at_every_crop_border() -> None:
    """A crop's weight, zero where it does not answer, has no step at the support's border."""
    for lat in (CropLattice(64, 32, 0.25), CropLattice(64, 24, 0.25, support_px=48,
                                                     stagger_px=16)):
        crop = next(c for c in lat.crops_for(Window(100, 100, 200, 200))
                    if c.shape == (lat.support, lat.support))
        w = np.pad(lat.weights(crop), 1)  # the cells around it get nothing from this crop
        inside = np.abs(np.diff(w[1:-1, 1:-1], axis=1)).max()
        border = np.abs(np.diff(w, axis=1)).max()
        assert border <= inside * (1 + 1e-9), (border, inside)
        # a Gaussian of sigma 16 px cut at 32 px would step by exp(-2), 13 % of its peak
        assert w[1:-1, 1].max() < 0.05 * w.max()


@pytest.mark.parametrize(("crop", "stride", "factor", "tile", "support", "stagger"), [
    (64, 32, 1, 64, None, 0), (64, 64, 1, 64, None, 0), (64, 48, 1, 128, None, 0),
    (64, 24, 1, 512, 48, 24), (64, 24, 5, 160, 48, 24),
    (64, 32, 2, 64, None, 0), (32, 16, 5, 160, None, 0), (64, 16, 4, 64, None, 0),
    (64, 64, 4, 128, None, 0), (64, 24, 1, 512, 48, 16), (64, 24, 2, 64, 48, 16),
    (64, 20, 5, 160, 40, 20), (256, 128, 1, 512, None, 32),
    (64, 62, 1, 124, 62, 0), (64, 62, 3, 186, 62, 0), (64, 60, 2, 120, 60, 0),
])
def test_crop_lattice_covers_each_tile(crop: int, stride: int, factor: int, tile: int,
                                       support: int | None, stagger: int) -> None:
    lat = CropLattice(crop, stride, 0.125, factor, support_px=support, stagger_px=stagger)
    n = tile // factor
    for trow, tcol in [(0, 0), (3, 7), (40, 41)]:
        window = Window(tcol * n, trow * n, n, n)
        cov = coverage(lat, window)
        assert cov.min() >= 1, "every out cell is answered by a crop"
        assert total_weight(lat, window).min() > 0, "with a positive weight"
        if stride * 2 == crop and factor == 1 and not stagger:
            assert cov.min() == cov.max() == 4  # half-overlap: each pixel in 2 x 2 crops
        # crop origins sit on the global lattice: the stride plus the index's offset, whatever
        # the tile
        for c in lat.crops_for(window):
            assert 0 <= c.rows.start - c.i * stride < max(stagger, 1)
            assert 0 <= c.cols.start - c.j * stride < max(stagger, 1)
            assert c.r_hi > c.r_lo and c.c_hi > c.c_lo


def test_staggered_starts_visit_every_offset_and_keep_their_order() -> None:
    lat = CropLattice(64, 24, 0.25, support_px=48, stagger_px=16)
    starts = [lat.start(i) for i in range(-40, 40)]
    assert all(b > a for a, b in zip(starts, starts[1:], strict=False))
    assert [lat.start(i) % 16 for i in range(4)] == [0, 8, 4, 12]  # bit-reversed order
    assert {lat.start(i) % 16 for i in range(16)} == set(range(16))  # every residue
    assert all(0 <= lat.start(i) - 24 * i < 16 for i in range(-40, 40))
    assert [lat.start(i) - 24 * i for i in range(-16, 0)] == [lat.start(i) - 24 * i
                                                              for i in range(16)]  # a cycle
    wide = CropLattice(256, 128, support_px=256, stagger_px=32)
    assert {wide.start(i) % 32 for i in range(16)} == set(range(0, 32, 2))


@pytest.mark.parametrize("lat", [CropLattice(64, 32, 0.125, 1),
                                 CropLattice(64, 24, 0.25, 1, support_px=48, stagger_px=16)])
def test_crops_of_tiles_partition_those_of_their_union(lat: CropLattice) -> None:
    """The crop answers of four 64-px tiles are exactly those of one 128-px window."""
    big = {(c.i, c.j, r, k) for c in lat.crops_for(Window(64, 64, 128, 128))
           for r in range(c.r_lo, c.r_hi) for k in range(c.c_lo, c.c_hi)}
    small = set()
    for dr in (0, 64):
        for dc in (0, 64):
            for c in lat.crops_for(Window(64 + dc, 64 + dr, 64, 64)):
                small |= {(c.i, c.j, r, k) for r in range(c.r_lo, c.r_hi)
                          for k in range(c.c_lo, c.c_hi)}
    assert small == big


def test_blending_constant_returns_the_constant() -> None:
    lat = CropLattice(64, 32, 0.125, 1)
    window = Window(64, 128, 64, 64)
    blend = Blender(2, 64, 64)
    for crop in lat.crops_for(window):
        w = lat.weights(crop)
        rr, cc = np.meshgrid(np.arange(crop.r_lo, crop.r_hi) - 128,
                             np.arange(crop.c_lo, crop.c_hi) - 64, indexing="ij")
        index = (rr * 64 + cc).ravel()
        values = np.stack([np.full(index.size, 0.3), np.full(index.size, 0.7)])
        blend.add(index, w.ravel(), values)
    out = blend.result()
    assert out.dtype == np.float32 and out.shape == (2, 64, 64)
    np.testing.assert_allclose(out[0], 0.3, atol=1e-7)
    np.testing.assert_allclose(out[1], 0.7, atol=1e-7)


def test_blending_is_the_weighted_mean_and_masks_nodata() -> None:
    blend = Blender(1, 1, 3)
    blend.add(np.array([0, 1]), np.array([1.0, 3.0]), np.array([[0.0, 1.0]]))
    blend.add(np.array([0, 1]), np.array([3.0, 1.0]), np.array([[1.0, 0.0]]))
    valid = np.array([[True, False, True]])
    out = blend.result(valid)
    assert out[0, 0, 0] == pytest.approx(0.75)
    assert np.isnan(out[0, 0, 1])  # invalid input
    assert np.isnan(out[0, 0, 2])  # nothing answered it


def test_out_res_must_be_a_multiple_and_settings_checked() -> None:
    base = {"crop_px": 64, "stride_px": 32, "sigma_scale": 0.125, "support_px": None,
            "stagger_px": 0, "out_res": 10.0}
    assert CropLattice.from_settings(base, 10.0).factor == 1
    assert CropLattice.from_settings({**base, "out_res": 20.0}, 10.0).factor == 2
    assert CropLattice.from_settings({**base, "out_res": 50.0}, 10.0).factor == 5
    with pytest.raises(ConfigError, match="not a whole multiple"):
        CropLattice.from_settings({**base, "out_res": 15.0}, 10.0)
    with pytest.raises(ConfigError, match="stride_px 65"):
        CropLattice.from_settings({**base, "stride_px": 65}, 10.0)
    with pytest.raises(ConfigError, match="stride_px 32 plus stagger_px 24"):
        CropLattice.from_settings({**base, "support_px": 48, "stagger_px": 24}, 10.0)
    with pytest.raises(ConfigError, match="stagger_px 40 must be between 0 and stride_px"):
        CropLattice.from_settings({**base, "stagger_px": 40}, 10.0)
    with pytest.raises(ConfigError, match="support_px 47 must be even"):
        CropLattice.from_settings({**base, "support_px": 47}, 10.0)
    # abutting supports (stride = support, no stagger) with 20 m cells centred on their edges
    # (m = 1 px of context on each side): refused, not left as lines of nodata
    with pytest.raises(ConfigError, match="stride_px 62 equals the support 62 px with no stagger"):
        CropLattice.from_settings({**base, "support_px": 62, "stride_px": 62, "out_res": 20.0},
                                  10.0)  # fmt: skip
    lat = CropLattice.from_settings({**base, "support_px": 48, "stagger_px": 16}, 10.0)
    assert (lat.support, lat.stagger_px) == (48, 16)
    with pytest.raises(ConfigError, match="crop_px 40"):
        CropLattice(40, 20)


@pytest.mark.parametrize(("factor", "tile_px"), [(1, 64), (2, 64), (5, 64), (5, 512), (3, 160)])
def test_tiles_hold_the_out_cells_whose_centre_lies_in_them(factor: int, tile_px: int) -> None:
    """Consecutive tiles (negative indices included) share no out cell and leave none out, each
    cell's centre lies in its tile, and a factor that divides the tile gives its blocks."""
    lat = CropLattice(64, 32, factor=factor)
    seen: list[int] = []
    for t in range(-3, 4):
        ow = lat.out_window(Window(t * tile_px, 2 * t * tile_px, tile_px, tile_px))
        cols = np.arange(int(ow.col_off), int(ow.col_off + ow.width))
        rows = np.arange(int(ow.row_off), int(ow.row_off + ow.height))
        centres = (cols + 0.5) * factor
        assert ((centres >= t * tile_px) & (centres < (t + 1) * tile_px)).all()
        assert ((rows + 0.5) * factor >= 2 * t * tile_px).all()
        assert ((rows + 0.5) * factor < (2 * t + 1) * tile_px).all()
        seen += cols.tolist()
        if tile_px % factor == 0:
            assert (ow.col_off, ow.width) == (t * tile_px // factor, tile_px // factor)
    assert seen == list(range(seen[0], seen[-1] + 1))  # contiguous, each cell once
