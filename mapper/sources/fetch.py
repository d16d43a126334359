"""Obtaining one source of a region, per its ``kind``, with a manifest beside what was obtained.

Layout under ``out_dir`` (normally ``resources/<region>/sources``):

- ``http``: ``<name>/<file>`` per entry of ``files`` (the entry's ``name``, else the last part of
  the URL path), each with ``<name>/<file>.json``; fetching all files also writes
  ``<name>/manifest.json`` listing them all. A file the region file gives a ``sha256`` for is
  checked against it; any other is checked against the region's lock file
  (:mod:`mapper.sources.lock`), which records its checksum at its first download.
- ``file``: nothing is copied; ``<name>/manifest.json`` records the path, size and sha256 after
  checking that the file opens (rasters with rasterio, including every file a VRT refers to;
  tables as CSV or Parquet).
- ``snap``: ``<name>/snap_<variable>.zip`` and ``<name>/snap_<variable>.zip.json`` per archive
  of SNAP's monthly climate (see :mod:`mapper.sources.snap`).
- ``stac``: ``<name>/<tile>.tif`` (see :mod:`mapper.sources.composite`) and ``<name>/<tile>.json``.
- ``cells``: ``<name>/<cell>.tif`` and its record ``<name>/<cell>.json`` per 1 x 1 degree cell
  (see :mod:`mapper.sources.cells`), checked against the region's lock file.
- ``demo``: every source of the region synthesized by :mod:`mapper.demo.sources` (imported only
  when asked for) into ``out_dir`` and the truth beside it (``out_dir/../truth``).

Relative paths in the region file are relative to the working directory (the project root), as
for the region's boundary.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from mapper.config import Region
from mapper.errors import ConfigError, InputError
from mapper.files import file_sha256
from mapper.sources.manifest import make_manifest, write_manifest

logger = logging.getLogger(__name__)

TABLE_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "/vsi")


def default_out_dir(region_name: str) -> Path:
    """``resources/<region>/sources``: where a region's sources live."""
    return Path("resources") / region_name / "sources"


def http_file_name(entry: dict[str, Any]) -> str:
    """The local file name of an ``http`` entry: its ``name``, else the URL path's last part.

    Kept as written in the URL (``%20`` stays ``%20``), as the workflow's file lists name it.
    """
    if entry.get("name"):
        return str(entry["name"])
    name = PurePosixPath(urlsplit(entry["url"]).path).name
    if not name:
        raise ConfigError(f"{entry['url']}: the URL names no file; add 'name:' to its entry")
    return name


def manifest_path(
    out_dir: str | Path, source: str, *, tile: str | None = None, file: str | None = None
) -> Path:
    """Where the manifest of a source (or of one of its tiles or files) is written."""
    base = Path(out_dir) / source
    if tile is not None:
        return base / f"{tile}.json"
    if file is not None:
        return base / f"{file}.json"
    return base / "manifest.json"


FETCH_OPTION_KINDS = {"tile": ("stac",), "cell": ("cells",), "file": ("http", "snap")}
"""The source kinds each of ``fetch``'s ``--tile``, ``--cell`` and ``--file`` applies to."""


def fetch_source(
    region: Region,
    source_name: str,
    out_dir: str | Path,
    tile: str | None = None,
    file: str | None = None,
    cell: str | None = None,
) -> Path:
    """Fetch source ``source_name`` of ``region`` into ``out_dir``; return its manifest's path.

    ``tile`` is required for ``stac`` sources (one composite per tile); ``file`` restricts an
    ``http`` source to one of its files (by local name); ``cell`` is required for ``cells``
    sources (one 1 x 1 degree cell, e.g. ``N64W148``; its record is the manifest).
    """
    sources = region.settings["sources"]
    if source_name not in sources:
        raise ConfigError(
            f"{region.path}: no source '{source_name}' (known: {', '.join(sorted(sources))})"
        )
    settings = sources[source_name]
    kind = settings["kind"]
    out_dir = Path(out_dir)
    for option, value in (("tile", tile), ("cell", cell), ("file", file)):
        if value is not None and kind not in FETCH_OPTION_KINDS[option]:
            raise ConfigError(
                f"source '{source_name}' is of kind {kind}: --{option} applies to "
                f"{' and '.join(FETCH_OPTION_KINDS[option])} sources only; leave it out"
            )
    if kind == "snap":  # one archive of SNAP's monthly climate (file = pr, tas or tasmin)
        from mapper.sources.lock import LockFile, lock_path
        from mapper.sources.snap import fetch_snap

        # archives without a sha256 in the region file: pinned by the region's lock file
        lock = LockFile(lock_path(region.path))
        return fetch_snap(region, source_name, settings, out_dir, file, lock)
    if cell is None and kind == "cells":
        raise ConfigError(
            f"source '{source_name}' is of kind cells: give the cell to fetch with --cell "
            "(e.g. N64W148)"
        )
    if kind == "cells":
        from mapper.sources.cells import fetch_cell

        return fetch_cell(region, source_name, cell, out_dir)
    if kind == "http":
        return _fetch_http(region, source_name, settings, out_dir, file)
    if kind == "file":
        return _fetch_file(region, source_name, settings, out_dir)
    if kind == "stac":
        return _fetch_stac(region, source_name, settings, out_dir, tile)
    if kind == "demo":
        # Synthesis needs the region's folder (sources and truth): out_dir's parent.
        if out_dir.name != "sources":
            raise ConfigError(
                f"{out_dir}: a demo region's sources are synthesized with its truth, into "
                f"<folder>/sources and <folder>/truth; give the sources folder, named sources "
                f"(default resources/{region.name}/sources), or run python -m mapper demo "
                f"--region {region.name} --out <folder>"
            )
        from mapper.demo.sources import synthesize_demo

        return synthesize_demo(region, out_dir.parent)["manifest"]
    raise ConfigError(f"{region.path}: source '{source_name}' has unknown kind {kind!r}")


# -- http ---------------------------------------------------------------------------------------
def _fetch_http(
    region: Region, name: str, settings: dict[str, Any], out_dir: Path, only: str | None
) -> Path:
    files = settings.get("files") or []
    if not files:
        raise ConfigError(f"{region.path}: source '{name}' (http) lists no 'files'; add them")
    names = [http_file_name(f) for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"{region.path}: source '{name}' has several files named {dupes}; give each a 'name'"
        )
    chosen = list(zip(names, files, strict=True))
    if only is not None:
        chosen = [(n, f) for n, f in chosen if n == only]
        if not chosen:
            raise ConfigError(
                f"{region.path}: source '{name}' has no file '{only}' (files: {', '.join(names)})"
            )
    from mapper.sources.lock import fetch_entry, lock_path

    entries = []
    for fname, entry in chosen:
        dest = out_dir / name / fname
        item = fetch_entry(entry, dest, lock_path(region.path))
        item["path"] = str(dest)
        write_manifest(
            manifest_path(out_dir, name, file=fname),
            make_manifest(region.name, name, "http", [item], synthetic=region.synthetic),
        )
        entries.append(item)
    if only is not None:
        return manifest_path(out_dir, name, file=only)
    return write_manifest(
        manifest_path(out_dir, name),
        make_manifest(region.name, name, "http", entries, synthetic=region.synthetic),
    )


# -- file ---------------------------------------------------------------------------------------
def _fetch_file(region: Region, name: str, settings: dict[str, Any], out_dir: Path) -> Path:
    path_text = settings.get("path")
    if not path_text:
        raise ConfigError(f"{region.path}: source '{name}' (file) has no 'path'; add it")
    if path_text.startswith(REMOTE_PREFIXES):
        info = check_raster(path_text)
        item: dict[str, Any] = {"url": path_text, "path": path_text, "size": None, "sha256": None}
        extra: dict[str, Any] = {"format": "raster", "raster": info}
    else:
        path = Path(path_text)
        if not path.is_file():
            raise InputError(
                f"{path}: source '{name}' of region '{region.name}' not found; put the file "
                f"there or fix its 'path' in {region.path}"
            )
        fmt = table_format(path)
        if fmt is None:
            extra = {"format": "raster", "raster": check_raster(path)}
        else:
            extra = {
                "format": "table",
                "table": check_table(path, fmt, observations=name == "observations"),
            }
        item = {"path": str(path), "size": path.stat().st_size, "sha256": file_sha256(path)}
    return write_manifest(
        manifest_path(out_dir, name),
        make_manifest(region.name, name, "file", [item], synthetic=region.synthetic, **extra),
    )


def table_format(path: str | Path) -> str | None:
    """``"csv"``, ``"parquet"`` or None (a raster) from the file name (``.csv.gz`` is csv)."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".zst", ".xz"):
        suffixes = suffixes[:-1]
    return TABLE_SUFFIXES.get(suffixes[-1]) if suffixes else None


def check_raster(path: str | Path) -> dict[str, Any]:
    """Open a raster (or VRT), read one pixel, check every file a VRT names exists; describe it."""
    import rasterio
    from rasterio.windows import Window

    from mapper.raster import GDAL_HTTP_ENV, check_crs, open_raster

    with rasterio.Env(**GDAL_HTTP_ENV):
        src = open_raster(path)
        try:
            check_crs(src, path)
            missing = [
                f
                for f in src.files[1:]
                if not f.startswith(REMOTE_PREFIXES) and not os.path.exists(f)
            ]
            if missing:
                raise InputError(
                    f"{path}: the VRT refers to {len(missing)} missing file(s), e.g. {missing[0]}; "
                    "fetch them or rebuild the VRT"
                )
            try:
                src.read(1, window=Window(0, 0, 1, 1))
            except rasterio.errors.RasterioIOError as exc:
                raise InputError(
                    f"{path}: cannot read its pixels ({exc}); replace the file"
                ) from None
            return {
                "crs": src.crs.to_string(),
                "width": src.width,
                "height": src.height,
                "count": src.count,
                "dtype": src.dtypes[0],
                "res": list(src.res),
                "bounds": list(src.bounds),
                "nodata": src.nodata,
                "files": len(src.files),
            }
        finally:
            src.close()


def check_table(path: Path, fmt: str, *, observations: bool = False) -> dict[str, Any]:
    """Read a table's columns (and its first rows, for CSV). Observations are read and checked as
    the samples stage reads them (:func:`mapper.samples.read_observations`: Parquet under any
    name, column names ignoring case and spaces, labels and dates), so that a table this accepts
    is one the run accepts."""
    if observations:
        from mapper.samples import read_observations

        table = read_observations(path)
        return {"columns": [str(c) for c in table.columns], "rows": len(table)}
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            columns = list(schema.names)
            rows = pq.ParquetFile(path).metadata.num_rows
        else:
            import pandas as pd

            sep = "\t" if ".tsv" in [s.lower() for s in path.suffixes] else ","
            head = pd.read_csv(path, nrows=5, sep=sep)
            columns = [str(c) for c in head.columns]
            rows = None
    except Exception as exc:  # pandas/pyarrow parser errors have no common base
        raise InputError(f"{path}: cannot be read as {fmt} ({exc}); replace the file") from None
    return {"columns": columns, "rows": rows}


# -- stac ---------------------------------------------------------------------------------------
def _fetch_stac(
    region: Region, name: str, settings: dict[str, Any], out_dir: Path, tile: str | None
) -> Path:
    from mapper.sources.composite import block_lattice, composite_tile, scene_blocks
    from mapper.sources.exclusions import excluded_items
    from mapper.sources.stac import (
        acquisition,
        items_by_block,
        items_by_id,
        lonlat_bbox,
        search_items,
        split_antimeridian,
    )

    if tile is None:
        raise ConfigError(
            f"source '{name}' of region '{region.name}' is a per-tile STAC composite; give a tile"
        )
    try:
        region.lattice.parse(tile)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key in ("api", "datetime"):
        if not settings.get(key):
            raise ConfigError(f"{region.path}: source '{name}' (stac) needs '{key}'; add it")
    lattice = region.lattice
    bounds = lattice.tile_bounds(tile)
    query = {
        "api": settings["api"],
        "collection": settings["collection"],
        "datetime": settings["datetime"],
        "months": list(settings["months"]),
        "max_cloud": settings["max_cloud"],
        "max_items": settings["max_items"],
        "block_px": settings["block_px"],
        "harmonized": settings["harmonized"],
        "check_offset": settings["check_offset"],
        "bboxes": [list(b) for b in split_antimeridian(lonlat_bbox(bounds, lattice.crs))],
    }
    blocks = scene_blocks(lattice, tile, settings["block_px"])
    grid = block_lattice(lattice, settings["block_px"])
    found = search_items(
        settings["api"],
        bounds,
        datetime_interval=settings["datetime"],
        collection=settings["collection"],
        months=settings["months"],
        max_cloud=settings["max_cloud"],
        max_items=None,
        crs=lattice.crs,
    )
    excluded = excluded_items(settings, tile, lattice.tile_px)
    if excluded:
        # an item stands for its acquisition: every granule of the pass, and reprocessed copies,
        # also where the named granule itself does not reach this tile (looked up by id)
        unseen = set(excluded) - {it.id for it in found}
        named = [it for it in found if it.id in excluded]
        looked_up = items_by_id(settings["api"], settings["collection"], unseen)
        unknown = sorted(unseen - {it.id for it in looked_up})
        if unknown:  # a typo, or another catalog's name of the scene: it would leave out nothing
            raise ConfigError(
                f"{region.path}: key 'sources.{name}.exclude.{unknown[0]}': no item of "
                f"collection {settings['collection']} at {settings['api']} has this id; give "
                "the id as this catalog names it (python -m mapper scenes --region "
                f"{region.name} --tile {tile} lists the items of the tile's composite)"
            )
        named += looked_up
        passes = {acquisition(it) for it in named}
        left_out = sorted(it.id for it in found if acquisition(it) in passes)
        found = [it for it in found if acquisition(it) not in passes]
        query["exclude"], query["left_out"] = excluded, left_out
        logger.info("%s: %d excluded item(s), %d acquisition(s): %d item(s) of them left out: "
                    "%s", tile, len(excluded), len(passes),
                    len(left_out), ", ".join(left_out) or "none")
    chosen = items_by_block(
        found,
        {b: grid.tile_bounds(b) for b, _ in blocks},
        max_items=settings["max_items"],
        crs=lattice.crs,
    )
    dest = out_dir / name / f"{tile}.tif"
    summary = composite_tile(chosen, lattice, tile, dest, block_px=settings["block_px"],
                             harmonized=settings["harmonized"],
                             check=settings["check_offset"])
    item = {"path": str(dest), "size": dest.stat().st_size, "sha256": file_sha256(dest)}
    hrefs = {it.id: it.get_self_href() for it in found}
    for block_items in summary["blocks"].values():
        for stac_item in block_items:
            stac_item["href"] = hrefs[stac_item["id"]]
    return write_manifest(
        manifest_path(out_dir, name, tile=tile),
        make_manifest(
            region.name,
            name,
            "stac",
            [item],
            synthetic=region.synthetic,
            tile=tile,
            tile_px=lattice.tile_px,
            stac=query,
            stac_blocks=summary["blocks"],
            valid_fraction=summary["valid_fraction"],
        ),
    )
