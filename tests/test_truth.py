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


def test_a_truth_raster_off_the_lattice_or_of_the_other_task_is_refused(tmp_path: Path) -> None:
    """Read at the points anyway, a truth in another CRS would hold none of them (an empty
    comparison) and a class raster given for NSP would give figures of no meaning."""
    import pandas as pd
    import pytest

    from mapper.errors import InputError
    from mapper.truth import truth_agreement

    left, top = 300_000.0, 1_600_000.0
    utm = tmp_path / "utm.tif"
    write_geotiff(utm, np.zeros((1, 3, 3), np.float32),
                  Affine(10.0, 0.0, left, 0.0, -10.0, top), "EPSG:32606")
    with pytest.raises(InputError, match=r"utm.tif: a truth raster in EPSG:32606, not EPSG:3338"):
        truth_at(utm, np.array([left + 5]), np.array([top - 5]))
    classes = tmp_path / "soilorder.tif"
    write_geotiff(classes, np.zeros((1, 3, 3), np.uint8),
                  Affine(10.0, 0.0, left, 0.0, -10.0, top), "EPSG:3338")
    preds = pd.DataFrame({"x": [left + 5], "y": [top - 5], "split": ["random"],
                          "model": ["miso"], "y_true": [1], "y_pred": [1],
                          "p_absent": [0.2], "p_present": [0.8]})
    with pytest.raises(InputError, match=r"soilorder.tif: a class index raster, not the truth "
                                         r"of nsp"):
        truth_agreement("nsp", preds, classes)


def test_a_truth_raster_whose_blocks_fail_to_read_is_named(tmp_path: Path) -> None:
    import pytest
    from damage import zero_blocks

    from mapper.errors import InputError

    path = tmp_path / "nsp.tif"
    write_geotiff(path, np.zeros((1, 3, 3), np.float32),
                  Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 1_600_000.0), "EPSG:3338")
    zero_blocks(path, path)
    with pytest.raises(InputError, match=rf"^{path}: damaged or truncated, read failed \(.*\); "
                                         r"make the demo's sources again"):
        truth_at(path, np.array([300_005.0]), np.array([1_599_995.0]))
