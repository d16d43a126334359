"""The samples table: projection, pixel sampling, dropped points, labels, dates, folds, input
errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
import pytest
import training_data as T

from mapper.bands import SOIL_ORDERS, STACK_BANDS
from mapper.errors import InputError
from mapper.samples import (
    SAMPLE_COLUMNS,
    build_samples,
    check_observations,
    locate,
    read_observations,
    read_samples,
    region_samples_metadata,
    samples_metadata,
)
from mapper.windows import stacks_by_tile


@pytest.fixture
def tiny(training_region: dict) -> dict:
    """The training tests' region (tests/conftest.py): stacks, observations, config."""
    return training_region


@pytest.fixture
def built(training_samples: dict) -> dict:
    """Its samples table (``table``) and file (``samples``), as build_samples made them."""
    return training_samples


def test_samples_of_synthetic_stacks_say_so_and_so_do_their_folds(tiny: dict,
                                                                  tmp_path: Path) -> None:
    """A real region whose stacks read a synthetic file (the demo's DEM): its samples, and the
    cross-validation folds made from them, are flagged synthetic as its products are, so its
    reports say the figures describe no real place."""
    import dataclasses

    import rasterio

    from mapper.evaluate import FoldSpec, cv_fold, read_fold
    from mapper.folds import build_folds

    real = dataclasses.replace(tiny["region"], settings={**tiny["region"].settings,
                                                         "synthetic": False})
    for synthetic in (True, False):
        stacks = []
        for path in tiny["stacks"]:
            copy = tmp_path / str(synthetic) / Path(path).name
            copy.parent.mkdir(exist_ok=True)
            copy.write_bytes(Path(path).read_bytes())
            with rasterio.open(copy, "r+") as ds:
                ds.update_tags(MAPPER_SYNTHETIC=str(synthetic).lower())
            stacks.append(copy)
        samples = tmp_path / str(synthetic) / "points.parquet"
        build_samples(real, tiny["observations"], stacks, samples)
        meta = samples_metadata(samples)
        assert meta["synthetic"] is synthetic
        assert meta["note"] == ("stacks made from SYNTHETIC files" if synthetic else "")
        folds = build_folds(real, samples, samples.with_name("folds.parquet"))
        assert len(folds)
        out = samples.with_name("rf_random_f0.parquet")
        cv_fold(real, FoldSpec("nsp", "rf", "random", 0), samples=samples,
                folds=samples.with_name("folds.parquet"), stacks=stacks, out=out)
        assert read_fold(out)[1]["synthetic"] is synthetic


def test_outside_and_nodata_points_are_dropped_and_counted(
    tiny: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "points.parquet"
    with caplog.at_level(logging.INFO, logger="mapper.samples"):
        table = build_samples(tiny["region"], tiny["observations"], tiny["stacks"], out)
    # lost points are a WARNING (the console shows it), with the count per reason
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1, caplog.text
    assert "dropped 0 without position, 4 outside region tiny, 3 on nodata" in warned[0]
    assert str(tiny["observations"]) in warned[0]
    n_obs = len(tiny["observed"])
    assert len(table) == n_obs - 4 - 3
    meta = samples_metadata(out)
    assert meta["counts"] == {"read": n_obs, "no_position": 0, "outside": 4, "nodata": 3,
                              "kept": n_obs - 7}
    assert meta["synthetic"] is True and meta["region"] == "tiny"
    assert "4 outside region tiny, 3 on nodata" in caplog.text
    assert "negated" not in warned[0]  # none of the 4 is in the region with its longitude negated
    hy, hx, hr = T.HOLE
    assert (np.hypot(table["x"] - hx, table["y"] - hy) > hr - 15).all()


def test_no_warning_when_no_point_is_dropped(tiny: dict, built: dict, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    kept = df[df["obs_id"].isin(built["table"]["obs_id"])]
    with caplog.at_level(logging.INFO, logger="mapper.samples"):
        table = build_samples(tiny["region"], _write(tmp_path, kept), tiny["stacks"],
                              tmp_path / "p.parquet")
    assert len(table) == len(kept)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert "dropped 0 without position, 0 outside region tiny, 0 on nodata" in caplog.text


def test_dropped_points_are_named_in_the_log(tiny: dict, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    df.loc[0, "lon"] = np.nan
    df.loc[1, "lat"] = np.nan
    with caplog.at_level(logging.INFO, logger="mapper.samples"):
        build_samples(tiny["region"], _write(tmp_path, df), tiny["stacks"], tmp_path / "p.parquet")
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "dropped 2 without position, 4 outside region tiny" in warned[0]
    ids = ", ".join(df["obs_id"].iloc[:2])
    assert f"dropped without position: obs_id {ids}" in caplog.messages


def test_table_columns_pixels_and_values_match_the_stacks(tiny: dict, built: dict) -> None:
    table = read_samples(built["samples"])
    assert list(table.columns) == SAMPLE_COLUMNS
    assert str(table["nsp"].dtype) == "Int8" and str(table["soil_order"].dtype) == "Int8"
    fields = T.fields()
    lat = T.lattice()
    # the pixel holds the point (corner convention) and its values are the stack's
    left = lat.origin_x + table["col"] * lat.res
    top = lat.origin_y - table["row"] * lat.res
    assert ((table["x"] >= left) & (table["x"] < left + 10) & (table["y"] <= top)
            & (table["y"] > top - 10)).all()
    r = (table["row"] - int((lat.origin_y - T.TOP) / 10)).to_numpy()
    c = (table["col"] - int((T.LEFT - lat.origin_x) / 10)).to_numpy()
    expected = fields[:, r, c].T
    np.testing.assert_array_equal(table[STACK_BANDS].to_numpy(np.float32), expected)
    assert all(lat.tile_of_xy(x, y) == t for x, y, t in zip(table["x"], table["y"],
                                                             table["tile"], strict=True))
    # projected positions agree with the fixture's EPSG:3338 coordinates (to the rounding of lon)
    src = tiny["observed"].set_index("obs_id").loc[table["obs_id"]]
    assert np.abs(src["x"].to_numpy() - table["x"].to_numpy()).max() < 0.05
    # labels kept, soil orders as indices into SOIL_ORDERS
    names = src["soil_order"].replace("", np.nan).to_numpy()
    got = [SOIL_ORDERS[int(i)] if pd.notna(i) else np.nan for i in table["soil_order"]]
    assert [str(a) for a in got] == [str(a) for a in names]


def test_parquet_observations_give_the_same_table(tiny: dict, built: dict,
                                                  tmp_path: Path) -> None:
    obs = pd.read_csv(tiny["observations"], dtype={"obs_id": str})
    obs.to_parquet(tmp_path / "obs.parquet")
    again = build_samples(tiny["region"], tmp_path / "obs.parquet", tiny["stacks"],
                          tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(again, built["table"])


def _write(tmp_path: Path, df: pd.DataFrame) -> Path:
    path = tmp_path / "obs.csv"
    df.to_csv(path, index=False)
    return path


def test_missing_columns_name_the_file_and_columns(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"]).drop(columns=["lat", "nsp"])
    path = _write(tmp_path, df)
    with pytest.raises(InputError, match=r"obs\.csv: missing column\(s\) lat, nsp"):
        read_observations(path)


def test_column_names_are_matched_ignoring_case_and_spaces(tiny: dict, tmp_path: Path) -> None:
    """A spreadsheet's header (`Obs_ID, Lon, LAT, ...`) reads as the table it is, ids with their
    leading zeros; a header separated by ';' (a European spreadsheet's CSV) is one error that
    says so."""
    from mapper.samples import read_observations

    plain = tmp_path / "plain.csv"
    plain.write_text("obs_id,lon,lat,date,nsp,soil_order\n007,-147.7,64.8,2019-07-15,1,Gelisols\n")
    loose = tmp_path / "loose.csv"
    loose.write_text("Obs_ID, Lon, LAT,Date , NSP,Soil_Order\n"
                     "007,-147.7,64.8,2019-07-15,1,Gelisols\n")  # fmt: skip
    pd.testing.assert_frame_equal(read_observations(loose), read_observations(plain))
    assert read_observations(loose)["obs_id"].tolist() == ["007"]
    twice = tmp_path / "twice.csv"
    twice.write_text("obs_id,Lon, LON,lat,date,nsp,soil_order\n7,-147.7,-147.7,64.8,,1,\n")
    with pytest.raises(InputError, match=r"twice\.csv: column\(s\) lon given more than once"):
        read_observations(twice)
    semicolons = tmp_path / "semicolons.csv"
    semicolons.write_text("obs_id;lon;lat;date;nsp;soil_order\n7;-147,7;64,8;2019-07-15;1;\n")
    with pytest.raises(InputError) as exc:
        read_observations(semicolons)
    assert str(exc.value).endswith("the header looks separated by ';' or tabs: save the table as "
                                   "comma-separated CSV")


def test_a_delimiter_at_the_end_of_each_line_reads_as_written(tmp_path: Path) -> None:
    """Data rows ending in a comma (some exporters write one) read as the table they are, not
    shifted onto their neighbours' columns; a row with a value beyond the header's columns is
    one error naming its line."""
    from mapper.samples import read_observations

    plain = tmp_path / "plain.csv"
    plain.write_text("obs_id,lon,lat,date,nsp,soil_order\na,-147.7,64.8,,1,Gelisols\n"
                     "b,-147.6,64.7,2019-07-15,0,Inceptisols\n")
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("obs_id,lon,lat,date,nsp,soil_order\na,-147.7,64.8,,1,Gelisols,\n"
                        "b,-147.6,64.7,2019-07-15,0,Inceptisols,\n")
    pd.testing.assert_frame_equal(read_observations(trailing), read_observations(plain))
    extra = tmp_path / "extra.csv"
    extra.write_text("obs_id,lon,lat,date,nsp,soil_order\na,-147.7,64.8,,1,Gelisols,\n"
                     "b,-147.6,64.7,2019-07-15,0,Inceptisols,peat\n")
    with pytest.raises(InputError) as exc:
        read_observations(extra)
    assert str(exc.value) == (
        f"{extra}: line 3 has 7 values, but the header names 6 columns; name every column in the "
        "header (an unnamed first column, such as a spreadsheet's row numbers, needs a name too) "
        "or remove the extra values")


def test_unknown_soil_orders_are_listed_with_the_allowed_names(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"])
    df.loc[3, "soil_order"] = "Vertisols"
    df.loc[5, "soil_order"] = "Oxisol"  # misspelt: Oxisols would be read as unlabelled
    df.loc[6, "soil_order"] = " gelisols "  # case and spaces are forgiven
    df.loc[7, "soil_order"] = "Alfisols"  # outside the 7: read as unlabelled, not an error
    path = _write(tmp_path, df)
    with pytest.raises(InputError) as err:
        read_observations(path)
    msg = str(err.value)
    assert "Oxisol, Vertisols" in msg and "gelisols" not in msg and "Alfisols," in msg
    assert ", ".join(SOIL_ORDERS) in msg and str(path) in msg


def test_bad_nsp_values_and_duplicate_ids_are_refused(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"])
    df.loc[2, "nsp"] = 2
    with pytest.raises(InputError, match="nsp must be 0, 1, true, false or empty; found 2"):
        read_observations(_write(tmp_path, df))
    df = pd.read_csv(tiny["observations"])
    df.loc[4, "obs_id"] = df.loc[3, "obs_id"]
    with pytest.raises(InputError, match="obs_id must be unique"):
        read_observations(_write(tmp_path, df))


def test_swapped_lon_lat_is_detected(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"])
    df["lon"], df["lat"] = df["lat"].copy(), df["lon"].copy()
    with pytest.raises(InputError, match="lon and lat columns look swapped"):
        build_samples(tiny["region"], _write(tmp_path, df), tiny["stacks"],
                      tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


@pytest.mark.parametrize("crs", ["EPSG:3338", "EPSG:26906"])
def test_projected_metres_are_named_with_the_crs_that_fits(
    tiny: dict, tmp_path: Path, crs: str
) -> None:
    """x, y exported in metres (the pipeline's Alaska Albers, or a NAD83 UTM zone) in the lon and
    lat columns: the error says they are not degrees and which CRS puts them in the region."""
    df = pd.read_csv(tiny["observations"])
    given = tiny["observations"]
    inside = locate(tiny["region"], given, read_observations(given))[2]
    to = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    df["lon"], df["lat"] = to.transform(df["lon"].to_numpy(), df["lat"].to_numpy())
    df.loc[0, ["lon", "lat"]] = None  # a row without position does not hide the hint
    with pytest.raises(InputError) as err:
        check_observations(tiny["region"], _write(tmp_path, df))
    msg = str(err.value)
    name = pyproj.CRS.from_user_input(crs).name
    assert msg.startswith(f"{tmp_path / 'obs.csv'}: no point lies in region tiny; its lon and "
                          "lat are not degrees"), msg
    # the points that lie in the region as degrees, less the row left without position
    assert f"read as x, y of {crs} ({name}), {inside[1:].sum()} of {len(df) - 1} lie in it" in msg
    assert "give lon and lat in decimal degrees" in msg
    df["lat"] = 9.0e6  # far off: not degrees, and in none of the guesses
    with pytest.raises(InputError, match=r"not degrees \(lon [-\d.e+]+, lat 9e\+06\) but look "
                                         r"like projected metres: give lon and lat in decimal"):
        check_observations(tiny["region"], _write(tmp_path, df))


def test_a_latitude_off_the_earth_is_named_not_dropped(tiny: dict, tmp_path: Path) -> None:
    """A typo (95.1 for 65.1) would project to infinity and be dropped as "without position"."""
    df = pd.read_csv(tiny["observations"])
    df.loc[3, "lat"] = 95.1
    with pytest.raises(InputError, match=rf"1 row\(s\) with a latitude outside -90..90: obs_id "
                                         rf"{df.loc[3, 'obs_id']} \(95.1\); fix those rows"):
        build_samples(tiny["region"], _write(tmp_path, df), tiny["stacks"],
                      tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_a_samples_table_that_is_missing_or_not_parquet_is_one_error(tmp_path: Path) -> None:
    """Training reads the table's metadata first: a wrong --samples is named, not a traceback."""
    with pytest.raises(InputError, match=r"absent.parquet: samples table not found; run "):
        region_samples_metadata(tmp_path / "absent.parquet", "tiny")
    (tmp_path / "points.parquet").write_bytes(b"PAR1")
    with pytest.raises(InputError, match=r"points.parquet: not a readable Parquet table .*; "
                                         r"rebuild it with `python -m mapper samples`"):
        region_samples_metadata(tmp_path / "points.parquet", "tiny")


def test_points_elsewhere_and_badly_named_stacks_are_refused(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"])
    df["lon"] = df["lon"] + 3.0
    with pytest.raises(InputError, match="none of its .* points lies in region tiny"):
        build_samples(tiny["region"], _write(tmp_path, df), tiny["stacks"],
                      tmp_path / "p.parquet")
    for name in ("stack_a.tif", "R0001C0002.vrt"):
        with pytest.raises(InputError, match=rf"{name}: a stack file must be named <tile id>.tif"):
            stacks_by_tile([tmp_path / name])
    with pytest.raises(InputError, match="R0001C0002.tif: tile R0001C0002 given twice"):
        stacks_by_tile([tmp_path / "a" / "R0001C0002.tif", tmp_path / "b" / "R0001C0002.tif"])


def test_dates_are_iso_8601_or_empty(tiny: dict, tmp_path: Path) -> None:
    """Dates and date-times in ISO 8601 pass (kept as given, spaces stripped); an empty date is
    allowed (unknown: nothing reads it)."""
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    given = ["2019-07-15", " 2019-07-16 ", "2019-07-15T10:30:00Z", "2019-07-15T10:30:00-08:00",
             "2019-07-15 10:30", "2019-07", "1952", None]
    df.loc[: len(given) - 1, "date"] = given
    table = read_observations(_write(tmp_path, df))
    got = table["date"].iloc[: len(given)].tolist()
    assert got == [*(g.strip() for g in given[:-1]), pd.NA]
    assert str(table["date"].dtype) == "string"
    df.to_parquet(tmp_path / "obs.parquet")  # and from Parquet, also a real date column
    assert read_observations(tmp_path / "obs.parquet")["date"].iloc[1] == "2019-07-16"
    df["date"] = pd.to_datetime("2020-07-01")
    df.to_parquet(tmp_path / "dated.parquet")
    read_observations(tmp_path / "dated.parquet")


def test_dates_that_are_not_iso_8601_are_counted_and_named(tiny: dict, tmp_path: Path) -> None:
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    bad = ["15/07/2019", "2018-13-45", "not-a-date", "2019-02-29", "07-15-2019", "2019/07/15",
           "2019-07-15T25:00"]
    rows = [2, 5, 7, 11, 13, 17, 19]
    df.loc[rows, "date"] = bad
    path = _write(tmp_path, df)
    with pytest.raises(InputError) as err:
        read_observations(path)
    shown = ", ".join(f"{df.loc[r, 'obs_id']} ('{d}')" for r, d in zip(rows[:5], bad[:5],
                                                                        strict=True))
    assert str(err.value) == (
        f"{path}: 7 row(s) with a date that is not ISO 8601 (YYYY-MM-DD, optionally with a time, "
        f"e.g. 2019-07-15 or 2019-07-15T10:30:00Z; or empty): obs_id {shown} and 2 more; fix "
        "those rows"
    )
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    df.loc[4, "date"] = "15/07/2019"
    with pytest.raises(InputError, match=rf"1 row\(s\) .*: obs_id {df.loc[4, 'obs_id']} "
                                         r"\('15/07/2019'\); fix those rows$"):
        read_observations(_write(tmp_path, df))


def test_check_observations_needs_no_stacks(tiny: dict, tmp_path: Path) -> None:
    """What the plan runs: the table's checks and the region's (swapped lon/lat), no stack."""
    table = check_observations(tiny["region"], tiny["observations"])
    assert len(table) == len(tiny["observed"])
    df = pd.read_csv(tiny["observations"])
    df["lon"], df["lat"] = df["lat"].copy(), df["lon"].copy()
    with pytest.raises(InputError, match="lon and lat columns look swapped"):
        check_observations(tiny["region"], _write(tmp_path, df))


def test_blank_rows_are_skipped_and_rows_without_obs_id_are_numbered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A spreadsheet export's blank rows (``,,,,,``) are not observations; a row with values but
    no obs_id is one, and is named by its data row number (counted from 1 after the header)."""
    header = "obs_id,lon,lat,date,nsp,soil_order\n"
    rows = "a,-147.7,64.8,2019-07-15,1,Gelisols\nb,-147.6,64.9,,0,\n"
    plain = tmp_path / "plain.csv"
    plain.write_text(header + rows)
    padded = tmp_path / "padded.csv"
    padded.write_text(header + ",,,,,\n" + rows + ",,,,,\n , ,,,,\n")
    with caplog.at_level(logging.INFO, logger="mapper.samples"):
        table = read_observations(padded)
    pd.testing.assert_frame_equal(table, read_observations(plain))
    assert f"{padded}: skipped 3 blank row(s)" in caplog.messages
    only_blank = tmp_path / "only_blank.csv"
    only_blank.write_text(header + ",,,,,\n,,,,,\n")
    with pytest.raises(InputError, match=r"no rows \(only a header and blank rows\)"):
        read_observations(only_blank)
    no_id = tmp_path / "no_id.csv"
    no_id.write_text(header + ",,,,,\n" + rows + ",-147.5,64.7,,1,\n , -147.4,64.6,,,\n,,,,,\n")
    with pytest.raises(InputError) as err:
        read_observations(no_id)
    assert str(err.value) == (
        f"{no_id}: 2 row(s) without an obs_id: data row(s) 4, 5 (counted from 1 after the "
        "header, empty lines not counted); fill obs_id or delete the row(s)"
    )


def test_nsp_may_be_true_or_false(tmp_path: Path) -> None:
    """A boolean nsp (Parquet True/False, or text true/false in any case) reads as 1/0."""
    csv = tmp_path / "obs.csv"
    csv.write_text("obs_id,lon,lat,date,nsp,soil_order\n"
                   "a,-147.7,64.8,,true,\nb,-147.6,64.9,,FALSE,\nc,-147.5,64.7,,,\n"
                   "d,-147.4,64.6,,1,\n")  # fmt: skip
    assert read_observations(csv)["nsp"].tolist() == [1, 0, pd.NA, 1]
    df = pd.DataFrame({"obs_id": ["a", "b"], "lon": [-147.7, -147.6], "lat": [64.8, 64.9],
                       "date": [None, None], "nsp": [True, False], "soil_order": [None, None]})
    df.to_parquet(tmp_path / "obs.parquet")
    nsp = read_observations(tmp_path / "obs.parquet")["nsp"]
    assert nsp.tolist() == [1, 0] and str(nsp.dtype) == "Int8"
    df["nsp"] = pd.array([True, None], dtype="boolean")
    df.to_parquet(tmp_path / "nullable.parquet")
    assert read_observations(tmp_path / "nullable.parquet")["nsp"].tolist() == [1, pd.NA]


def test_longitudes_given_as_positive_degrees_west_are_named(
    tiny: dict, built: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """147.7 meant as 147.7 W: the error (every row) or the warning (some rows) says west
    longitudes are negative; 212.3 (the same place as -147.7) is read as it is."""
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    df["lon"] = -df["lon"]
    with pytest.raises(InputError, match=rf"no point lies in region tiny, but {len(df) - 4} of "
                                         rf"{len(df)} do with the longitude negated; west "
                                         r"longitudes must be negative \(-147.7 for 147.7 W\)"):
        check_observations(tiny["region"], _write(tmp_path, df))
    df["lon"] = 360 - df["lon"]  # past 180: valid as given
    assert len(check_observations(tiny["region"], _write(tmp_path, df))) == len(df)
    df = pd.read_csv(tiny["observations"], dtype={"obs_id": str, "soil_order": str})
    flipped = df.index[df["obs_id"].isin(built["table"]["obs_id"])][:3]
    df.loc[flipped, "lon"] = -df.loc[flipped, "lon"]
    with caplog.at_level(logging.INFO, logger="mapper.samples"):
        table = build_samples(tiny["region"], _write(tmp_path, df), tiny["stacks"],
                              tmp_path / "p.parquet")
    assert len(table) == len(built["table"]) - 3  # named, never negated
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "7 outside region tiny" in warned[0], caplog.text
    assert warned[0].endswith("; 3 of those outside would lie in it with the longitude negated: "
                              "west longitudes must be negative (-147.7 for 147.7 W), fix those "
                              "rows")



HEADER = "obs_id,lon,lat,date,nsp,soil_order"


def test_a_column_given_twice_with_the_same_name_is_one_error(tmp_path: Path) -> None:
    """pandas reads a repeated header name as ``nsp.1``: the second column's values would be
    ignored without a word. The raw header is checked; other repeated columns are the user's."""
    twice = tmp_path / "twice.csv"
    twice.write_text(f"{HEADER},nsp\na,-147.7,64.8,,,,1\n")
    with pytest.raises(InputError, match=r"twice\.csv: column\(s\) nsp given more than once"):
        read_observations(twice)
    notes = tmp_path / "notes.csv"
    notes.write_text(f"{HEADER},notes,notes\na,-147.7,64.8,,1,,x,y\n")
    assert read_observations(notes)["nsp"].tolist() == [1]


def test_coordinates_that_are_not_numbers_are_named_not_dropped(tmp_path: Path) -> None:
    """A decimal comma or a hemisphere letter is an error naming the rows and their values; an
    empty coordinate stays a point without position (dropped and counted)."""
    bad = tmp_path / "bad.csv"
    bad.write_text(f'{HEADER}\nA1,-147.7,"64,8",,1,\nA2,-147.7,64.8N,,1,\nA3,,64.8,,1,\n'
                   'A4,147.7W,64.8,,1,\n')
    with pytest.raises(InputError) as err:
        read_observations(bad)
    assert str(err.value) == (
        f"{bad}: 1 row(s) with a lon that is not a number: obs_id A4 ('147.7W'); give decimal "
        "degrees with a '.' decimal point (64.8, -147.7), or leave it empty")
    bad.write_text(f'{HEADER}\nA1,-147.7,"64,8",,1,\nA2,-147.7,64.8N,,1,\nA3,,NA,,1,\n')
    with pytest.raises(InputError, match=r"2 row\(s\) with a lat that is not a number: obs_id "
                                         r"A1 \('64,8'\), A2 \('64\.8N'\)"):
        read_observations(bad)
    bad.write_text(f"{HEADER}\nA3,,NA,,1,\nA4,-147.7,64.8,,NA,\n")
    obs = read_observations(bad)
    assert obs["lon"].isna().tolist() == [True, False] and obs["nsp"].isna().tolist() == [False,
                                                                                            True]


def test_obs_id_is_text_as_written(tmp_path: Path) -> None:
    """An obs_id of NA, None or null is an id, not a missing one; ids differing only by
    surrounding spaces are the same id; a blank line before the header is no header."""
    ids = tmp_path / "ids.csv"
    ids.write_text(f"{HEADER}\nNA,-147.7,64.8,,1,\nNone,-147.6,64.8,,1,\nnull,-147.5,64.8,,1,\n")
    assert read_observations(ids)["obs_id"].tolist() == ["NA", "None", "null"]
    spaced = tmp_path / "spaced.csv"
    spaced.write_text(f"{HEADER}\nA1,-147.7,64.8,,1,\nA1 ,-147.6,64.8,,1,\n")
    with pytest.raises(InputError, match=r"obs_id must be unique \(ignoring surrounding spaces\); "
                                         r"repeated: A1;"):
        read_observations(spaced)
    gaps = tmp_path / "gaps.csv"
    gaps.write_text(f"{HEADER}\nA1,-147.7,64.8,,1,\n\n\n,-147.6,64.8,,1,\n")
    with pytest.raises(InputError, match=r"data row\(s\) 2 \(counted from 1 after the header, "
                                         r"empty lines not counted\)"):
        read_observations(gaps)
    lead = tmp_path / "lead.csv"
    lead.write_text(f"\n\n{HEADER}\nA1,-147.7,64.8,,1,\n")
    assert read_observations(lead)["obs_id"].tolist() == ["A1"]
