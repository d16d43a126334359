"""Observation points -> the samples table: stack values, lattice pixel and labels.

Input: an observation table (CSV or Parquet) with columns ``obs_id, lon, lat, date`` and the
label column of every task (:mod:`mapper.tasks`; ``nsp, soil_order``), and optionally ``datum``:
longitude/latitude in degrees, in the row's datum (:mod:`mapper.datums`: WGS84 when empty or
without the column; NAD83, NAD27 or an EPSG code); the date ISO 8601 (``2019-07-15``,
``2019-07-15T10:30:00Z``, also ``2019-07`` or ``2019``; surrounding spaces ignored) or empty
(unknown: the pipeline does not use the date); a binary task's label 0/1, true/false or empty
(``nsp``: near-surface permafrost absent/present), a multiclass task's label one of its class
names or empty (``soil_order``: one of :data:`mapper.bands.SOIL_ORDERS`; names matched ignoring
case and surrounding spaces). :func:`check_observations` runs every check that needs the table
and the region only (not the stacks); the workflow runs it when it plans the samples job, so a
bad table stops the plan. Blank rows (every column empty, as spreadsheet exports leave them) are
skipped.

Output: one Parquet file, one row per kept point, with
    obs_id, date, lon, lat        as given (obs_id and date as strings; date stripped; lon, lat in
                                  the row's datum)
    x, y                          EPSG:3338 metres (the projected position, not the pixel centre)
    row, col, tile                the lattice pixel holding (x, y) and its tile id
    <label column> per task       nullable Int8: 0/1 (binary), class index (multiclass)
    <label column>_name           multiclass tasks: the class name, nullable string
                                  (so: nsp, soil_order, soil_order_name)
    <19 stack bands>              float32 stack values at the pixel (NaN where a covariate is
                                  missing; the Sentinel-2 bands and elevation are always finite)
and file metadata (key ``mapper``, JSON): region, synthetic flag, the observation table, the
counts of dropped points and the kept points per datum. The cross-validation folds are drawn
from it into a file of their own (:mod:`mapper.folds`), so that the folds' settings do not
retrain the maps' models. Points are dropped when they have no position (lon or lat empty),
lie outside the region's mapped area (its boundary buffered by ``buffer_m``), or sit on a pixel
that is not valid (:func:`mapper.normalise.valid`: no stack, or a Sentinel-2 band or the
elevation missing); any drop is logged as a WARNING (shown on the console) with the count per
reason, and the log lists up to 10 obs_id per reason.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyproj
import shapely
from rasterio.windows import Window

from mapper.bands import STACK_BANDS
from mapper.config import Region
from mapper.datums import DATUM_COLUMN, datum_name, parse_datums, positions, project
from mapper.errors import InputError, first_few
from mapper.files import atomic_path
from mapper.grid import coordinates_to
from mapper.normalise import valid_pixels
from mapper.observations import read_observations
from mapper.progress import bar as progress_bar
from mapper.raster import any_synthetic
from mapper.tasks import OBSERVATION_COLUMNS, TASKS, Task  # noqa: F401 - the columns, re-exported
from mapper.windows import StackReader, stacks_by_tile

logger = logging.getLogger(__name__)

LABEL_COLUMNS = [c for t in TASKS.values()
                 for c in (t.label_column, *([f"{t.label_column}_name"] if t.multiclass else []))]
"""Label columns of the samples table: per task its label, and a multiclass task's class name."""
SAMPLE_COLUMNS = (
    ["obs_id", "date", "lon", "lat", "x", "y", "row", "col", "tile", *LABEL_COLUMNS]
    + STACK_BANDS
)
METADATA_KEY = b"mapper"
WEST_HINT = "west longitudes must be negative (-147.7 for 147.7 W)"
PROJECTED_GUESSES = (
    "EPSG:3338",  # NAD83 / Alaska Albers, the pipeline's own
    *(f"EPSG:{26900 + zone}" for zone in range(1, 11)),  # NAD83 / UTM zones 1N-10N
    *(f"EPSG:{32600 + zone}" for zone in range(1, 11)),  # WGS 84 / UTM zones 1N-10N
    "EPSG:3857",  # WGS 84 / Pseudo-Mercator, web maps' exports
)
"""Projected CRSs an observation table of Alaska is most often exported in, tried (for the
message only) when no point lies in the region as degrees and the values cannot be degrees."""


# -- observations ---------------------------------------------------------------------------------


def _inside(boundary: shapely.Geometry, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x) & np.isfinite(y)
    out = np.zeros(len(x), dtype=bool)
    if ok.any():
        shapely.prepare(boundary)
        out[ok] = shapely.contains_xy(boundary, x[ok], y[ok])
    return out


def locate(region: Region, observations: str | Path, obs: pd.DataFrame) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """EPSG:3338 x, y of the points of ``obs`` and whether each lies in the region's mapped area.

    Errors (InputError, naming the file): a datum that cannot be transformed to metres
    (:func:`mapper.datums.positions`), no point in the region, saying so when the points are
    in it with lon and lat exchanged, or with the longitude negated (:func:`negated_inside`), or
    when the values are projected metres, not degrees (:func:`_projected_hint`).
    """
    n_read = len(obs)
    datums = obs[DATUM_COLUMN] if DATUM_COLUMN in obs else parse_datums(None, obs["obs_id"], None)
    x, y = positions(obs["lon"].to_numpy(), obs["lat"].to_numpy(), datums, obs["obs_id"],
                     Path(observations))
    boundary = region.area()
    inside = _inside(boundary, x, y)
    if not inside.any() and n_read:
        sx, sy = project(obs["lat"].to_numpy(), obs["lon"].to_numpy())
        swapped = int(_inside(boundary, sx, sy).sum())
        if swapped:
            raise InputError(
                f"{observations}: no point lies in region {region.name}, but {swapped} of "
                f"{n_read} do with lon and lat exchanged; the lon and lat columns look swapped"
            )
        negated = int(negated_inside(region, obs).sum())
        if negated:
            raise InputError(
                f"{observations}: no point lies in region {region.name}, but {negated} of "
                f"{n_read} do with the longitude negated; {WEST_HINT}: fix the lon column"
            )
        projected = _projected_hint(region, obs)
        if projected:
            raise InputError(f"{observations}: no point lies in region {region.name}; {projected}")
        raise InputError(
            f"{observations}: none of its {n_read} points lies in region {region.name}; check "
            "the table is for this region (lon/lat in degrees, WGS84 unless a datum column says "
            "otherwise)"
        )
    return x, y, inside


def _projected_hint(region: Region, obs: pd.DataFrame) -> str:
    """What to say when the table's lon and lat cannot be degrees (a value past 360 or a latitude
    past 90 in every row with a position): they look like projected metres. Names the CRS of
    :data:`PROJECTED_GUESSES` that puts the most points in the region when read as its x, y (a
    hint: neighbouring UTM zones may fit nearly as well); empty when the values can be degrees."""
    lon, lat = (obs[c].to_numpy(dtype=float, na_value=np.nan) for c in ("lon", "lat"))
    given = np.isfinite(lon) & np.isfinite(lat)
    if not given.any() or not ((np.abs(lon) > 360) | (np.abs(lat) > 90))[given].all():
        return ""
    boundary, n = region.area(), int(given.sum())
    xy = np.column_stack([lon[given], lat[given]])
    fits = {crs: int(_inside(boundary, *coordinates_to(crs, "EPSG:3338")(xy).T).sum())
            for crs in PROJECTED_GUESSES}
    best = max(fits, key=fits.get)
    where = (f"read as x, y of {best} ({pyproj.CRS.from_user_input(best).name}), {fits[best]} of "
             f"{n} lie in it; " if fits[best] else "")
    return (f"its lon and lat are not degrees (lon {lon[given][0]:g}, lat {lat[given][0]:g}) but "
            f"look like projected metres: {where}give lon and lat in decimal degrees (WGS84, or "
            "the datum column's), for example with pyproj: Transformer.from_crs('<the table's "
            "CRS>', 'EPSG:4326', always_xy=True).transform(x, y)")


def negated_inside(region: Region, obs: pd.DataFrame) -> np.ndarray:
    """Whether each point has a positive longitude and would lie in the region's mapped area with
    it negated (degrees west given as positive). A hint for messages only: a longitude past 180
    (212.5 for -147.5) is valid and nothing is ever negated."""
    lon = obs["lon"].to_numpy()
    east = np.nan_to_num(lon) > 0
    x, y = project(np.where(east, -lon, np.nan), obs["lat"].to_numpy())
    return _inside(region.area(), x, y)


def check_observations(region: Region, observations: str | Path) -> pd.DataFrame:
    """Every check of the samples job that needs no stack: :func:`read_observations` and
    :func:`locate` (the workflow runs it when it plans the samples job); the table read."""
    obs = read_observations(observations)
    locate(region, observations, obs)
    return obs


def labelled_in_region(region: Region, observations: str | Path) -> dict[str, int]:
    """Points of the observation table inside ``region``'s mapped area that carry each task's
    label (:mod:`mapper.tasks`), by task name: what fine-tuning a task's model can train on
    (before the stacks drop points on nodata). The workflow refuses a task's map at plan time
    when its count is 0."""
    from mapper.tasks import TASKS

    obs = read_observations(observations)
    _, _, inside = locate(region, observations, obs)
    return {name: int((obs[spec.label_column].notna().to_numpy() & inside).sum())
            for name, spec in TASKS.items()}


# -- sampling -------------------------------------------------------------------------------------


def sample_stacks(reader: StackReader, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Stack values [N, 19] float32 at lattice pixels (NaN where no stack covers the pixel)."""
    out = np.full((len(rows), len(STACK_BANDS)), np.nan, dtype=np.float32)
    with progress_bar(len(rows), "samples", "point") as points:
        for i, (r, c) in enumerate(zip(rows, cols, strict=True)):
            out[i] = reader.read(Window(int(c), int(r), 1, 1))[:, 0, 0]
            points.update()
    return out


def build_samples(
    region: Region,
    observations: str | Path,
    stacks: Iterable[str | Path],
    out: str | Path,
) -> pd.DataFrame:
    """Build and write the samples table of ``region`` (module doc); returns it."""
    out = Path(out)
    obs = read_observations(observations)
    n_read = len(obs)
    x, y, inside = locate(region, observations, obs)
    has_pos = np.isfinite(x) & np.isfinite(y)
    lattice = region.lattice
    rows, cols = lattice.pixels_of(np.where(inside, x, 0.0), np.where(inside, y, 0.0))
    values = np.full((n_read, len(STACK_BANDS)), np.nan, dtype=np.float32)
    stack_paths = [Path(p) for p in stacks]
    with StackReader(stacks_by_tile(stack_paths), lattice) as reader:
        values[inside] = sample_stacks(reader, rows[inside], cols[inside])
    ok = inside & valid_pixels(values)
    counts = {
        "read": n_read,
        "no_position": int((~has_pos).sum()),
        "outside": int((has_pos & ~inside).sum()),
        "nodata": int((inside & ~ok).sum()),
        "kept": int(ok.sum()),
    }
    dropped = {"without position": ~has_pos, f"outside region {region.name}": has_pos & ~inside,
               "on nodata": inside & ~ok}
    west = int((negated_inside(region, obs) & ~inside).sum()) if counts["outside"] else 0
    logger.log(
        logging.WARNING if counts["kept"] < n_read else logging.INFO,
        "%s: %d points read; dropped %d without position, %d outside region %s, %d on nodata; "
        "kept %d%s", observations, n_read, counts["no_position"], counts["outside"], region.name,
        counts["nodata"], counts["kept"],
        f"; {west} of those outside would lie in it with the longitude negated: {WEST_HINT}, "
        "fix those rows" if west else "",
    )
    for reason, lost in dropped.items():
        if lost.any():
            ids = obs["obs_id"][lost]
            logger.info("dropped %s: obs_id %s", reason, first_few(ids, 10))
    if not ok.any():
        raise InputError(
            f"{observations}: every point in region {region.name} is on nodata (no stack, "
            "imagery or elevation there); check the stacks passed cover the region"
        )
    table = obs[ok].reset_index(drop=True)
    table["x"], table["y"] = x[ok], y[ok]
    table["row"], table["col"] = rows[ok], cols[ok]
    table["tile"] = pd.array(
        [lattice.tile_of_xy(float(a), float(b)) for a, b in zip(x[ok], y[ok], strict=True)],
        dtype="string",
    )
    for b, name in enumerate(STACK_BANDS):
        table[name] = values[ok, b]
    shared = table.duplicated(["row", "col"], keep=False).to_numpy()
    if shared.any():  # not lost, so not a warning
        logger.info(
            "%s: %d kept points share a pixel with another (obs_id %s): they have the same stack "
            "values, so the Random split keeps each pixel's points in one fold; check they are "
            "not one observation entered twice", observations, int(shared.sum()),
            first_few(table["obs_id"][shared], 10))
    # checked here too, before any model trains on them (the folds job checks it again: the
    # samples are not remade when evaluation.folds changes)
    evaluation = region.settings["evaluation"]
    if counts["kept"] < int(evaluation["folds"]):
        raise InputError(
            f"{observations}: {counts['kept']} of {n_read} points kept (dropped "
            f"{counts['no_position']} without position, {counts['outside']} outside region "
            f"{region.name}, {counts['nodata']} on nodata) cannot fill evaluation.folds "
            f"{evaluation['folds']} of {region.path}; add observations or lower it"
        )
    kept_datums = table[DATUM_COLUMN].value_counts().sort_index()
    table = table[SAMPLE_COLUMNS]
    logger.info("labels: %s", "; ".join(_label_summary(table, t) for t in TASKS.values()))
    for task in TASKS.values():
        if table[task.label_column].isna().all():
            logger.warning("%s: no point kept in region %s has a %s label: the %s map cannot be "
                           "trained", observations, region.name, task.label_column, task.name)
    # a real region's stacks made from a synthetic file (the demo's DEM) make its figures
    # synthetic too: the folds and the reports carry this flag (mapper.raster.any_synthetic)
    synthetic_stacks = any_synthetic(stack_paths)
    meta = {
        "region": region.name,
        "synthetic": region.synthetic or synthetic_stacks,
        "observations": str(observations),
        "counts": counts,
        "datums": {datum_name(int(code)): int(n) for code, n in kept_datums.items()},
        "note": ("SYNTHETIC observations" if region.synthetic
                 else "stacks made from SYNTHETIC files" if synthetic_stacks else ""),
    }
    write_samples(table, out, meta)
    return table


def write_samples(table: pd.DataFrame, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write the table as Parquet (atomically) with ``meta`` as JSON under key ``mapper``."""
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema_meta = dict(arrow.schema.metadata or {})
    schema_meta[METADATA_KEY] = json.dumps(meta, sort_keys=True).encode()
    arrow = arrow.replace_schema_metadata(schema_meta)
    with atomic_path(out) as tmp:
        pq.write_table(arrow, tmp)
    return Path(out)


def read_samples(path: str | Path) -> pd.DataFrame:
    """Read a samples table written by :func:`build_samples` (columns checked)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: samples table not found; run `python -m mapper samples` first")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"{path}: not a readable Parquet table ({exc}); rebuild it") from None
    missing = [c for c in SAMPLE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            f"{path}: not a samples table (missing {', '.join(missing[:6])}); rebuild it with "
            "`python -m mapper samples`"
        )
    return table


def samples_metadata(path: str | Path) -> dict[str, Any]:
    """The ``mapper`` metadata dict of a samples table (empty if absent); InputError for a
    missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: samples table not found; run `python -m mapper samples` first")
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else {}
    except (OSError, ValueError, pa.ArrowException) as exc:  # not Parquet, damaged metadata
        raise InputError(f"{path}: not a readable Parquet table ({exc}); rebuild it with "
                         "`python -m mapper samples`") from None


def observed_in(samples: str | Path | pd.DataFrame) -> str:
    """`` (observation table <path>)`` of a samples file that records it, else nothing: for
    messages about the labels of its points."""
    if isinstance(samples, pd.DataFrame):
        return ""
    observations = samples_metadata(samples).get("observations")
    return f" (observation table {observations})" if observations else ""


def region_samples_metadata(path: str | Path, region: str) -> dict[str, Any]:
    """:func:`samples_metadata` of a table that must hold ``region``'s samples (their rows and
    columns are positions on that region's stacks): InputError for another region's."""
    meta = samples_metadata(path)
    if meta.get("region") not in (None, region):
        raise InputError(
            f"{path}: samples of region {meta['region']}, not {region}; give "
            f"results/{region}/samples/points.parquet"
        )
    return meta


def _label_summary(table: pd.DataFrame, task: Task) -> str:
    """``<n> <task> (<count> per class)`` for the log."""
    labels = table[task.label_column]
    counts = labels.value_counts().sort_index()
    shown = ", ".join(f"{task.classes[int(k)]} {v}" for k, v in counts.items())
    return f"{int(labels.notna().sum())} {task.name} ({shown})"
