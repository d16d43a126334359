"""SNAP climate archives in the layout of SNAP's 2 km CRU TS 4.0 downloads, for tests.

``pr_AK_CAN_2km_CRU_TS40_historical.zip`` holds ``pr/pr_total_mm_CRU_TS40_historical_MM_YYYY.tif``
(likewise ``tas/`` and ``tasmin/``): single-band float32 GeoTIFFs in EPSG:3338 at 2 km with nodata
-9999, LZW, on a 4 x 5 px grid instead of SNAP's thousands of pixels. The values are SYNTHETIC
(:func:`field`), chosen so that the normals can be worked out by hand.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile

SHAPE = (4, 5)
TRANSFORM = Affine(2000.0, 0.0, 250_000.0, 0.0, -2000.0, 1_700_000.0)
PREFIXES = {
    "pr": "pr_total_mm_CRU_TS40_historical",
    "tas": "tas_mean_C_CRU_TS40_historical",
    "tasmin": "tasmin_mean_C_CRU_TS40_historical",
}
REGION_BOUNDS = (249_920.0, 1_639_680.0, 250_560.0, 1_640_000.0)
PERIOD = [2000, 2001]  # 2000 is a leap year
YEARS = [1999, 2000, 2001, 2002]  # the archives hold years outside the period too
OUTSIDE = 1.0e4  # every value of a year outside the period: any trace of it shows

# Where the fixtures put nodata (row, col): pr in July 2001 (-9999); tas in March 2000 as
# -3.4e38 (SNAP's other nodata, not the file's tag); tasmin in January 2001 (-9999).
PR_HOLE, TAS_HOLE, TASMIN_HOLE = (1, 1), (2, 3), (0, 4)


def field(variable: str, year: int, month: int) -> np.ndarray:
    """The fixture's monthly values (see the expected values in the tests)."""
    if year not in PERIOD:
        return np.full(SHAPE, OUTSIDE, np.float32)
    if variable == "pr":  # month number in mm, plus 10 mm a month in 2001
        values = np.full(SHAPE, month + 10.0 * (year - 2000), np.float32)
        if (year, month) == (2001, 7):
            values[PR_HOLE] = -9999.0
    elif variable == "tas":  # column 0 at +2 C all year; elsewhere month - 6.5 C
        values = np.full(SHAPE, month - 6.5, np.float32)
        values[:, 0] = 2.0
        if (year, month) == (2000, 3):
            values[TAS_HOLE] = -3.4e38
    else:  # tasmin: -20 C in January 2000, -31 C in January 2001, +50 C in other months
        values = np.full(SHAPE, 50.0, np.float32)
        if month == 1:
            values[:] = -20.0 if year == 2000 else -31.0
        if (year, month) == (2001, 1):
            values[TASMIN_HOLE] = -9999.0
    return values


def geotiff(values: np.ndarray, transform: Affine | None = None) -> bytes:
    """A single-band float32 GeoTIFF as SNAP writes them (EPSG:3338, nodata -9999, LZW)."""
    with MemoryFile() as mem:
        with mem.open(driver="GTiff", height=values.shape[0], width=values.shape[1], count=1,
                      dtype="float32", crs="EPSG:3338", transform=transform or TRANSFORM,
                      nodata=-9999.0,
                      compress="lzw") as dst:  # fmt: skip
            dst.write(values.astype(np.float32), 1)
        return mem.read()


def archive_bytes(variable: str, *, skip: tuple[int, int] | None = None,
                  members: dict[str, bytes] | None = None, prefix: str | None = None,
                  compression: int = zipfile.ZIP_DEFLATED,
                  transform: Affine | None = None) -> bytes:  # fmt: skip
    """The zip of one variable: ``<variable>/<prefix>_MM_YYYY.tif`` for every month of YEARS
    (less ``skip``, a (year, month)) on the grid of ``transform`` (default TRANSFORM);
    ``members`` replaces members' bytes by name."""
    prefix = prefix or PREFIXES[variable]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for year in YEARS:
            for month in range(1, 13):
                if (year, month) == skip:
                    continue
                name = f"{variable}/{prefix}_{month:02d}_{year}.tif"
                data = (members or {}).get(name) or geotiff(field(variable, year, month), transform)
                info = zipfile.ZipInfo(name, date_time=(2017, 9, 15, 0, 0, 0))  # same bytes
                info.compress_type = compression  # every call: checksums can be pinned
                zf.writestr(info, data)
    return buf.getvalue()


def write_archives(folder: Path, **overrides: bytes) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for variable in PREFIXES:
        paths[variable] = folder / f"snap_{variable}.zip"
        paths[variable].write_bytes(overrides.get(variable) or archive_bytes(variable))
    return paths
