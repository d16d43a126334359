"""The horizontal datum of an observation's ``lon``, ``lat``: the optional ``datum`` column.

Soil and permafrost observations in Alaska were recorded over decades: legacy pedons in NAD27
(National Cooperative Soil Survey, NASIS ``horizontal datum name``), later ones in NAD83 or
WGS84. NAD27 coordinates read as WGS84 lie of the order of 100 to 200 m off in Alaska: ten to
twenty 10 m pixels. So a table may say, per row, which datum its
coordinates are in:

- empty, or no ``datum`` column: WGS84 (EPSG:4326), as before the column existed;
- ``WGS84``, ``NAD83`` or ``NAD27`` (case, spaces, ``-`` and ``_`` ignored: ``NAD 27``,
  ``nad-83``), as NASIS names them;
- ``EPSG:<code>`` or the code alone, for any geographic 2D CRS (``EPSG:4269``; a realization
  such as NAD83(2011), ``EPSG:6318``, takes NOAA's NADCON5 grids for its metre or two to the
  lattice's NAD83, and without them stops as NAD27 does, below).

Positions are projected to the lattice's EPSG:3338 (NAD83 / Alaska Albers) with PROJ's best
transformation (pyproj's :class:`~pyproj.transformer.TransformerGroup`, first operation). When
that one needs a grid that is not installed (NAD27 to NAD83 uses NOAA's NADCON5 Alaska grid,
``us_noaa_nadcon5_nad27_nad83_1986_alaska.tif``), PROJ would silently fall back to a "ballpark"
transformation, off by the very 100 to 200 m the datum was given to remove; instead
:func:`positions` stops with one error naming the table, the rows, the grid and where to put
it. A point the grid does not cover is an error too, never dropped as "without position".

WGS84 rows take exactly the transformation used before the column existed (:func:`project`),
so tables without it give the same samples.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyproj
from pyproj import CRS
from pyproj.exceptions import CRSError
from pyproj.transformer import TransformerGroup

from mapper.errors import InputError, first_few

DATUM_COLUMN = "datum"
WGS84 = 4326
NAMES = {"wgs84": WGS84, "nad83": 4269, "nad27": 4267}
"""Datum names (lower case, without spaces, ``-`` or ``_``) -> EPSG code of the geographic CRS."""
ALBERS = 3338


def project(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WGS84 longitude/latitude (degrees) -> EPSG:3338 x, y (metres)."""
    t = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    x, y = t.transform(np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _code(value: str) -> int | None:
    """EPSG code of one datum value (stripped, non-empty), or None when it is not one."""
    key = re.sub(r"[\s_-]", "", value.lower())
    if key in NAMES:
        return NAMES[key]
    match = re.fullmatch(r"(?:epsg:)?(\d{4,6})(?:\.0)?", key)  # 4269.0: a float Parquet column
    if not match:
        return None
    try:
        crs = CRS.from_epsg(int(match.group(1)))
    except CRSError:
        return None
    return int(match.group(1)) if crs.is_geographic and len(crs.axis_info) == 2 else None


def parse_datums(column: pd.Series | None, obs_id: pd.Series, path: Path) -> pd.Series:
    """The ``datum`` column (or None: no column) -> EPSG code per row (Int32; empty: WGS84).
    InputError naming the file, the values not understood and their obs_id."""
    if column is None:
        return pd.Series(WGS84, index=obs_id.index, dtype="Int32")
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    codes = {v: _code(v) for v in text.dropna().unique()}
    bad = text.isin([v for v, c in codes.items() if c is None]).fillna(False).to_numpy(bool)
    if bad.any():
        values = sorted(map(str, text[bad].unique()))
        raise InputError(
            f"{path}: datum {first_few(values)} not understood (obs_id "
            f"{first_few(obs_id[bad])}); give WGS84, NAD83, NAD27 or the EPSG code of a "
            "geographic CRS (e.g. EPSG:4269), or leave it empty for WGS84"
        )
    return text.map(codes, na_action="ignore").fillna(WGS84).astype("Int32")


def datum_name(code: int) -> str:
    """``NAD27 (EPSG:4267)``: a code as the messages and the samples metadata name it."""
    return f"{CRS.from_epsg(code).name} (EPSG:{code})"


def positions(lon: np.ndarray, lat: np.ndarray, datums: pd.Series, obs_id: pd.Series,
              path: Path) -> tuple[np.ndarray, np.ndarray]:
    """EPSG:3338 x, y of points given in their rows' datums (NaN where lon or lat is missing).

    InputError naming the file when the best transformation of a datum needs a grid that is not
    installed (the grid, its URL and the folder to put it in), or when a point lies outside the
    grid that transforms it."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    codes = datums.to_numpy(dtype=np.int64)
    x, y = np.full(len(lon), np.nan), np.full(len(lon), np.nan)
    for code in np.unique(codes):
        rows = codes == code
        if code == WGS84:
            x[rows], y[rows] = project(lon[rows], lat[rows])
            continue
        transformer = _best(int(code), rows, obs_id, path)
        x[rows], y[rows] = transformer.transform(lon[rows], lat[rows], errcheck=False)
        given = rows & np.isfinite(lon) & np.isfinite(lat)
        lost = given & ~(np.isfinite(x) & np.isfinite(y))
        if lost.any():
            raise InputError(
                f"{path}: {int(lost.sum())} point(s) in {datum_name(int(code))} lie outside "
                f"what PROJ's {transformer.description!r} covers (obs_id "
                f"{first_few(obs_id[lost])}); check their lon, lat and datum"
            )
    return x, y


def _best(code: int, rows: np.ndarray, obs_id: pd.Series, path: Path) -> pyproj.Transformer:
    """PROJ's best transformation of ``code`` to EPSG:3338; InputError when it needs a grid
    that is not installed."""
    with warnings.catch_warnings():  # the missing grid is said in the error below
        warnings.simplefilter("ignore", UserWarning)
        group = TransformerGroup(code, ALBERS, always_xy=True)
    if group.best_available and group.transformers:
        return group.transformers[0]
    missing = [g for op in group.unavailable_operations[:1] for g in op.grids if not g.available]
    names = ", ".join(g.short_name for g in missing) or "a grid"
    urls = ", ".join(g.url for g in missing if g.url) or "it from https://cdn.proj.org"
    sync = " and ".join(f"`pyproj sync --file {g.short_name}`" for g in missing)
    off = " (NAD27 without it: of the order of 100 to 200 m off)" if code == NAMES["nad27"] else ""
    raise InputError(
        f"{path}: {int(rows.sum())} point(s) in {datum_name(code)} (obs_id "
        f"{first_few(obs_id[rows])}) need PROJ's grid(s) {names} for its best transformation, "
        f"not a ballpark one{off}; download {urls} into "
        f"{pyproj.datadir.get_user_data_dir()}{f' (or, online, run {sync})' if sync else ''}, "
        "then run again"
    )
