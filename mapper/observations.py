"""Reading a region's field observation table: the one input a user supplies.

:func:`read_observations` reads a CSV or Parquet table and checks it (:mod:`mapper.samples`
says what its columns hold); every problem is one InputError naming the file and the fix.
:mod:`mapper.samples` places the points in the region and samples the stacks at them.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapper.datums import DATUM_COLUMN, parse_datums
from mapper.errors import InputError, first_few
from mapper.tasks import OBSERVATION_COLUMNS, TASKS, Task

logger = logging.getLogger("mapper.samples")  # its records are the samples job's log

NA_TEXT = ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
           "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null")
"""Text read as missing in every column but obs_id (pandas' default list, read_csv na_values)."""
COLUMN_ALIASES = {
    "id": "obs_id", "pedon_id": "obs_id", "peiid": "obs_id", "site_id": "obs_id",
    "siteiid": "obs_id", "longitude": "lon", "long": "lon", "lng": "lon", "x": "lon",
    "longstddecimaldegrees": "lon", "latitude": "lat", "y": "lat",
    "latstddecimaldegrees": "lat", "obsdate": "date", "obs_date": "date", "permafrost": "nsp",
    "soilorder": "soil_order", "taxorder": "soil_order", "order": "soil_order",
}
"""Column names of common exports (NASIS pedons, spreadsheets) and the column each means, for
the error of a table without the expected names (never renamed silently)."""

ISO_DATE = r"(?:\d{4}-\d{2}-\d{2}|\d{8})(?:[T ]\d{2}(?::|\d{2}|$)|$)|\d{4}(?:-\d{2})?$"
"""The shape of an ISO 8601 date (YYYY-MM-DD or YYYYMMDD, optionally then a time; or YYYY-MM,
YYYY); pandas' ISO 8601 parser, which checks the values, also takes 2019/07/15 or 2019 07 15."""


def read_observations(path: str | Path) -> pd.DataFrame:
    """Read and check an observation table; every task's label parsed to Int8 (module doc).

    Rows with every column empty are dropped (their count logged). Errors (InputError, naming
    the file): unreadable file, missing columns, an empty obs_id (data row numbers, counted from
    1 after the header), duplicate obs_id, dates that are not ISO 8601 (count and up to 5
    obs_id), binary labels other than 0/1 or true/false, unknown class names (listing them and
    the allowed ones). An empty date is allowed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: observation table not found; check the observations source")
    with open(path, "rb") as f:
        magic = f.read(4)
    parquet = magic == b"PAR1"  # Parquet's magic number: a table under any file name
    parquet = parquet or path.suffix.lower() in (".parquet", ".pq")
    if magic in (b"PK\x03\x04", b"\xd0\xcf\x11\xe0"):  # a zip (.xlsx, .ods) or an old .xls
        raise InputError(
            f"{path}: a spreadsheet workbook, not a table file; save its sheet as CSV UTF-8 "
            "(comma delimited) under that name"
        )
    try:
        if parquet:
            table = pd.read_parquet(path)
        else:
            header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
            raw_header = [str(c) for c in header.iloc[0]] if len(header) else []
            columns = pd.read_csv(path, nrows=0).columns
            names = _column_names(columns)
            text = {raw: str for raw in columns
                    if names.get(raw, raw) in ("obs_id", "date", DATUM_COLUMN, *(
                        t.label_column for t in TASKS.values() if t.multiclass))}  # fmt: skip
            # an obs_id is never read as missing (NA, None, null are ids)
            missing_text = {raw: list(NA_TEXT) for raw in columns
                            if names.get(raw, raw) != "obs_id"}
            table = _read_csv(path, dtype=text, keep_default_na=False,
                              na_values=missing_text)
    except UnicodeDecodeError:
        data = path.read_bytes()
        try:
            data.decode("utf-8")
            where = ""
        except UnicodeDecodeError as bad:
            line = data[:bad.start].count(b"\n") + 1
            where = f"byte {data[bad.start]:#04x} on line {line}: "
        raise InputError(
            f"{path}: not UTF-8 text ({where}a spreadsheet's own encoding, e.g. "
            "Windows-1252); save it as CSV UTF-8"
        ) from None
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types
        raise InputError(
            f"{path}: cannot be read as a CSV or Parquet table ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())}); "
            "fix or replace the file"
        ) from None
    _check_repeated(path, [str(c) for c in table.columns] if parquet else raw_header)
    table = table.rename(columns=_column_names(table.columns))
    missing = [c for c in OBSERVATION_COLUMNS if c not in table.columns]
    if missing:
        header = ",".join(map(str, table.columns))
        hint = ("; the header looks separated by ';' or tabs: save the table as comma-separated "
                "CSV" if len(table.columns) == 1 and any(c in header for c in ";\t") else "")
        found = ", ".join(map(str, table.columns)) or "none"
        renames = [f"{c} -> {COLUMN_ALIASES[c.strip().lower()]}" for c in map(str, table.columns)
                   if COLUMN_ALIASES.get(c.strip().lower()) in missing]
        rename = f"; rename {', '.join(renames)}" if renames else ""
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)} (its columns: {found}); an "
            f"observation table needs {', '.join(OBSERVATION_COLUMNS)} (date and the labels may "
            f"be empty){rename}{hint}"
        )
    blank = _blank_rows(table)
    number = np.flatnonzero(~blank) + 1  # data row number of each kept row, from 1
    if blank.any():
        logger.info("%s: skipped %d blank row(s)", path, int(blank.sum()))
        table = table[~blank].reset_index(drop=True)
    if table.empty:
        only = "a header and blank rows" if blank.any() else "a header"
        raise InputError(f"{path}: no rows (only {only}); add the observations, one per row")
    out = pd.DataFrame({
        "obs_id": table["obs_id"].astype("string"),
        "lon": pd.to_numeric(table["lon"], errors="coerce").astype("float64"),
        "lat": pd.to_numeric(table["lat"], errors="coerce").astype("float64"),
    })
    stripped = out["obs_id"].str.strip()
    no_id = stripped.fillna("").eq("").to_numpy(bool)
    if no_id.any():
        raise InputError(
            f"{path}: {int(no_id.sum())} row(s) without an obs_id: data row(s) "
            f"{first_few(number[no_id])} (counted from 1 after the header, empty lines not "
            "counted); fill obs_id or delete the row(s)"
        )
    dup = stripped[stripped.duplicated()].unique()
    if len(dup):
        raise InputError(f"{path}: obs_id must be unique (ignoring surrounding spaces); repeated: "
                         f"{first_few(dup)}; give each row its own obs_id")
    for axis in ("lon", "lat"):
        given = table[axis].astype("string").str.strip().fillna("")
        bad = (given != "") & out[axis].isna()
        if bad.any():
            n = int(bad.sum())
            shown = ", ".join(f"{i} ({v!r})" for i, v in zip(out["obs_id"][bad].iloc[:5],
                                                             given[bad].iloc[:5], strict=True))
            raise InputError(
                f"{path}: {n} row(s) with a {axis} that is not a number: obs_id {shown}"
                f"{f' and {n - 5} more' if n > 5 else ''}; give decimal degrees with a '.' "
                "decimal point (64.8, -147.7), or leave it empty"
            )
    off_earth = out["lat"].abs() > 90.0
    if off_earth.any() and not off_earth[out["lon"].notna() & out["lat"].notna()].all():
        # some rows (a typo); every row is the columns swapped, which locate() says as such
        n = int(off_earth.sum())
        shown = ", ".join(f"{i} ({v:g})" for i, v in zip(out["obs_id"][off_earth].iloc[:5],
                                                        out["lat"][off_earth].iloc[:5],
                                                        strict=True))
        raise InputError(
            f"{path}: {n} row(s) with a latitude outside -90..90: obs_id {shown}"
            f"{f' and {n - 5} more' if n > 5 else ''}; fix those rows (lat and lon are in "
            "degrees)"
        )
    out["date"] = _parse_dates(table["date"], out["obs_id"], path)
    out[DATUM_COLUMN] = parse_datums(table.get(DATUM_COLUMN), out["obs_id"], path)
    for task in TASKS.values():
        column = task.label_column
        if task.binary:
            out[column] = _parse_binary(table[column], path, column)
        else:
            out[column], out[f"{column}_name"] = _parse_classes(table[column], path, task)
    return out


def _read_csv(path: Path, **options: Any) -> pd.DataFrame:
    """``pd.read_csv`` that never takes the first column for the index: rows with empty fields
    beyond the header's columns (a delimiter at the end of each line, as some exporters write)
    read as written, where pandas would shift every column onto its neighbour's values. A row
    with a value beyond the header's columns is one InputError naming its line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        table = pd.read_csv(path, index_col=False, **options)
    width = len(table.columns)  # one: a header separated by ';' or tabs (said by the caller)
    if width > 1 and any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        with open(path, newline="", encoding="utf-8-sig") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if any(value.strip() for value in row[width:]):
                    raise InputError(
                        f"{path}: line {line} has {len(row)} values, but the header names "
                        f"{width} columns; name every column in the header (an unnamed first "
                        "column, such as a spreadsheet's row numbers, needs a name too) or "
                        "remove the extra values"
                    )
    return table


def _check_repeated(path: Path, raw: list[str]) -> None:
    """InputError when a column the pipeline reads is given twice in the header ``raw`` (names
    matched as :func:`_column_names` does; pandas would read the second as ``nsp.1`` and ignore
    it)."""
    known = [*OBSERVATION_COLUMNS, DATUM_COLUMN]
    names = [n if n in known else n.strip().lower() for n in raw]
    repeated = sorted({n for n in names if n in known and names.count(n) > 1})
    if repeated:
        raise InputError(
            f"{path}: column(s) {', '.join(repeated)} given more than once (names are matched "
            "ignoring case and surrounding spaces); keep one of each"
        )


def _column_names(columns: pd.Index) -> dict:
    """Raw column name -> the name it is read as: a needed column's name (or ``datum``) matched
    ignoring case and surrounding spaces (``Obs_ID``, `` lon``), unless the table has that name as
    it is."""
    known = [*OBSERVATION_COLUMNS, DATUM_COLUMN]
    exact = set(columns)
    out = {}
    for raw in columns:
        name = str(raw).strip().lower()
        if raw not in known and name in known and name not in exact:
            out[raw] = name
    return out


def _blank_rows(table: pd.DataFrame) -> np.ndarray:
    """Whether each row has every column empty (NaN, or text of spaces only)."""
    text = table.astype("string").apply(lambda c: c.str.strip())
    return text.fillna("").eq("").all(axis=1).to_numpy(bool)


def _parse_dates(column: pd.Series, obs_id: pd.Series, path: Path) -> pd.Series:
    """The date column as stripped text (empty -> NA), every value checked to be ISO 8601."""
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    parsed = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    bad = text.notna() & (parsed.isna() | ~text.str.match(ISO_DATE).fillna(False))
    if bad.any():
        n = int(bad.sum())
        shown = ", ".join(f"{i} ({d!r})" for i, d in zip(obs_id[bad].iloc[:5], text[bad].iloc[:5],
                                                         strict=True))
        more = f" and {n - 5} more" if n > 5 else ""
        raise InputError(
            f"{path}: {n} row(s) with a date that is not ISO 8601 (YYYY-MM-DD, optionally with a "
            f"time, e.g. 2019-07-15 or 2019-07-15T10:30:00Z; or empty): obs_id {shown}{more}; "
            "fix those rows"
        )
    return text


def _parse_binary(column: pd.Series, path: Path, name: str) -> pd.Series:
    """0/1 (numbers or text), true/false (booleans or text, any case) or empty -> Int8."""
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    num = pd.to_numeric(text.str.lower().replace({"true": "1", "false": "0"}), errors="coerce")
    bad = text.notna() & ~num.isin([0, 1])
    if bad.any():
        shown = ", ".join(sorted(map(str, text[bad].unique()))[:8])
        raise InputError(f"{path}: {name} must be 0, 1, true, false or empty; found {shown}; "
                         "fix those rows")
    return num.astype("Int8")


def _parse_classes(column: pd.Series, path: Path, task: Task) -> tuple[pd.Series, pd.Series]:
    text = column.astype("string").str.strip()
    text = text.mask(text == "")
    index = {name.lower(): i for i, name in enumerate(task.classes)}
    lowered = text.str.lower()
    outside = lowered.isin([name.lower() for name in task.out_of_scope])
    if outside.any():
        found = text[outside].value_counts().sort_index()
        logger.warning("%s: %d row(s) of %s read as without a %s label (not among the %d mapped; "
                    "their other labels are kept)", path, int(outside.sum()),
                    ", ".join(f"{name} {n}" for name, n in found.items()), task.subject,
                    len(task.classes))  # fmt: skip
        text, lowered = text.mask(outside), lowered.mask(outside)
    known = lowered.isin(list(index))
    bad = text.notna() & ~known
    if bad.any():
        shown = ", ".join(sorted(map(str, text[bad].unique())))
        also = f"; read as unlabelled: {', '.join(task.out_of_scope)}" if task.out_of_scope else ""
        raise InputError(
            f"{path}: unknown {task.subject} name(s) {shown}; allowed: "
            f"{', '.join(task.classes)} (or empty){also}; rename or drop those rows"
        )
    codes = lowered.map(index).astype("Int8")
    names = codes.map(lambda i: task.classes[int(i)], na_action="ignore").astype("string")
    return codes, names
