"""The ground frame of EPSG:3338 (mapper.ground): scale factors against pyproj, and slope, aspect
and curvature of surfaces defined on the ground, read through the grid, against the same surfaces
sampled on the ground itself (an azimuthal equidistant projection centred on the place)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyproj import Proj, Transformer

from mapper import terrain
from mapper.errors import ConfigError
from mapper.ground import ground_frame, scale_factors

RES = 10.0
PLACES = {  # lon, lat: k from pyproj's get_factors, to 4 digits
    "Utqiagvik": (-156.79, 71.29, 1.0251),
    "Fairbanks": (-147.72, 64.84, 0.9997),
    "Anchorage": (-149.90, 61.22, 0.9963),
    "Ketchikan": (-131.65, 55.34, 0.9996),
    "Attu": (172.90, 52.90, 1.0032),
}
TO_ALBERS = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)


def _grid_around(lon: float, lat: float, n: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (x row, y column) of an n x n lattice-like grid centred on the place."""
    x0, y0 = TO_ALBERS.transform(lon, lat)
    offsets = (np.arange(n) - n // 2) * RES
    return (x0 + offsets)[None, :], (y0 - offsets)[:, None]


def _ground_coordinates(lon: float, lat: float, x: np.ndarray, y: np.ndarray):
    """True east and north metres from the place of each grid pixel (azimuthal equidistant)."""
    local = Transformer.from_crs(
        "EPSG:3338", f"+proj=aeqd +lat_0={lat} +lon_0={lon} +ellps=GRS80 +units=m", always_xy=True
    )
    xx, yy = np.broadcast_arrays(x, y)
    return local.transform(xx, yy)


@pytest.mark.parametrize("place", PLACES)
def test_scale_factors_are_pyprojs(place: str) -> None:
    lon, lat, k_expected = PLACES[place]
    x, y = TO_ALBERS.transform(lon, lat)
    k, h = scale_factors(np.array([x]), np.array([y]))
    factors = Proj("EPSG:3338").get_factors(lon, lat)
    assert k[0] == pytest.approx(factors.parallel_scale, abs=1e-7)
    assert h[0] == pytest.approx(factors.meridional_scale, abs=1e-7)
    assert k[0] == pytest.approx(k_expected, abs=1e-4) and k[0] * h[0] == pytest.approx(1, abs=1e-9)


@pytest.mark.parametrize("place", PLACES)
def test_slope_and_aspect_of_a_ground_plane(place: str) -> None:
    """A plane rising 0.2 to true north-east: slope atan(0.2 * sqrt 2), facing south-west (225
    degrees from true north), wherever it lies; the grid's metres give another slope where k is
    not 1 and another direction where the convergence is not 0."""
    lon, lat, _ = PLACES[place]
    x, y = _grid_around(lon, lat)
    east, north = _ground_coordinates(lon, lat, x, y)
    dem = 0.2 * east + 0.2 * north
    frame = ground_frame(x, y)
    expected = math.degrees(math.atan(0.2 * math.sqrt(2.0)))
    got = terrain.slope(dem, RES, frame)[1:-1, 1:-1]
    assert np.abs(got - expected).max() < 2e-4
    facing = terrain.aspect(dem, frame)[1:-1, 1:-1]
    assert np.abs(facing - 225.0).max() < 2e-3
    if place == "Utqiagvik":  # the grid's own metres: a slope to the north is 2.5 % off there
        north_plane = 0.2 * north
        ground_slope = terrain.slope(north_plane, RES, frame)[4, 4]
        assert ground_slope == pytest.approx(math.degrees(math.atan(0.2)), abs=2e-4)
        assert terrain.slope(north_plane, RES)[4, 4] - ground_slope > 0.25


@pytest.mark.parametrize("place", ["Utqiagvik", "Attu", "Fairbanks"])
def test_curvature_of_a_ground_quadric(place: str) -> None:
    """A tilted, sheared quadric on the ground: the curvature read through the grid and the frame
    is the one taken on a ground grid of the same spacing."""
    lon, lat, _ = PLACES[place]
    x, y = _grid_around(lon, lat)
    east, north = _ground_coordinates(lon, lat, x, y)

    def surface(e, n):
        return 2e-3 * e * e - 1.5e-3 * e * n + 0.5e-3 * n * n + 0.1 * e - 0.05 * n

    got = terrain.max_curvature(surface(east, north), RES, ground_frame(x, y))[4, 4]
    offsets = (np.arange(3) - 1) * RES
    ground = surface(offsets[None, :], -offsets[:, None])  # row 0 is north
    expected = terrain.max_curvature(ground, RES)[1, 1]
    assert got == pytest.approx(expected, rel=2e-4)
    if place == "Utqiagvik":
        assert terrain.max_curvature(surface(east, north), RES)[4, 4] != pytest.approx(
            expected, rel=0.01)


def test_the_frame_depends_on_the_pixel_only() -> None:
    """A window's frame holds, pixel for pixel, the values of any other window over the pixel
    (what keeps tiles of any size identical)."""
    lon, lat, _ = PLACES["Utqiagvik"]
    x, y = _grid_around(lon, lat, n=33)
    whole = ground_frame(x, y)
    part = ground_frame(x[:, 5:20], y[11:30])
    for name in "abcd":
        assert np.array_equal(getattr(whole, name)[11:30, 5:20], getattr(part, name))


def test_outside_the_table_is_one_error_naming_the_setting() -> None:
    """South of the equator (y = -6,000 km on the central meridian is 13.4 S) or off the
    projection (-9,000 km): one error naming the setting to change, not a traceback."""
    for y in (-6.0e6, -9.0e6):
        with pytest.raises(ConfigError, match=r"^EPSG:3338 ground distances \(stack.distances: "
                           r"ground\) are tabled for 0 to 89 degrees N, .* set stack.distances: "
                           r"grid in its region file$"):
            scale_factors(np.array([0.0]), np.array([y]))


def test_the_table_holds_low_latitudes_too() -> None:
    """A region south of Alaska (20 N here) gets pyproj's factors, as Alaska does."""
    lon, lat = -154.0 + 10.0, 20.0
    x, y = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True).transform(lon, lat)
    factors = Proj("EPSG:3338").get_factors(lon, lat)
    k, h = scale_factors(np.array([x]), np.array([y]))
    assert abs(k[0] - factors.parallel_scale) < 1e-7
    assert abs(h[0] - factors.meridional_scale) < 1e-7
