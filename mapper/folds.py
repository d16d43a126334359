"""The cross-validation folds of a samples table, in a file of their own.

    build_folds(region, samples, out)             # the workflow's rule folds
    table = samples_with_folds(region, samples, folds)   # what a cross-validation fold reads

The folds are drawn (:func:`mapper.splits.make_folds`) from the points' positions with
``evaluation.folds`` and ``training.seed``. They are kept apart from the samples table, which
pretraining and fine-tuning read and which does not depend on them: so another fold count reruns
the folds and the cross-validation, not the maps' models, and another seed (which retrains
everything) remakes the folds before the folds' jobs read them.

Output: one Parquet file, one row per row of the samples table, in its order:
    obs_id, x, y                            as in the samples table (checked when read)
    fold_random, fold_sh1km, fold_sh10km    int8 fold per split
and file metadata (key ``mapper``, JSON): region, synthetic flag, the samples table's path,
folds and seed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mapper.config import Region
from mapper.errors import InputError
from mapper.experiment import SPLITS
from mapper.files import atomic_path
from mapper.samples import read_samples, region_samples_metadata
from mapper.splits import fold_column, make_folds
from mapper.training_settings import fold_draw

logger = logging.getLogger(__name__)

FOLD_COLUMNS = [fold_column(s) for s in SPLITS]
METADATA_KEY = b"mapper"


def build_folds(region: Region, samples: str | Path, out: str | Path) -> pd.DataFrame:
    """Draw the folds of the samples table ``samples`` of ``region`` and write them to ``out``
    (module doc); the folds table."""
    table = read_samples(samples)
    meta = region_samples_metadata(samples, region.name)
    draw = fold_draw(region.settings)
    if len(table) < draw["folds"]:
        counts = meta.get("counts", {})
        dropped = (f" (dropped {counts.get('no_position', 0)} without position, "
                   f"{counts.get('outside', 0)} outside region {region.name}, "
                   f"{counts.get('nodata', 0)} on nodata)") if counts else ""
        raise InputError(
            f"{samples}: {len(table)} points{dropped} cannot fill evaluation.folds "
            f"{draw['folds']} of {region.path}; add observations or lower it"
        )
    folds = pd.DataFrame({"obs_id": table["obs_id"].astype(str).to_numpy(),
                          "x": table["x"].to_numpy(np.float64),
                          "y": table["y"].to_numpy(np.float64)})
    pixels = table[["row", "col"]].to_numpy(np.int64)
    try:
        drawn = make_folds(folds[["x", "y"]].to_numpy(), draw["folds"], draw["seed"], pixels)
    except InputError as exc:  # the table and the region file it is about
        raise InputError(f"{samples}: {exc} ({region.path})") from None
    for col, fold in drawn.items():
        folds[col] = fold
    info = {"region": region.name, "synthetic": region.synthetic, "samples": str(samples), **draw,
            "note": "folds of SYNTHETIC observations" if region.synthetic else ""}
    arrow = pa.Table.from_pandas(folds, preserve_index=False)
    schema_meta = {**(arrow.schema.metadata or {}),
                   METADATA_KEY: json.dumps(info, sort_keys=True).encode()}
    with atomic_path(out) as tmp:
        pq.write_table(arrow.replace_schema_metadata(schema_meta), tmp)
    for col in FOLD_COLUMNS:
        logger.info("%s: fold sizes %s", col,
                    np.bincount(folds[col], minlength=draw["folds"]).tolist())
    return folds


def read_folds(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A folds table written by :func:`build_folds` and its metadata (columns checked)."""
    path = Path(path)
    remake = "make it with `python -m mapper folds` (the workflow's rule folds)"
    if not path.is_file():
        raise InputError(f"{path}: folds table not found; {remake}")
    try:
        folds = pd.read_parquet(path)
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # noqa: BLE001  (not Parquet, damaged)
        raise InputError(f"{path}: not a readable Parquet table ({exc}); {remake}") from None
    missing = [c for c in ("obs_id", "x", "y", *FOLD_COLUMNS) if c not in folds.columns]
    if missing or METADATA_KEY not in meta:
        what = f"missing {', '.join(missing)}" if missing else "no metadata"
        raise InputError(f"{path}: not a folds table ({what}); {remake}")
    return folds, json.loads(meta[METADATA_KEY])


def samples_with_folds(region: Region, samples: str | Path, folds: str | Path) -> pd.DataFrame:
    """The samples table ``samples`` with the fold columns of ``folds``, checked to be drawn for
    these points, in this region, with the region's ``evaluation.folds`` and ``training.seed``:
    otherwise one error naming the folds file and the command that remakes it."""
    table = read_samples(samples)
    region_samples_metadata(samples, region.name)
    drawn, meta = read_folds(folds)
    remake = f"remake it: snakemake --cores 1 -f {folds}"
    if meta.get("region") != region.name:
        raise InputError(f"{folds}: folds of region {meta.get('region')}, not {region.name}; "
                         f"give results/{region.name}/samples/folds.parquet")
    draw = fold_draw(region.settings)
    made = {key: meta.get(key) for key in draw}
    if made != draw:
        raise InputError(
            f"{folds}: drawn with folds {made['folds']}, seed {made['seed']}; the run's settings "
            f"say folds {draw['folds']}, seed {draw['seed']}; {remake}, or set the settings back"
        )
    same = (len(drawn) == len(table)
            and np.array_equal(drawn["obs_id"].astype(str).to_numpy(),
                               table["obs_id"].astype(str).to_numpy())
            and np.array_equal(drawn[["x", "y"]].to_numpy(np.float64),
                               table[["x", "y"]].to_numpy(np.float64)))
    if not same:
        raise InputError(
            f"{folds}: drawn for other points than those of {samples} ({len(drawn)} against "
            f"{len(table)}, or other ids or positions: the samples were remade since); {remake}"
        )
    for col in FOLD_COLUMNS:
        table[col] = drawn[col].to_numpy()
    return table
