"""Terrain covariates on small synthetic DEM arrays: analytic values, conventions, invariance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mapper import terrain
from mapper.ground import grid_convergence

RES = 10.0


def _plane(gx: float, gy: float, n: int = 12) -> np.ndarray:
    """z = gx * x + gy * y (x east, y north, metres) on an n x n north-up grid."""
    rows, cols = np.mgrid[0:n, 0:n]
    x, y = cols * RES, -rows * RES
    return 100.0 + gx * x + gy * y


@pytest.mark.parametrize(
    ("gx", "gy", "facing"),
    [(0.1, 0.0, 270.0), (-0.1, 0.0, 90.0), (0.0, 0.1, 180.0), (0.0, -0.1, 0.0), (0.1, 0.1, 225.0)],
)
def test_plane_slope_and_aspect(gx: float, gy: float, facing: float) -> None:
    z = _plane(gx, gy)
    slope = terrain.slope(z, RES)
    aspect = terrain.aspect(z)
    expected = math.degrees(math.atan(math.hypot(gx, gy)))
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(slope[inner], expected, atol=1e-3)
    np.testing.assert_allclose(aspect[inner], facing, atol=1e-3)
    assert np.isnan(slope[0]).all() and np.isnan(aspect[:, -1]).all()


def test_slope_and_aspect_agree_with_xarray_spatial() -> None:
    xr = pytest.importorskip("xarray")
    xrs = pytest.importorskip("xrspatial")
    rng = np.random.default_rng(7)
    z = np.cumsum(rng.normal(size=(40, 50)), axis=1) * 3 + 500.0
    da = xr.DataArray(z.astype(np.float32), dims=("y", "x"), attrs={"res": (RES, RES)})
    ref_slope = np.asarray(xrs.slope(da).data)
    ref_aspect = np.asarray(xrs.aspect(da).data)
    ours_slope, ours_aspect = terrain.slope(z, RES), terrain.aspect(z)
    inner = (slice(1, -1), slice(1, -1))
    np.testing.assert_allclose(ours_slope[inner], ref_slope[inner], atol=2e-3)
    diff = (ours_aspect[inner] - ref_aspect[inner] + 180.0) % 360.0 - 180.0
    assert np.nanmax(np.abs(diff[ref_slope[inner] > 1.0])) < 0.05
    assert ((ours_aspect[inner] >= 0) & (ours_aspect[inner] < 360)).all()


def test_flat_has_no_aspect_and_zero_slope() -> None:
    z = np.full((6, 6), 42.0)
    assert np.isnan(terrain.aspect(z)[1:-1, 1:-1]).all()
    assert (terrain.slope(z, RES)[1:-1, 1:-1] == 0).all()


def test_max_curvature_of_quadrics() -> None:
    rows, cols = np.mgrid[-5:6, -5:6]
    x, y = cols * RES, -rows * RES
    c = 0.002
    dome = -c * (x**2 + y**2) / 2
    ridge = -c * x**2 / 2 + 0.05 * y  # convex across, sloping along
    valley = c * x**2 / 2
    assert terrain.max_curvature(dome, RES)[5, 5] == pytest.approx(c, rel=1e-9)
    k_ridge = terrain.max_curvature(ridge, RES)[5, 5]
    # on the crest the gradient is 0.05 along y: k_max = c / sqrt(1 + 0.05^2)
    assert k_ridge == pytest.approx(c / math.sqrt(1 + 0.05**2), rel=1e-9)
    assert terrain.max_curvature(valley, RES)[5, 5] == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(terrain.max_curvature(_plane(0.3, -0.2), RES)[1:-1, 1:-1], 0, atol=1e-12)


def test_tpi_disc_and_plane() -> None:
    z = np.zeros((9, 9))
    z[4, 4] = 9.0
    tpi = terrain.tpi(z, 1.5)  # disc of 9 pixels: the centre, 4 edge and 4 corner neighbours
    assert tpi[4, 4] == pytest.approx(9.0 - 1.0)
    assert tpi[4, 5] == pytest.approx(-1.0) and tpi[5, 5] == pytest.approx(-1.0)
    assert tpi[4, 6] == pytest.approx(0.0)  # (0, 2) is outside the disc of radius 1.5
    assert np.isnan(tpi[0]).all() and np.isnan(tpi[:, -1]).all()
    plane = terrain.tpi(_plane(0.3, -0.7, n=40) + 1234.5, 10.0)
    assert np.nanmax(np.abs(plane)) < 1e-4
    assert np.isfinite(plane[10:30, 10:30]).all()


def test_tpi_ignores_nodata_and_does_not_depend_on_the_array_extent() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(500, 30, size=(60, 70))
    z[40:, 50:] = np.nan
    whole = terrain.tpi(z, 6.3)
    part = terrain.tpi(z[7:50, 11:69], 6.3)
    np.testing.assert_array_equal(part[6:-6, 6:-6], whole[13:44, 17:63])
    assert np.isnan(whole[45, 55]) and np.isfinite(whole[39, 49])


def _outflow(z: np.ndarray) -> float:
    """Area (m^2) leaving the window: sum over pixels that drain out (no lower neighbour)."""
    sca = terrain.specific_catchment_area(z, RES)
    filled, edge = terrain.fill_depressions(z)
    frac, _ = terrain._flow_fractions(filled, edge, RES)
    terminal = np.isfinite(z) & (frac.sum(axis=0) == 0)
    return float(np.nansum(sca[terminal]) * RES)


def test_accumulation_conserves_area_through_pits_and_flats() -> None:
    rows, cols = np.mgrid[0:40, 0:30]
    z = 200.0 - rows * 1.0 + 0.05 * np.abs(cols - 15)  # drains south into a central valley
    z[10:14, 12:18] = 150.0  # a pit
    z[20:26, 5:25] = z[20, 15]  # a terrace (flat)
    total = np.isfinite(z).sum() * RES * RES
    assert _outflow(z) == pytest.approx(total, rel=1e-9)
    sca = terrain.specific_catchment_area(z, RES)
    assert np.isfinite(sca).all() and (sca >= RES).all()
    # the valley outlet (bottom row, centre) collects most of the window
    assert sca[-1, 15] * RES > 0.5 * total


def test_accumulation_on_a_plane_and_at_the_sea() -> None:
    rows, cols = np.mgrid[0:20, 0:10]
    z = 100.0 - rows * 1.0
    sca = terrain.specific_catchment_area(z, RES)
    np.testing.assert_allclose(sca[0], RES)  # the crest: each pixel's own area / width
    assert sca[-1].sum() * RES == pytest.approx(z.size * RES * RES)
    z[:, 7:] = np.nan  # sea
    sca = terrain.specific_catchment_area(z, RES)
    assert np.isnan(sca[:, 7:]).all() and np.isfinite(sca[:, :7]).all()


def test_fill_depressions_raises_a_pit_to_its_spill_level() -> None:
    z = np.full((7, 7), 10.0)
    z[1:6, 1:6] = 12.0
    z[2:5, 2:5] = 5.0
    z[3, 0] = 9.0
    z[3, 1] = 11.0  # the lowest way out of the hollow passes 11 m
    filled, edge = terrain.fill_depressions(z)
    assert (filled[2:5, 2:5] == 11.0).all()
    assert filled[0, 0] == 10.0 and filled[1, 1] == 12.0
    assert edge[0].all() and not edge[3, 3]


@pytest.mark.parametrize("diagonal", [False, True])
def test_a_valley_without_pits_is_not_filled_in_any_direction(diagonal: bool) -> None:
    """A V-shaped valley (side slopes 20 %, floor 2 % down) along the grid or at 45 degrees: no
    pixel is a pit, so none is raised, and the catchment along its floor is what the flow over
    the 8 neighbours gives on the DEM as it is. Filled over 4-connected paths only, the
    diagonal floor was raised by up to 1.3 m and its catchment came out 4 to 15 % low."""
    n = 81
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    if diagonal:
        across = (cols - rows) / math.sqrt(2) * RES
        down = ((n - 1 - cols) + (n - 1 - rows)) / math.sqrt(2) * RES
    else:
        across, down = (cols - n // 2) * RES, (n - 1 - rows) * RES
    z = 100.0 + 0.20 * np.abs(across) + 0.02 * down
    filled, _ = terrain.fill_depressions(z)
    np.testing.assert_array_equal(filled, z)
    sca = terrain.specific_catchment_area(z, RES)
    floor = [(i, i) for i in range(10, 70, 10)] if diagonal else [(i, n // 2)
                                                                for i in range(10, 70, 10)]
    along = np.array([sca[i, j] for i, j in floor])
    assert (np.diff(along) > 0).all()  # the floor gathers more and more of the valley
    if diagonal:  # about the area upslope of the floor pixel: 2 i^2 pixels over the width
        np.testing.assert_allclose(along[:4], [2 * i * i * RES for i in (10, 20, 30, 40)],
                                   rtol=0.13)


def test_wetness_and_stream_power() -> None:
    sca, slope = np.array([10.0, 10.0, np.nan]), np.array([45.0, 0.0, 5.0])
    twi, spi = terrain.wetness_and_stream_power(sca, slope)
    assert twi[0] == pytest.approx(math.log(10.0), rel=1e-6)
    assert spi[0] == pytest.approx(math.log(10.0), rel=1e-6)
    assert twi[1] == pytest.approx(math.log(10.0 / terrain.MIN_TAN_SLOPE), rel=1e-6)
    assert np.isnan(twi[2]) and twi.dtype == np.float32


def test_aspect_from_true_north_across_the_state() -> None:
    """Grid north of EPSG:3338 departs from true north by the meridian convergence; a slope
    facing true north reads 0 (here one facing grid north reads 360 - convergence on the grid)."""
    from pyproj import Proj, Transformer

    to_albers = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    factors = Proj("EPSG:3338")
    for lon, lat, expected in [(-131.6, 55.3, 19.3), (-147.7, 64.8, 5.4), (-154.0, 60.0, 0.0),
                               (-165.4, 64.5, -9.8), (172.9, 52.9, -28.6)]:
        x, y = to_albers.transform(lon, lat)
        convergence = float(grid_convergence(x, y))
        assert convergence == pytest.approx(expected, abs=0.05)
        assert convergence == pytest.approx(
            factors.get_factors(lon, lat).meridian_convergence, abs=1e-4)
        facing_true_north = (360.0 - convergence) % 360.0  # its aspect on the grid
        got = terrain.true_aspect(np.array([facing_true_north, np.nan]), np.full(2, convergence))
        assert got[0] == pytest.approx(0.0, abs=1e-4) or got[0] == pytest.approx(360.0, abs=1e-4)
        assert np.isnan(got[1]) and got.dtype == np.float32
