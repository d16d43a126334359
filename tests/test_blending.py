"""Crop lattice covers every tile; Gaussian weights follow MONAI; blending is a weighted mean."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.windows import Window

from mapper.blending import MIN_WEIGHT, Blender, CropLattice, gaussian_1d
from mapper.errors import ConfigError


def monai_importance_map(p: int, sigma_scale: float) -> np.ndarray:
    """MONAI's compute_importance_map(mode="gaussian") for a square patch, written out."""
    x = np.arange(-(p - 1) / 2.0, (p - 1) / 2.0 + 1)
    g = np.exp(x**2 / (-2 * (sigma_scale * p) ** 2))
    m = np.outer(g, g)
    return np.maximum(m, max(m.min(), 1e-3))


def coverage(lattice: CropLattice, window: Window) -> np.ndarray:
    """How many crops answer each out cell of ``window``."""
    count = np.zeros((int(window.height), int(window.width)), dtype=int)
    for crop in lattice.crops_for(window):
        r = slice(crop.r_lo - int(window.row_off), crop.r_hi - int(window.row_off))
        c = slice(crop.c_lo - int(window.col_off), crop.c_hi - int(window.col_off))
        count[r, c] += 1
    return count


def interior_weights(sigma_scale: float) -> np.ndarray:
    """The weights of a whole 64 px crop at 10 m (its cells are its pixels)."""
    lat = CropLattice(64, 32, sigma_scale, 1)
    crop = next(c for c in lat.crops_for(Window(0, 0, 256, 256)) if c.shape == (64, 64))
    return lat.weights(crop)


def test_gaussian_formula_peak_sigma_and_clamp() -> None:
    assert gaussian_1d(np.array([0.0]), 8.0)[0] == 1.0
    # one sigma from the centre: exp(-1/2)
    assert gaussian_1d(np.array([8.0]), 8.0)[0] == pytest.approx(np.exp(-0.5))
    w = interior_weights(0.125)
    assert w.min() == MIN_WEIGHT  # corners are clamped (exp(-2 * 3.9^2) < 1e-3)
    # pixel centres are half a pixel off the centre of an even crop: peak just under 1
    assert w.max() == pytest.approx(np.exp(-0.25 / (2 * 8.0**2)) ** 2)
    assert np.array_equal(w, w.T) and np.array_equal(w, w[::-1, ::-1])
    # a wide sigma never reaches the clamp
    assert interior_weights(1.0).min() > MIN_WEIGHT


def test_crop_lattice_weights_match_monai_at_10m() -> None:
    lat = CropLattice(64, 32, 0.125, 1)
    interior = [c for c in lat.crops_for(Window(0, 0, 512, 512)) if c.shape == (64, 64)]
    assert interior
    for crop in interior[:3]:
        np.testing.assert_allclose(lat.weights(crop), monai_importance_map(64, 0.125), rtol=1e-12)


def test_crop_centre_cell_weight_is_one_at_20m() -> None:
    """At 20 m a cell centre can sit on the crop centre (an even pixel position): weight 1."""
    lat = CropLattice(64, 32, 0.125, 2)
    crop = next(c for c in lat.crops_for(Window(16, 16, 64, 64)) if c.shape == (32, 32))
    w = lat.weights(crop)
    assert w.shape == (32, 32)
    # cell centres at odd pixel positions: distances +-1 px from the centre at best
    assert w.max() == pytest.approx(np.exp(-1 / (2 * 8.0**2)) ** 2)
    coords = lat.crop_coords(crop)
    assert coords.min() > -1 and coords.max() < 1
    np.testing.assert_allclose(coords[0, 0], [-1 + 2 / 64, -1 + 2 / 64])


@pytest.mark.parametrize(("crop", "stride", "factor", "tile"), [
    (64, 32, 1, 64), (64, 64, 1, 64), (64, 48, 1, 128), (64, 32, 2, 64), (32, 16, 5, 160),
    (64, 16, 4, 64), (64, 64, 4, 128),
])
def test_crop_lattice_covers_each_tile(crop: int, stride: int, factor: int, tile: int) -> None:
    lat = CropLattice(crop, stride, 0.125, factor)
    n = tile // factor
    for trow, tcol in [(0, 0), (3, 7), (40, 41)]:
        window = Window(tcol * n, trow * n, n, n)
        cov = coverage(lat, window)
        assert cov.min() >= 1, "every out cell is answered by a crop"
        if stride * 2 == crop and factor == 1:
            assert cov.min() == cov.max() == 4  # half-overlap: each pixel in 2 x 2 crops
        # crop origins sit on the global lattice: multiples of the stride, whatever the tile
        for c in lat.crops_for(window):
            assert c.rows.start % stride == 0 and c.cols.start % stride == 0
            assert c.r_hi > c.r_lo and c.c_hi > c.c_lo


def test_crops_of_tiles_partition_those_of_their_union() -> None:
    """The crop answers of four 64-px tiles are exactly those of one 128-px window."""
    lat = CropLattice(64, 32, 0.125, 1)
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


def test_out_res_must_divide_tiles_and_be_a_multiple() -> None:
    base = {"crop_px": 64, "stride_px": 32, "sigma_scale": 0.125}
    assert CropLattice.from_settings({**base, "out_res": 20.0}, 10.0, 64).factor == 2
    assert CropLattice.from_settings({**base, "out_res": 50.0}, 10.0, 160).factor == 5
    with pytest.raises(ConfigError, match="ratio 5 to the lattice does not divide tile_px 64"):
        CropLattice.from_settings({**base, "out_res": 50.0}, 10.0, 64)
    with pytest.raises(ConfigError, match="not a whole multiple"):
        CropLattice.from_settings({**base, "out_res": 15.0}, 10.0, 64)
    with pytest.raises(ConfigError, match="stride_px 65"):
        CropLattice.from_settings({**base, "stride_px": 65}, 10.0, 64)
    with pytest.raises(ConfigError, match="crop_px 40"):
        CropLattice(40, 20)
