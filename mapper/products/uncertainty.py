"""The uncertainty product of a map: ``maps/<task>_<region>_uncertainty.tif`` and its quick-look,
QGIS style and STAC Item, beside the map (:mod:`mapper.products.mosaic`).

Bands, each UInt8 percent 0..100 (band scale 0.01, offset 0: GDAL and QGIS users read 0..1),
nodata 255 wherever the map is nodata, AVERAGE overviews (measures of :mod:`mapper.uncertainty`):

1. ``normalised_entropy``: of the map's blended class probabilities (NSP: the normalised binary
   entropy of the probability), always there;
2. with ``prediction.ensemble`` members only: ``ensemble_std`` for a binary task (the spread of
   the probability over the map's model and its members) or ``ensemble_disagreement`` for a
   multiclass one (the share of members whose class differs from the map's).

The dataset tags say which bands there are and what each holds (``MAPPER_UNCERTAINTY``), with the
map's provenance tags and the members' model checksums. Members' tiles are told apart by the
model checksum each tile carries (``MAPPER_MODEL_SHA256``); every member must have predicted every
tile of the map. The files are written together, as the map's are (staged, then renamed once all
are written); the conversion streams over
the tiles' VRTs in blocks of 512 rows.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from mapper.config import Region
from mapper.errors import InputError
from mapper.files import file_sha256, staged_paths
from mapper.products.cog import PERCENT_NODATA, raster_writer, remove_aux, to_cog
from mapper.products.colours import UNCERTAINTY_RAMP, ramp_qml
from mapper.products.mosaic import (
    TILE_FIX,
    Products,
    TileSet,
    area_window,
    block_windows,
    check_mapped_tiles,
    check_model,
    check_tiles,
    item_properties,
    percent_band,
    side_assets,
    source_period,
    stated_synthetic,
    to_percent,
)
from mapper.products.provenance import provenance_tags
from mapper.products.quicklook import capital, write_ramp_quicklook
from mapper.products.stac import COG_MEDIA_TYPE, ProductAsset, build_item, write_item
from mapper.progress import bar as progress_bar
from mapper.raster import open_raster, reading, writing
from mapper.tasks import Task, get_task
from mapper.uncertainty import (
    class_probabilities,
    disagreement,
    ensemble_spread,
    most_probable,
    normalised_entropy,
)
from mapper.vrt import write_vrt

logger = logging.getLogger(__name__)



def uncertainty_paths(out: str | Path) -> dict[str, Path]:
    """The product's files named from its COG ``maps/<task>_<region>_uncertainty.tif``."""
    out = Path(out)
    stem = out.name.removesuffix(".tif")
    return {"cog": out, "quicklook": out.with_name(f"{stem}.png"),
            "style": out.with_name(f"{stem}.qml"), "item": out.with_name(f"{stem}.stac.json")}


def uncertainty_bands(task: Task, members: int) -> list[tuple[str, str]]:
    """(band name, definition) of the product's bands, in band order."""
    bands = [("normalised_entropy", task.entropy_definition)]
    if members:
        bands.append(task.ensemble_measure)
    return bands


def member_tilesets(tiles: list[str | Path], task: str, main: TileSet,
                    models: list[str | Path]) -> list[TileSet]:
    """The members' tiles grouped by the model that predicted them, in the order of ``models``
    (the members' checkpoints); each group must cover the map's tiles exactly."""
    spec = get_task(task)
    seen: dict[str, Path] = {}
    for model in map(Path, models):  # a second copy would find its tiles taken by the first
        if not model.is_file():
            raise InputError(f"{model}: no such ensemble member checkpoint; fine-tune it first "
                             "(rule finetune_member) or check the path")
        sha = file_sha256(model)
        if sha in seen:
            raise InputError(f"{model}: the same ensemble member as {seen[sha]}; pass each "
                             "member's checkpoint once")
        if sha == main.model_sha256:
            raise InputError(f"{model}: the map's own model (its tiles carry this checksum), not "
                             "an ensemble member; pass the members' checkpoints (rule "
                             "finetune_member)")
        seen[sha] = model
    by_sha: dict[str, list[Path]] = {}
    for path in map(Path, tiles):
        with open_raster(path) as ds:
            sha = ds.tags().get("MAPPER_MODEL_SHA256", "")
        by_sha.setdefault(sha, []).append(path)
    names = sorted(p.name for p in main.paths)
    groups = []
    for model in models:
        sha = file_sha256(model)
        paths = by_sha.pop(sha, [])
        if sorted(p.name for p in paths) != names:
            raise InputError(
                f"{model}: its predicted tiles are not all given ({len(paths)} of {len(names)} "
                f"tiles carry its checksum); predict every tile of the map with every ensemble "
                "member (rule predict_member)"
            )
        group = check_tiles(sorted(paths, key=lambda p: p.name), task, spec.n_outputs)
        if abs(group.res - main.res) > 1e-9:
            raise InputError(f"{paths[0]}: pixel size {group.res} m, not the map's {main.res} m; "
                             "predict the members at the map's out_res")
        ours = dict(main.settings)
        for key, value in group.settings:
            if key in ours and value != ours[key]:
                raise InputError(
                    f"{group.first}: {key} {value!r} differs from the map's tile {main.first} "
                    f"({ours[key]!r}): the member was predicted with other prediction settings, "
                    "so its spread would hold the settings' difference; rerun predict_member "
                    "for its tiles (snakemake <target> --cores N -R <their files>)")
        groups.append(group)
    if by_sha:
        sha, stray_tiles = next(iter(by_sha.items()))
        stray = stray_tiles[0]
        if sha == main.model_sha256:
            raise InputError(f"{stray}: predicted with the map's own model, not an ensemble "
                             "member; pass the members' tiles (rule predict_member)")
        raise InputError(f"{stray}: predicted with a model that is neither an ensemble member "
                         "given nor the map's; pass only the members' tiles")
    return groups


def make_uncertainty_products(
    region: Region,
    task: str,
    model_path: str | Path,
    tiles: list[str | Path],
    out: str | Path,
    *,
    member_models: list[str | Path] = (),
    member_tiles: list[str | Path] = (),
    sources_dir: str | Path | None = None,
) -> Products:
    """The uncertainty product of the map made from ``tiles`` (the map's model's predictions,
    checked against ``model_path``), with the ensemble band when ``member_models`` are given
    (their predictions of the same tiles in ``member_tiles``)."""
    spec = get_task(task)
    main = check_tiles(tiles, task, spec.n_outputs)
    check_mapped_tiles(region, task, main)
    model_sha = check_model(main, model_path)
    members = member_tilesets(list(member_tiles), task, main, list(member_models))
    synthetic = stated_synthetic(region, main, *members)
    member_shas = [m.model_sha256 or "" for m in members]
    bands = uncertainty_bands(spec, len(members))
    paths = uncertainty_paths(out)
    units = ("; ".join(f"band {i} {name} (0..1)" for i, (name, _) in enumerate(bands, start=1))
             + ", stored as percent (value x 0.01); definitions in MAPPER_UNCERTAINTY")
    tags = provenance_tags(region, task, model_sha, units, sources_dir, synthetic=synthetic)
    tags.update({
        "MAPPER_PRODUCT": f"Uncertainty of the {spec.title.lower()} map ({task}), region "
                          f"{region.name}",
        "TIFFTAG_IMAGEDESCRIPTION": f"Uncertainty of the {spec.title.lower()} map, region "
                                    f"{region.name}" + (" (SYNTHETIC)" if synthetic else ""),
        "MAPPER_UNCERTAINTY": json.dumps({name: what for name, what in bands}),
        "MAPPER_ENSEMBLE": (f"{len(members)} members besides the map's model, each fine-tuned "
                            "from the same pretrained checkpoint with training.seed + k"
                            if members else "none (prediction.ensemble 0): entropy only"),
        "MAPPER_ENSEMBLE_MODELS_SHA256": json.dumps(member_shas),
        "MAPPER_VALUES": "percent 0..100 (scale 0.01, so 0..1), 255 nodata",
    })
    cog = paths["cog"]
    keys = list(paths)  # the COG first: it is renamed into place last
    with staged_paths([paths[k] for k in keys]) as staged_list:
        staged = dict(zip(keys, staged_list, strict=True))
        workdir = staged["cog"].parent.parent
        vrts = [write_vrt(main.paths, workdir / "map.vrt", TILE_FIX)]
        vrts += [write_vrt(m.paths, workdir / f"member{k}.vrt", TILE_FIX)
                 for k, m in enumerate(members, start=1)]
        with reading(f"a predicted {task} tile", TILE_FIX,
                     [p for tileset in (main, *members) for p in tileset.paths]):
            raw = _write_raw(vrts, spec, bands, tags, workdir / "raw.tif", region, cog)
        to_cog(raw, staged["cog"], resampling="AVERAGE", name=cog)
        with rasterio.open(staged["cog"]) as ds:
            bounds, shape, transform, res = tuple(ds.bounds), ds.shape, ds.transform, ds.res[0]
        write_ramp_quicklook(
            staged["cog"], staged["quicklook"],
            [f"{name.replace('_', ' ')} (%)" for name, _ in bands], UNCERTAINTY_RAMP,
            f"Uncertainty of the {spec.title.lower()} map, {region.name}", synthetic,
            outline=region.boundary(),
            area=region.area() if region.settings["buffer_m"] > 0 else None,
            maxima=[QUICKLOOK_MAX_PERCENT.get(name, 100) for name, _ in bands])
        staged["style"].write_text(ramp_qml(UNCERTAINTY_RAMP))
        item = _item(region, spec, paths, bands, (bounds, shape, transform, res), model_sha,
                     member_shas, synthetic)
        write_item(item, staged["item"])
        remove_aux(cog)
    products = Products(cog, paths["quicklook"], paths["style"], paths["item"])
    logger.info("wrote %s", ", ".join(str(p) for p in products.all()))
    return products


def _write_raw(vrts: list[Path], task: Task, bands: list[tuple[str, str]],
               tags: dict[str, str], raw: Path, region: Region, cog: Path) -> Path:
    """The raw (not yet COG) product over the mapped area's bounding box, block row by block
    row: band 1 from the map's tiles, band 2 from the map's and the members' tiles. A failed
    write (a full disk) names the product ``cog``, not a tile (:func:`mapper.raster.writing`)."""
    with contextlib.ExitStack() as opened:
        sources = [opened.enter_context(rasterio.open(v)) for v in vrts]
        src = sources[0]
        area = area_window(region, src)
        for other in sources[1:]:
            if other.transform != src.transform or other.shape != src.shape:
                raise InputError(f"{other.name}: the member's tiles do not cover the map's "
                                 "tiles; predict every tile with every member")
        width, height = int(area.width), int(area.height)
        grid = {"width": width, "height": height, "transform": src.window_transform(area),
                "crs": src.crs.to_string(), "dtype": "uint8", "nodata": PERCENT_NODATA}
        windows = block_windows(width, height)
        with raster_writer(raw, name=cog, count=len(bands), **grid) as dst, \
                progress_bar(len(windows), f"mosaic {task.name} uncertainty", "block") as blocks:
            for win in windows:
                at = Window(win.col_off + area.col_off, win.row_off + area.row_off, win.width,
                            win.height)
                probs = [s.read(window=at) for s in sources]  # each [n_out, h, w], NaN nodata
                percent = to_percent(_measures(probs, task))
                with writing(cog):
                    dst.write(percent, window=win)
                blocks.update()
            for i, (name, what) in enumerate(bands, start=1):
                dst.set_band_description(i, name)
                dst.update_tags(i, STORED="percent 0..100; value x 0.01 = the measure (0..1); "
                                "255 nodata", DEFINITION=what)
            dst.scales = (0.01,) * len(bands)
            dst.offsets = (0.0,) * len(bands)
            dst.units = tuple(_unit(name) for name, _ in bands)
            dst.update_tags(**tags)
    return raw


def _measures(probs: list[np.ndarray], task: Task) -> np.ndarray:
    """[bands, h, w] measures in 0..1 (NaN nodata) from the map's and members' probabilities."""
    main = probs[0]
    out = [normalised_entropy(class_probabilities(main, task.binary))]
    if len(probs) > 1:
        if task.binary:
            out.append(ensemble_spread(np.stack([p[0] for p in probs])))
        else:
            out.append(disagreement(most_probable(main),
                                    np.stack([most_probable(p) for p in probs[1:]])))
        out[1][~np.isfinite(out[0])] = np.nan  # nodata where the map is nodata
    return np.stack(out)


QUICKLOOK_MAX_PERCENT = {"ensemble_std": 50}
"""The top of a band's quick-look colour bar where it is not 100 %: a standard deviation of
probabilities (values in 0..1) is at most 0.5, so a 0-100 % bar would leave half its colours
unused. The COG's values and its QGIS style are not affected."""


def _unit(band: str) -> str:
    return {"ensemble_std": "probability", "ensemble_disagreement": "share of members"}.get(
        band, "normalised entropy")


def _item(region: Region, task: Task, paths: dict[str, Path], bands: list[tuple[str, str]],
          grid: tuple, model_sha: str, member_shas: list[str], synthetic: bool) -> Any:
    """The product's STAC Item: the COG (one raster band per measure), quick-look and style."""
    bounds, shape, transform, res = grid
    names = ", ".join(name for name, _ in bands)
    assets = {
        "data": ProductAsset(paths["cog"], f"{capital(task.subject)} map uncertainty ({names}; "
                             "percent, scale 0.01)", ["data"], COG_MEDIA_TYPE,
                             bands=[percent_band(res, _unit(name)) for name, _ in bands]),
        **side_assets(paths),
    }
    props = item_properties(
        region, task, f"Uncertainty of the {task.title.lower()} map, {region.name}",
        "; ".join(f"band {i} {name}: {what}" for i, (name, what) in enumerate(bands, start=1)),
        model_sha, res, synthetic)
    props["mapper:ensemble_models_sha256"] = member_shas
    return build_item(f"{task.name}_{region.name}_uncertainty", bounds=bounds, shape=shape,
                      transform=transform, assets=assets, properties=props,
                      start_end=source_period(region), area=region.area())
