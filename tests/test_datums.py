"""The observation table's ``datum`` column: names and codes read, NAD27 shifted by PROJ's grid
(a SYNTHETIC grid the test writes under the real grid's name), a missing grid one error."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import rasterio
from affine import Affine
from pyproj.transformer import TransformerGroup

from mapper.datums import project
from mapper.errors import InputError
from mapper.samples import (
    build_samples,
    check_observations,
    locate,
    read_observations,
    samples_metadata,
)

NADCON5_ALASKA = "us_noaa_nadcon5_nad27_nad83_1986_alaska.tif"
SHIFT = (3.6, -7.2)
"""The synthetic grid's latitude and longitude offsets, arc-seconds (0.001 and -0.002 degrees)."""


def _table(tmp_path: Path, datums: list[str], lon: float = -147.7, lat: float = 64.8) -> Path:
    n = len(datums)
    path = tmp_path / "obs.csv"
    pd.DataFrame({"obs_id": [f"p{i}" for i in range(n)], "lon": [lon + i * 1e-3 for i in range(n)],
                  "lat": [lat] * n, "date": [""] * n, "nsp": [1] * n, "soil_order": [""] * n,
                  "Datum ": datums}).to_csv(path, index=False)
    return path


def _grid_installed() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return TransformerGroup(4267, 3338, always_xy=True).best_available


@pytest.fixture
def nadcon_grid(tmp_path: Path) -> Iterator[Path]:
    """A SYNTHETIC NAD27 -> NAD83 grid under NADCON5 Alaska's name, in PROJ's GeoTIFF grid layout
    (horizontal offsets in arc-seconds), on PROJ's search path for the test only. It covers
    170 to 120 degrees west, 50 to 75 north; its offsets are constant (:data:`SHIFT`)."""
    folder = tmp_path / "proj"
    folder.mkdir()
    height, width = 25, 50
    with rasterio.open(folder / NADCON5_ALASKA, "w", driver="GTiff", height=height, width=width,
                       count=2, dtype="float32", crs="EPSG:4267",
                       transform=Affine(1.0, 0.0, -170.5, 0.0, -1.0, 75.5)) as ds:
        for band, offset in enumerate(SHIFT, start=1):
            ds.write(np.full((height, width), offset, np.float32), band)
        ds.update_tags(TYPE="HORIZONTAL_OFFSET", DESCRIPTION="SYNTHETIC test grid")
        ds.set_band_description(1, "latitude_offset")
        ds.set_band_description(2, "longitude_offset")
        ds.update_tags(1, UNITTYPE="arc-second")
        ds.update_tags(2, UNITTYPE="arc-second", POSITIVE_VALUE="east")
    before = pyproj.datadir.get_data_dir()
    pyproj.datadir.append_data_dir(str(folder))
    try:
        yield folder
    finally:
        pyproj.datadir.set_data_dir(before)


def test_datum_names_and_epsg_codes_are_read(tmp_path: Path) -> None:
    path = _table(tmp_path, ["WGS84", " nad 83", "NAD-27", "EPSG:6318", "4269", "", "wgs_84"])
    obs = read_observations(path)
    assert obs["datum"].tolist() == [4326, 4269, 4267, 6318, 4269, 4326, 4326]


def test_a_parquet_datum_column_of_floats_is_read_as_codes(tmp_path: Path) -> None:
    """pandas writes an integer column with empty cells as floats (4269.0): still codes."""
    path = _table(tmp_path, ["x", "y", "z"])
    table = pd.read_csv(path)
    table["Datum "] = [4269.0, None, 4267.0]
    table.to_parquet(tmp_path / "obs.parquet")
    assert read_observations(tmp_path / "obs.parquet")["datum"].tolist() == [4269, 4326, 4267]


def test_a_datum_that_is_not_understood_is_one_error(tmp_path: Path) -> None:
    path = _table(tmp_path, ["NAD83", "Clarke", "EPSG:3338"])
    with pytest.raises(InputError) as err:
        read_observations(path)
    message = str(err.value)
    assert str(path) in message and "datum Clarke, EPSG:3338 not understood" in message
    assert "obs_id p1, p2" in message and "WGS84, NAD83, NAD27" in message


def test_wgs84_rows_give_the_samples_of_a_table_without_the_column(
    training_region: dict, training_samples: dict, tmp_path: Path
) -> None:
    obs = pd.read_csv(training_region["observations"], dtype=str, keep_default_na=False)
    obs["datum"] = ["WGS84" if i % 2 else "" for i in range(len(obs))]
    obs.to_csv(tmp_path / "obs.csv", index=False)
    out = tmp_path / "points.parquet"
    table = build_samples(training_region["region"], tmp_path / "obs.csv",
                          training_region["stacks"], out)
    pd.testing.assert_frame_equal(table, training_samples["table"])
    assert samples_metadata(out)["datums"] == {"WGS 84 (EPSG:4326)": len(table)}


def test_nad83_rows_take_the_nad83_projection(tiny_region_obs: tuple) -> None:
    region, path = tiny_region_obs(["NAD83", "WGS84"])
    obs = read_observations(path)
    x, y, _ = locate(region, path, obs)
    to_albers = pyproj.Transformer.from_crs(4269, 3338, always_xy=True)
    np.testing.assert_allclose((x[0], y[0]), to_albers.transform(obs["lon"][0], obs["lat"][0]),
                               atol=1e-6)
    np.testing.assert_array_equal([x[1:2], y[1:2]], project(obs["lon"][1:2], obs["lat"][1:2]))


@pytest.fixture
def tiny_region_obs(training_region: dict, tmp_path: Path):
    """``make(datums)`` -> (the training region, a table of points inside it in those datums)."""
    region = training_region["region"]
    observed = pd.read_csv(training_region["observations"])
    inside = read_observations(training_region["observations"])
    x, y, ok = locate(region, training_region["observations"], inside)
    lon, lat = observed["lon"][ok].iloc[0], observed["lat"][ok].iloc[0]

    def make(datums: list[str]) -> tuple:
        return region, _table(tmp_path, datums, lon=float(lon), lat=float(lat))

    return make


def test_nad27_is_shifted_by_proj_s_grid(tiny_region_obs, nadcon_grid: Path) -> None:
    region, path = tiny_region_obs(["NAD27", "NAD83"])
    obs = read_observations(path)
    x, y, inside = locate(region, path, obs)
    dlat, dlon = (s / 3600.0 for s in SHIFT)
    to_albers = pyproj.Transformer.from_crs(4269, 3338, always_xy=True)
    expected = to_albers.transform(obs["lon"][0] + dlon, obs["lat"][0] + dlat)
    np.testing.assert_allclose((x[0], y[0]), expected, atol=0.01)
    # the grid moved the point by its offsets: about 95 m west and 111 m north here
    plain = to_albers.transform(obs["lon"][0], obs["lat"][0])
    assert 140 < np.hypot(x[0] - plain[0], y[0] - plain[1]) < 150
    assert inside[1]


def test_a_point_outside_the_grid_is_named_not_dropped(tmp_path: Path, nadcon_grid: Path,
                                                       training_region: dict) -> None:
    path = _table(tmp_path, ["NAD27", "NAD27"], lon=-178.0, lat=52.0)  # west of the grid
    with pytest.raises(InputError) as err:
        check_observations(training_region["region"], path)
    message = str(err.value)
    assert str(path) in message and "2 point(s) in NAD27 (EPSG:4267) lie outside" in message
    assert "obs_id p0, p1" in message


def test_nad27_without_its_grid_stops_the_plan_naming_the_grid(
    tmp_path: Path, training_region: dict
) -> None:
    if _grid_installed():
        pytest.skip(f"PROJ's {NADCON5_ALASKA} is installed here: the error cannot arise")
    path = _table(tmp_path, ["WGS84", "NAD27", "nad27"])
    with pytest.raises(InputError) as err:
        check_observations(training_region["region"], path)
    message = str(err.value)
    assert str(path) in message and "2 point(s) in NAD27 (EPSG:4267) (obs_id p1, p2)" in message
    assert NADCON5_ALASKA in message and f"https://cdn.proj.org/{NADCON5_ALASKA}" in message
    assert pyproj.datadir.get_user_data_dir() in message
    assert f"`pyproj sync --file {NADCON5_ALASKA}`" in message and "100 to 200 m" in message


def test_a_datum_needing_several_grids_names_each_and_how_to_get_it(
    tmp_path: Path, training_region: dict
) -> None:
    """NAD83(2011) to NAD83 takes several NADCON5 grids: each is named with a command of its
    own; the size of the error is said for NAD27 only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if TransformerGroup(6318, 3338, always_xy=True).best_available:
            pytest.skip("PROJ's grids for EPSG:6318 are installed here: the error cannot arise")
    path = _table(tmp_path, ["EPSG:6318"])
    with pytest.raises(InputError) as err:
        check_observations(training_region["region"], path)
    message = str(err.value)
    assert "1 point(s) in NAD83(2011) (EPSG:6318)" in message and "100 to 200 m" not in message
    grids = re.findall(r"`pyproj sync --file (\S+)`", message)
    assert len(grids) >= 2 and all(g.endswith(".tif") and g in message.split(" for ")[0]
                                   for g in grids)
