"""Map products of a region: per-tile predictions -> COGs, quick-look, QGIS style, STAC Item.

``make_products`` takes the region's predicted tiles (float32 probabilities, NaN nodata, see
:mod:`mapper.predict`) and writes, beside ``out`` (normally ``maps/<task>_<region>.tif``), by the
task's kind (:mod:`mapper.tasks`):

- binary (NSP): ``nsp_<region>.tif``, the probability as UInt8 percent 0..100 (band scale 0.01,
  offset 0, so GDAL/QGIS users read probability; nodata 255), AVERAGE overviews;
- multiclass (soil order): ``soilorder_<region>.tif``, the class index (argmax of the blended
  probabilities, 0..6 in :data:`mapper.bands.SOIL_ORDERS` order) with the task's colour table and
  the class names as band metadata, nodata 255, MODE overviews; and
  ``soilorder_<region>_probabilities.tif``, the 7 probabilities as UInt8 percent (band
  descriptions = class names), AVERAGE overviews;
- ``<task>_<region>.png`` quick-look with legend (read from the COG's overviews),
  ``<task>_<region>.qml`` QGIS style, ``<task>_<region>.stac.json`` STAC Item.

The products' grid is the region's mapped area (its boundary buffered by ``buffer_m``): its bounding
box snapped outward to the out grid, whatever the tiles' size; cells whose centre lies outside the
area are nodata (prediction never decodes them), and the quick-look draws the boundary's outline.
The files are written together (:func:`mapper.files.staged_paths`): staged beside the
main COG and renamed into place once all are written, so a failure leaves the earlier product
whole. Metadata tags on every COG: its
provenance (:mod:`mapper.products.provenance`). The conversion streams over the tiles' VRT in
blocks of 512 rows, so memory does not grow with the region.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from mapper.bands import CLASS_NODATA
from mapper.config import Region
from mapper.errors import ConfigError, InputError, first_few
from mapper.files import file_sha256, staged_paths
from mapper.products.cog import (
    BLOCKSIZE,
    PERCENT_NODATA,
    class_name_tags,
    raster_writer,
    remove_aux,
    to_cog,
)
from mapper.products.colours import colour_table, hex_colour, style_qml
from mapper.products.provenance import SYNTHETIC_STATEMENT, provenance_tags, software_versions
from mapper.products.quicklook import capital, write_quicklook
from mapper.products.stac import COG_MEDIA_TYPE, ProductAsset, build_item, write_item
from mapper.progress import bar as progress_bar
from mapper.raster import open_raster, reading, tag_is_true, writing
from mapper.sources.stac import parse_interval
from mapper.tasks import Task, get_task
from mapper.vrt import write_vrt

logger = logging.getLogger(__name__)

COLUMN_CHUNK = 16 * BLOCKSIZE
"""Columns converted at once (8192 x 512 rows x 4 bytes: 16.8 MB per float32 band)."""


@dataclass
class Products:
    """Paths of what :func:`make_products` wrote."""

    cog: Path
    quicklook: Path
    style: Path
    item: Path
    extra: dict[str, Path] = field(default_factory=dict)

    def all(self) -> list[Path]:
        return [self.cog, *self.extra.values(), self.quicklook, self.style, self.item]


PREDICTION_TAGS = ("MAPPER_BLENDING", "MAPPER_PRECISION", "MAPPER_MIN_WEIGHT")
"""Tags of a predicted tile that state the prediction settings it was computed with (the crops'
stride and weighting, the precision, the negligible weight): one map's tiles agree on each."""
TILE_FIX = "delete that tile and run the same target again (its predict job makes it again)"
"""The fix of a predicted tile whose blocks fail to read (named by GDAL's reason), or that does
not match the others (another version's, or copied in by hand)."""


def product_paths(out: str | Path, task: str) -> dict[str, Path]:
    """Every file of a product named from the main COG's path ``maps/<task>_<region>.tif``."""
    out = Path(out)
    stem = out.name[: -len(".tif")] if out.name.endswith(".tif") else out.stem
    paths = {
        "cog": out,
        "quicklook": out.with_name(f"{stem}.png"),
        "style": out.with_name(f"{stem}.qml"),
        "item": out.with_name(f"{stem}.stac.json"),
    }
    if get_task(task).multiclass:
        paths["probabilities"] = out.with_name(f"{stem}_probabilities.tif")
    return paths


# -- tiles -> raw rasters -------------------------------------------------------------------------


@dataclass(frozen=True)
class TileSet:
    """The predicted tiles of one task, checked to share a grid, band count and model."""

    paths: list[Path]
    count: int
    res: float
    descriptions: list[str]
    model_sha256: str | None
    synthetic: bool = False
    """Whether any tile is tagged synthetic (predicted from a stack of a synthetic file)."""
    settings: tuple[tuple[str, str | None], ...] = ()
    """The prediction settings tags (:data:`PREDICTION_TAGS`) that every tile shares, with one
    of the tiles: ``(tag, value)`` pairs."""
    first: Path | None = None
    """A tile that carries :attr:`settings` (for messages)."""


def check_tiles(tiles: list[str | Path], task: str, n_bands: int) -> TileSet:
    """Open every tile once: same CRS, resolution, band count; predicted for ``task``, its bands
    the task's classes in the task's order (:attr:`mapper.tasks.Task.output_names`)."""
    names = get_task(task).output_names
    if not tiles:
        raise InputError(f"mosaic {task}: no predicted tiles given; run predict first")
    paths = [Path(t) for t in tiles]
    named: dict[str, Path] = {}
    for path in paths:  # a tile's file is <tile>.tif: two of one tile would overwrite each other
        first = named.setdefault(path.name, path)
        if first != path and first.resolve() != path.resolve():
            raise InputError(f"{path}: tile {path.stem} given twice ({first}); pass one file per "
                             "tile")
    res = None
    shas: set[str] = set()
    descriptions: list[str] = []
    synthetic = False
    settings: dict[str, tuple[str, Path]] = {}  # tag -> (first tile's value, that tile)
    for path in paths:
        with open_raster(path) as ds:
            tags = ds.tags()
            synthetic |= tag_is_true(tags, "MAPPER_SYNTHETIC")
            for key in PREDICTION_TAGS:
                value, first = settings.setdefault(key, (tags.get(key), path))
                if tags.get(key) != value:
                    raise InputError(
                        f"{path}: {key} {tags.get(key)!r} differs from {first} ({value!r}): the "
                        "tiles were predicted with other prediction settings; rerun predict for "
                        "the tiles made with the old ones (snakemake <target> --cores N -R "
                        "<their files>), or delete them and run the same target again"
                    )
            if tags.get("MAPPER_TASK", task) != task or ds.count != n_bands:
                raise InputError(
                    f"{path}: a {tags.get('MAPPER_TASK')} tile with {ds.count} bands, not a "
                    f"{task} tile of {n_bands}; pass the {task} predictions"
                )
            if ds.crs is None or ds.crs.to_epsg() != 3338:
                raise InputError(f"{path}: CRS {ds.crs} is not EPSG:3338; rerun predict")
            nodata = ds.nodata
            if ds.dtypes[0] != "float32" or nodata is None or not math.isnan(nodata):
                # a finite nodata (or none) would be read as probabilities: -9999 as 0 %
                raise InputError(
                    f"{path}: {ds.dtypes[0]} with nodata {nodata}, not float32 with NaN nodata "
                    f"as predict writes; {TILE_FIX}"
                )
            if list(ds.descriptions) != names:  # each band is the class the task puts there
                raise InputError(
                    f"{path}: bands {', '.join(map(str, ds.descriptions))}, not the {task} "
                    f"task's {', '.join(names)} in that order; {TILE_FIX}"
                )
            if res is None:
                res, descriptions = ds.res[0], list(ds.descriptions)
            elif abs(ds.res[0] - res) > 1e-9:
                raise InputError(
                    f"{path}: pixel size {ds.res[0]} m differs from {paths[0]} ({res} m); "
                    "rerun predict for every tile with the same out_res"
                )
            if tags.get("MAPPER_MODEL_SHA256"):
                shas.add(tags["MAPPER_MODEL_SHA256"])
    if len(shas) > 1:
        raise InputError(
            f"mosaic {task}: tiles were predicted with {len(shas)} different models; rerun "
            "predict for every tile with one model"
        )
    return TileSet(paths, n_bands, float(res), descriptions, shas.pop() if shas else None,
                   synthetic, tuple((key, value) for key, (value, _) in settings.items()),
                   paths[0] if paths else None)


def stated_synthetic(region: Region, *tilesets: TileSet) -> bool:
    """Whether the products state that they are SYNTHETIC (tags, STAC Item, quick-look): the
    region is, or any of the predicted tiles is, though the region is not (a synthetic file, the
    demo's, given as a source of a real region: said with a warning)."""
    if region.synthetic:
        return True
    if any(t.synthetic for t in tilesets):
        logger.warning("region %s: predicted tiles made from synthetic sources; the products say "
                       "they are SYNTHETIC", region.name)
        return True
    return False


def check_mapped_tiles(region: Region, task: str, tileset: TileSet) -> None:
    """Every mapped tile of ``region`` (:meth:`Region.tiles`) must be among the tiles given (told
    by their file names, ``<tile>.tif``): a missing one would be a nodata square in the map."""
    missing = region.missing_tiles(path.stem for path in tileset.paths)
    if missing:
        raise InputError(
            f"mosaic {task} of region {region.name}: {len(missing)} of its "
            f"{len(region.tiles())} mapped tiles not given ({first_few(missing)}); make each "
            f"with `snakemake --cores 1 results/{region.name}/predict/{task}/<tile>.tif` and "
            "pass every mapped tile"
        )


def check_model(tileset: TileSet, model_path: str | Path) -> str:
    """The SHA-256 of the checkpoint ``model_path``, which must be the one ``tileset`` was
    predicted with."""
    if not Path(model_path).is_file():
        raise InputError(f"{model_path}: no such checkpoint; give the model the tiles were "
                         "predicted with")
    model_sha = file_sha256(model_path)
    if tileset.model_sha256 and tileset.model_sha256 != model_sha:
        raise InputError(
            f"{tileset.paths[0]}: predicted with model sha256 {tileset.model_sha256[:12]}..., not "
            f"{model_path} ({model_sha[:12]}...); rerun predict with this model"
        )
    return model_sha


def to_percent(p: np.ndarray) -> np.ndarray:
    """Probabilities (NaN nodata) -> uint8 percent 0..100, 255 nodata (round half to even)."""
    out = np.full(p.shape, PERCENT_NODATA, dtype=np.uint8)
    ok = np.isfinite(p)
    # in float64: NumPy 2 keeps float32 x 100 in float32, where 0.165 gives 16.5 (so 16, not 17)
    out[ok] = np.clip(np.rint(p[ok].astype(np.float64) * 100.0), 0, 100).astype(np.uint8)
    return out


def _argmax_classes(p: np.ndarray) -> np.ndarray:
    """[n_classes, h, w] probabilities -> uint8 class index, 255 where any band is nodata."""
    bad = ~np.isfinite(p).all(axis=0)
    idx = np.argmax(np.where(np.isfinite(p), p, -np.inf), axis=0).astype(np.uint8)
    idx[bad] = CLASS_NODATA
    return idx


def block_windows(width: int, height: int) -> list[Window]:
    return [Window(c, r, min(COLUMN_CHUNK, width - c), min(BLOCKSIZE, height - r))
            for r in range(0, height, BLOCKSIZE) for c in range(0, width, COLUMN_CHUNK)]


def area_window(region: Region, vrt: rasterio.DatasetReader) -> Window:
    """The window of the tiles' VRT that the products cover: the mapped area's bounding box
    snapped outward to the VRT's (out) grid, which is aligned with the lattice.

    At an ``out_res`` that does not divide ``tile_px``, out cells straddle tile edges, and the
    snapped box may take in a cell beyond the VRT whose centre lies in an unmapped tile (so
    outside the area: nodata); such a cell is left out. A cell with its centre in the box that
    lies beyond the VRT means tiles are missing: InputError.
    """
    left, bottom, right, top = region.area().bounds
    res = vrt.res[0]
    x0, y0 = vrt.transform.c, vrt.transform.f

    def start(edge: float) -> int:  # outward, else the first cell whose centre is in the box
        return math.floor(round(edge, 9)) if edge >= 0 else math.ceil(round(edge - 0.5, 9))

    def stop(edge: float, size: int) -> int:  # outward, else the last one's end
        out = math.ceil(round(edge, 9))
        return out if out <= size else math.floor(round(edge - 0.5, 9)) + 1

    c0, c1 = start((left - x0) / res), stop((right - x0) / res, vrt.width)
    r0, r1 = start((y0 - top) / res), stop((y0 - bottom) / res, vrt.height)
    if c0 < 0 or r0 < 0 or c1 > vrt.width or r1 > vrt.height:
        raise InputError(
            f"mosaic of region {region.name}: the predicted tiles do not cover its mapped area "
            "(boundary buffered by buffer_m); pass every mapped tile's prediction"
        )
    return Window(c0, r0, c1 - c0, r1 - r0)


def _write_raw(vrt: Path, task: Task, tags: dict[str, str], workdir: Path, region: Region,
               paths: dict[str, Path]) -> dict[str, Path]:
    """The raw (not yet COG) product rasters from the tiles' VRT over the mapped area's
    bounding box (:func:`area_window`), streamed block row by row. A failed write (a full disk)
    names the product of ``paths`` it was for, not a tile (:func:`mapper.raster.writing`)."""
    raw = {"cog": workdir / "main.tif"}
    classes = list(task.classes)
    if task.multiclass:
        raw["probabilities"] = workdir / "probabilities.tif"
    with rasterio.open(vrt) as src:
        area = area_window(region, src)
        width, height = int(area.width), int(area.height)
        grid = {"width": width, "height": height, "transform": src.window_transform(area),
                "crs": src.crs.to_string(), "dtype": "uint8", "nodata": PERCENT_NODATA}
        windows = block_windows(width, height)

        def read(win: Window, *band: int) -> np.ndarray:
            at = Window(win.col_off + area.col_off, win.row_off + area.row_off, win.width,
                        win.height)
            return src.read(*band, window=at)

        def counted() -> Any:  # opened after the rasters, so an open that fails leaves none
            return progress_bar(len(windows), f"mosaic {task.name}", "block")

        if task.binary:
            with raster_writer(raw["cog"], name=paths["cog"], count=1, **grid) as dst, \
                    counted() as blocks:
                for win in windows:
                    percent = to_percent(read(win, 1))
                    with writing(paths["cog"]):
                        dst.write(percent, 1, window=win)
                    blocks.update()
                _describe_percent(dst, [f"{task.name}_probability"], tags,
                                  f"probability of {task.subject} ({task.definition})")
            return raw
        with raster_writer(raw["cog"], name=paths["cog"], count=1, **grid) as cls_dst, \
                raster_writer(raw["probabilities"], name=paths["probabilities"],
                              count=len(classes), **grid) as prob_dst, counted() as blocks:
            # the colour table goes in before any pixel: TIFF fixes the photometric tag then
            cls_dst.write_colormap(1, colour_table(task.colours))
            for win in windows:
                p = read(win)  # [n_classes, h, w] float32, NaN nodata
                with writing(paths["cog"]):
                    cls_dst.write(_argmax_classes(p), 1, window=win)
                with writing(paths["probabilities"]):
                    prob_dst.write(to_percent(p), window=win)
                blocks.update()
            cls_dst.set_band_description(1, task.label_column)
            cls_dst.update_tags(1, **class_name_tags(classes))
            cls_dst.units = ("class index",)
            cls_dst.update_tags(**tags, MAPPER_VALUES=f"class index 0..{len(classes) - 1} in "
                                "CLASS_NAMES order; 255 nodata")
            _describe_percent(prob_dst, classes, {
                **tags, "MAPPER_UNITS": f"probability of each {task.subject}, stored as percent "
                "(value x 0.01)"}, f"probability of each {task.subject}")
    return raw


def _describe_percent(dst: rasterio.io.DatasetWriter, names: list[str], tags: dict[str, str],
                      what: str) -> None:
    """Band declarations of a UInt8-percent probability raster (scale 0.01, offset 0)."""
    for i, name in enumerate(names, start=1):
        dst.set_band_description(i, name)
        dst.update_tags(i, STORED="percent 0..100; probability = value x 0.01; 255 nodata")
    dst.scales = (0.01,) * len(names)
    dst.offsets = (0.0,) * len(names)
    dst.units = ("probability",) * len(names)
    dst.update_tags(**tags, MAPPER_VALUES=f"{what}: percent 0..100 (scale 0.01), 255 nodata")


# -- the product ----------------------------------------------------------------------------------


def make_products(
    region: Region,
    task: str,
    model_path: str | Path,
    tiles: list[str | Path],
    out: str | Path,
    *,
    sources_dir: str | Path | None = None,
) -> Products:
    """Mosaic ``tiles`` (one task's predictions) into the region's map products beside ``out``.

    ``sources_dir``: where the region's source manifests are (default
    ``resources/<region>/sources``), for the provenance tags.
    """
    spec = get_task(task)
    tileset = check_tiles(tiles, task, spec.n_outputs)
    check_mapped_tiles(region, task, tileset)
    synthetic = stated_synthetic(region, tileset)
    model_sha = check_model(tileset, model_path)
    paths = product_paths(out, task)
    units = (f"probability of {spec.subject}, stored as percent (value x 0.01)"
             if spec.binary else f"{spec.subject} class index (CLASS_NAMES); probabilities in "
             f"{paths.get('probabilities', Path()).name} as percent (value x 0.01)")
    tags = provenance_tags(region, task, model_sha, units, sources_dir, synthetic=synthetic)
    keys = list(paths)  # the main COG first: it is renamed into place last
    with staged_paths([paths[k] for k in keys]) as staged_list:
        staged = dict(zip(keys, staged_list, strict=True))
        workdir = staged["cog"].parent.parent
        vrt = write_vrt(tileset.paths, workdir / "tiles.vrt", TILE_FIX)
        with reading(f"a predicted {task} tile", TILE_FIX, tileset.paths):
            raw = _write_raw(vrt, spec, tags, workdir, region, paths)
        if spec.binary:
            to_cog(raw["cog"], staged["cog"], resampling="AVERAGE", name=paths["cog"])
        else:
            to_cog(raw["probabilities"], staged["probabilities"], resampling="AVERAGE",
                   name=paths["probabilities"])
            to_cog(raw["cog"], staged["cog"], resampling="MODE", name=paths["cog"])
        with rasterio.open(staged["cog"]) as ds:
            bounds, shape, transform, res = tuple(ds.bounds), ds.shape, ds.transform, ds.res[0]
        write_quicklook(staged["cog"], staged["quicklook"], spec, f"{spec.title}, {region.name}",
                        synthetic, outline=region.boundary(),
                        area=region.area() if region.settings["buffer_m"] > 0 else None)
        staged["style"].write_text(style_qml(spec))
        item = _item(region, spec, paths, bounds, shape, transform, res, model_sha, synthetic)
        write_item(item, staged["item"])
        remove_aux(paths["cog"], paths.get("probabilities"))
    extra = {"probabilities": paths["probabilities"]} if spec.multiclass else {}
    products = Products(paths["cog"], paths["quicklook"], paths["style"], paths["item"], extra)
    logger.info("wrote %s", ", ".join(str(p) for p in products.all()))
    return products


def percent_band(res: float, unit: str = "probability") -> dict[str, Any]:
    return {"nodata": PERCENT_NODATA, "data_type": "uint8", "scale": 0.01, "offset": 0.0,
            "unit": unit, "spatial_resolution": res}


def _item(region: Region, task: Task, paths: dict[str, Path], bounds: tuple, shape: tuple,
          transform: Any, res: float, model_sha: str, synthetic: bool) -> Any:
    """The product's STAC Item (assets: COG(s), quick-look, style)."""
    assets: dict[str, ProductAsset] = {}
    if task.binary:
        assets["data"] = ProductAsset(paths["cog"], task.title + " (percent, scale 0.01)",
                                      ["data"], COG_MEDIA_TYPE, bands=[percent_band(res)])
    else:
        class_entries = [
            {"value": i, "name": name, "description": f"{task.subject} {name}",
             "color_hint": hex_colour(rgb)[1:].upper()}
            for i, (name, rgb) in enumerate(zip(task.classes, task.colours, strict=True))
        ]
        assets["data"] = ProductAsset(
            paths["cog"], f"{capital(task.subject)} (class index)", ["data"],
            COG_MEDIA_TYPE,
            bands=[{"nodata": CLASS_NODATA, "data_type": "uint8", "spatial_resolution": res}],
            classes=class_entries + [{"value": CLASS_NODATA, "name": "nodata", "nodata": True}],
        )
        assets["probabilities"] = ProductAsset(
            paths["probabilities"],
            f"{capital(task.subject)} class probabilities (percent, scale 0.01), one band per "
            f"class in this order: {', '.join(task.classes)}",
            ["data"], COG_MEDIA_TYPE,
            bands=[percent_band(res) for _ in task.classes],
        )
    assets.update(side_assets(paths))
    props = item_properties(region, task, f"{task.title}, {region.name}",
                            region.settings.get("description", ""), model_sha, res, synthetic)
    return build_item(f"{task.name}_{region.name}", bounds=bounds, shape=shape, transform=transform,
                      assets=assets, properties=props, start_end=source_period(region),
                      area=region.area())


def side_assets(paths: dict[str, Path]) -> dict[str, ProductAsset]:
    """The quick-look and QGIS style assets of a product's STAC Item."""
    return {
        "thumbnail": ProductAsset(paths["quicklook"], "Quick-look with legend",
                                  ["thumbnail", "overview"], "image/png"),
        "style": ProductAsset(paths["style"], "QGIS layer style", ["metadata"],
                              "application/xml"),
    }


def item_properties(region: Region, task: Task, title: str, description: str, model_sha: str,
                    res: float, synthetic: bool) -> dict[str, Any]:
    """The properties every product's STAC Item carries (provenance, synthetic statement;
    ``synthetic``: :func:`stated_synthetic`). A synthetic product says so where a catalog shows
    it, as its TIFF's description does: " (SYNTHETIC)" after the title, the statement before the
    region's description (which may describe a real place whose tiles read a synthetic file)."""
    if synthetic:
        title = f"{title} (SYNTHETIC)"
        description = f"{SYNTHETIC_STATEMENT} {description}".strip()
    props: dict[str, Any] = {
        "title": title,
        "description": description,
        "mapper:task": task.name,
        "mapper:region": region.name,
        "mapper:model_sha256": model_sha,
        "mapper:synthetic": synthetic,
        "mapper:software": software_versions(),
        "gsd": res,
    }
    if synthetic:
        props["mapper:synthetic_statement"] = SYNTHETIC_STATEMENT
    return props


def source_period(region: Region) -> tuple[datetime, datetime] | None:
    """The Sentinel-2 period from the region settings (a STAC ``datetime`` interval), if any."""
    interval = region.settings["sources"].get("sentinel2", {}).get("datetime")
    if not interval or "/" not in interval:
        return None
    try:  # as the scene search reads it: a date-only end takes its whole day
        return parse_interval(interval.replace("Z", "+00:00"))
    except ConfigError:
        return None
