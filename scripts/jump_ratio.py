"""Grain of a map on a pixel lattice: the jump ratio across lines at multiples of 32 and 16 px.

    python scripts/jump_ratio.py maps/nsp_demo.tif [--band 1] [--config CONFIG]
                                 [--raster-origin] [--periods 16 32 24]

For neighbouring pixels (left-right and up-down pairs, both valid), the absolute difference of
their values. A pair straddles the line at global pixel edge ``g`` (the left/top pixel is
``g - 1``, the right/bottom one ``g``), counted from the lattice origin of the config's ``grid``
(default; ``--config``, default this project's ``config/config.yaml``, read by
:func:`mapper.config.load_config` from the project's folder, whatever the current one) or from
the raster's own upper-left corner (``--raster-origin``; the demo maps start on the tile lattice,
so both agree there). Printed, for columns and rows pooled and separately:

- the jump ratio at multiples of 32 px: mean |difference| across lines with ``g % 32 == 0``
  over the mean across lines that are not multiples of 16 px;
- the same at odd multiples of 16 px (``g % 32 == 16``);
- for each period P of ``--periods``, the profile of the mean |difference| over the phase
  ``g % P`` relative to its overall mean, and the largest phase ratio (the most prominent line
  against the rest). A map without lattice grain has every ratio near 1.

Values are read as float: a UInt8 percent map (nodata 255) or a float probability map (nodata
NaN or the file's nodata). One line per figure; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parent.parent


def read_band(path: Path, band: int) -> tuple[np.ndarray, rasterio.Affine]:
    """Band ``band`` as float64 with NaN where it is nodata, and the raster's transform."""
    with rasterio.open(path) as ds:
        data = ds.read(band).astype(np.float64)
        nodata = ds.nodatavals[band - 1]
        transform = ds.transform
    if nodata is not None and np.isfinite(nodata):
        data[data == nodata] = np.nan
    return data, transform


def lattice_offset(transform: rasterio.Affine, origin: tuple[float, float] | None,
                   res: float | None) -> tuple[int, int]:
    """(row, col) of the raster's first pixel on the lattice (0, 0 for the raster origin)."""
    if origin is None:
        return 0, 0
    step = res if res is not None else transform.a
    if abs(transform.a - step) > 1e-9 * step or abs(-transform.e - step) > 1e-9 * step:
        print(f"note: pixel size {transform.a:g} m is not the lattice's {step:g} m; lines are "
              "counted in map pixels from the lattice origin", file=sys.stderr)
        step = transform.a
    col = (transform.c - origin[0]) / step
    row = (origin[1] - transform.f) / step
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        raise SystemExit(f"raster corner ({transform.c}, {transform.f}) is not on the lattice "
                         f"from origin {origin}; use --raster-origin")
    return int(round(row)), int(round(col))


def lattice_grid(config: Path) -> tuple[tuple[float, float], float]:
    """The lattice origin (x, y) and resolution of ``config``'s ``grid`` (the top-level config
    validated, defaults filled; its region files are not read, so a config of any project
    does); a bad or missing config is one error line."""
    from mapper.config import read_yaml
    from mapper.errors import MapperError
    from mapper.schema import validate

    try:
        path = config.resolve()  # as given, from the current folder
        grid = validate(read_yaml(path), "config.schema.yaml", path)["grid"]
    except MapperError as err:
        raise SystemExit(f"error: {err}") from None
    return (float(grid["origin"][0]), float(grid["origin"][1])), float(grid["res"])


def pair_differences(data: np.ndarray, offset: tuple[int, int]) -> dict[str, tuple[np.ndarray,
                                                                                    np.ndarray]]:
    """Per axis: |differences| of valid neighbour pairs and the global line index ``g`` of each."""
    r0, c0 = offset
    h, w = data.shape
    dx = np.abs(data[:, 1:] - data[:, :-1])  # pair (c, c + 1): line g = c0 + c + 1
    gx = np.broadcast_to(c0 + np.arange(1, w), dx.shape)
    dy = np.abs(data[1:, :] - data[:-1, :])  # pair (r, r + 1): line g = r0 + r + 1
    gy = np.broadcast_to((r0 + np.arange(1, h))[:, None], dy.shape)
    out = {}
    for name, d, g in (("columns", dx, gx), ("rows", dy, gy)):
        ok = np.isfinite(d)
        out[name] = (d[ok], g[ok])
    return out


def ratio(d: np.ndarray, g: np.ndarray, on: np.ndarray) -> float:
    """Mean of ``d`` where ``on`` over the mean where ``g`` is not a multiple of 16."""
    off = g % 16 != 0
    if not on.any() or not off.any():
        return float("nan")
    return float(d[on].mean() / d[off].mean())


def phase_profile(d: np.ndarray, g: np.ndarray, period: int) -> np.ndarray:
    """Mean |difference| at each phase ``g % period`` over the overall mean."""
    phase = g % period
    sums = np.bincount(phase, weights=d, minlength=period)
    counts = np.bincount(phase, minlength=period)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts) / d.mean()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("map", type=Path)
    ap.add_argument("--band", type=int, default=1)
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "config.yaml",
                    help="config whose grid origin counts the lines (default: this project's "
                         "config/config.yaml)")
    ap.add_argument("--raster-origin", action="store_true",
                    help="count lines from the raster's upper-left corner instead")
    ap.add_argument("--periods", type=int, nargs="*", default=[16, 32],
                    help="periods (px) whose phase profiles are printed (default 16 32)")
    args = ap.parse_args()
    if not args.map.is_file():
        print(f"error: {args.map}: no such map; make it first (e.g. make demo)", file=sys.stderr)
        return 2
    origin = res = None
    if not args.raster_origin:
        origin, res = lattice_grid(args.config)
    data, transform = read_band(args.map, args.band)
    offset = lattice_offset(transform, origin, res)
    pairs = pair_differences(data, offset)
    d = np.concatenate([pairs["columns"][0], pairs["rows"][0]])
    g = np.concatenate([pairs["columns"][1], pairs["rows"][1]])
    print(f"{args.map}: {data.shape[1]} x {data.shape[0]} px, {d.size} valid neighbour pairs, "
          f"lines counted from {'the raster corner' if args.raster_origin else 'the lattice'} "
          f"(first pixel at row {offset[0]}, col {offset[1]})")
    print(f"mean |difference| of neighbours: {d.mean():.4f}")
    for name, (dd, gg) in [("both", (d, g)), *pairs.items()]:
        r32 = ratio(dd, gg, gg % 32 == 0)
        r16 = ratio(dd, gg, gg % 32 == 16)
        print(f"jump ratio ({name}): multiples of 32 px {r32:.3f}; odd multiples of 16 px "
              f"{r16:.3f}")
    for period in args.periods:
        prof = phase_profile(d, g, period)
        top = int(np.nanargmax(prof))
        rest = np.delete(prof, top)
        print(f"period {period} px: largest phase ratio {prof[top] / np.nanmean(rest):.3f} at "
              f"phase {top}; profile " + " ".join(f"{v:.2f}" for v in prof))
    return 0


if __name__ == "__main__":
    sys.exit(main())
