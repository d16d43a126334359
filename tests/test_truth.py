"""Truth read at points: the pixel that holds a point, edges, outside and nodata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

from mapper.raster import write_geotiff
from mapper.truth import truth_at


def test_truth_at_reads_the_pixel_holding_each_point(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(3, 4)  # row r, col c holds 4 r + c
    values[2, 3] = -1.0  # nodata
    left, top = 300_000.0, 1_600_000.0
    path = tmp_path / "truth.tif"
    write_geotiff(
        path, values[None], Affine(10.0, 0.0, left, 0.0, -10.0, top), "EPSG:3338", nodata=-1.0
    )
    x = np.array([left + 5, left + 15, left + 10.0, left + 39.9, left - 0.1, left + 35, left + 5])
    y = np.array([top - 5, top - 25, top - 0.0, top - 29.9, top - 5, top - 25, top + 0.1])
    got = truth_at(path, x, y)
    # centre (0, 0); centre (2, 1); a pixel's west and north edges are its own (0, 1); the last
    # pixel's inside corner (2, 3) is nodata; west of the raster; (2, 3) nodata; north of it
    np.testing.assert_array_equal(got[:3], [0.0, 9.0, 1.0])
    assert np.isnan(got[3:]).all()
