"""Does the uncertainty mean something? A synthetic region's maps against its hidden truth, by
decile of each band of their uncertainty products (:mod:`mapper.uncertainty`).

Only synthetic regions have a truth (:mod:`mapper.truth`: ``resources/<region>/truth/<task>.tif``
on the 10 m lattice, which the products share at the default out_res). Over every pixel valid in
the map, its uncertainty product and the truth, per band of the uncertainty product:

- binary task (NSP): the class error ``|[map > 0.5] - [truth > 0.5]|`` (the map's class at 0.5
  against the truth's) and the absolute probability error ``|map - truth|``;
- multiclass task (soil order): the class error ``[map class != truth class]``;

each averaged over the ten deciles of the band (:func:`mapper.uncertainty.error_by_decile`), with
the Spearman correlation of decile and error rate. Written: ``<out>.md`` (tables), ``<out>.json``
(every figure) and ``<out stem>_deciles.png`` (error rate against decile, one panel per task).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import from_bounds

from mapper.bands import CLASS_NODATA
from mapper.config import Region
from mapper.errors import InputError
from mapper.files import atomic_path, staged_paths
from mapper.products.cog import PERCENT_NODATA
from mapper.raster import open_raster
from mapper.report import strict_json
from mapper.resolution import block_mean
from mapper.tasks import Task, get_task, tagged_task
from mapper.truth import check_truth_kind
from mapper.uncertainty import error_by_decile, rank_correlation


def read_on_grid(path: str | Path, like: rasterio.DatasetReader, classes: bool = False
                 ) -> np.ndarray:
    """Band 1 of ``path`` over the grid of ``like`` (same CRS; a window of it), float64 with NaN
    for its nodata and outside it.

    A map at a coarser ``prediction.out_res`` than the truth's 10 m (an integer multiple, on the
    same lattice) is compared with the truth aggregated to its cells: the mean of each cell's
    valid values, or for ``classes`` the most frequent class (the lowest on a tie).
    """
    with open_raster(path) as ds:
        factor = like.res[0] / ds.res[0]
        k = round(factor)
        if ds.crs != like.crs or ds.res[0] != ds.res[1] or k < 1 or abs(factor - k) > 1e-9:
            raise InputError(f"{path}: not on the grid of {like.name} (CRS and pixel size, or a "
                             "pixel size that divides the map's); compare rasters of the same "
                             "lattice")
        win = from_bounds(*like.bounds, transform=ds.transform).round_offsets().round_lengths()
        nodata = ds.nodata if ds.nodata is not None else np.nan
        data = ds.read(1, window=win, boundless=True, fill_value=nodata).astype(np.float64)
    if np.isfinite(nodata):
        data[data == nodata] = np.nan
    if k == 1:
        return data
    if data.shape != (like.height * k, like.width * k):
        raise InputError(f"{path}: its pixels do not nest in the cells of {like.name}; compare "
                         "rasters of the same lattice")
    return block_mode(data, k) if classes else block_mean(data, k)


def block_mode(fine: np.ndarray, factor: int) -> np.ndarray:
    """The most frequent finite value of each ``factor`` x ``factor`` block of ``fine`` (the lowest
    on a tie), NaN where a block has none."""
    h, w = fine.shape
    blocks = fine.reshape(h // factor, factor, w // factor, factor)
    values = np.unique(fine[np.isfinite(fine)])
    out = np.full((h // factor, w // factor), np.nan)
    best = np.zeros(out.shape, dtype=np.int64)
    for value in values:
        count = (blocks == value).sum(axis=(1, 3))
        more = count > best
        out[more], best[more] = value, count[more]
    return out


def task_deciles(task: Task, map_path: str | Path, uncertainty_path: str | Path,
                 truth_path: str | Path) -> dict[str, Any]:
    """The decile tables of one task's map (see the module docstring)."""
    with open_raster(map_path) as m, open_raster(uncertainty_path) as u:
        if (m.transform, m.shape, m.crs) != (u.transform, u.shape, u.crs):
            raise InputError(f"{uncertainty_path}: not on the grid of {map_path}; make both from "
                             "the same predicted tiles")
        mapped = m.read(1)
        scale = m.scales[0] or 1.0
        bands = {name: u.read(i) for i, name in enumerate(u.descriptions, start=1)}
        truth = read_on_grid(truth_path, m, classes=task.multiclass)
    if task.binary:
        ok = mapped != PERCENT_NODATA
        p = np.where(ok, mapped * scale, np.nan)
        errors = {"class_error": np.abs((p > 0.5).astype(float) - (truth > 0.5)),
                  "abs_probability_error": np.abs(p - truth)}
    else:
        ok = mapped != CLASS_NODATA
        errors = {"class_error": (mapped != truth).astype(float)}
    valid = ok & np.isfinite(truth)
    out: dict[str, Any] = {"map": str(map_path), "uncertainty": str(uncertainty_path),
                           "truth": str(truth_path), "bands": {}}
    for name, stored in bands.items():
        inside = valid & (stored != PERCENT_NODATA)
        u_values = np.where(inside, stored * 0.01, np.nan)
        entry: dict[str, Any] = {"pixels": int(inside.sum())}
        for kind, err in errors.items():
            rows = error_by_decile(u_values, np.where(inside, err, np.nan))
            entry[kind] = {"deciles": rows, "spearman": rank_correlation(rows),
                           "overall": float(np.nanmean(np.where(inside, err, np.nan)))}
        out["bands"][name] = entry
    return out


def check_inputs(task: Task, map_path: str | Path, uncertainty_path: str | Path,
                 truth_path: str | Path) -> None:
    """Refuse an uncertainty product of another task than its map, and a truth raster of the other
    kind (a probability for a binary task, a class index for a multiclass one): given out of order,
    they would give figures of no meaning rather than an error."""
    with open_raster(uncertainty_path) as ds:
        other = ds.tags().get("MAPPER_TASK", task.name)
        its_model = ds.tags().get("MAPPER_MODEL_SHA256")
    if other != task.name:
        raise InputError(f"{uncertainty_path}: the uncertainty of {other}, not of {task.name} "
                         f"({map_path}); give the uncertainty products in the order of the maps")
    with open_raster(map_path) as ds:
        map_model = ds.tags().get("MAPPER_MODEL_SHA256")
    if its_model and map_model and its_model != map_model:
        raise InputError(
            f"{uncertainty_path}: made with model {its_model[:12]}..., but {map_path} with "
            f"{map_model[:12]}...: one of them is older; make the older again from the same "
            "predicted tiles (the workflow remakes both together)"
        )
    check_truth_kind(truth_path, task, f" ({map_path}); give the truth rasters in the order of "
                     "the maps (resources/<region>/truth/<task>.tif)")


def write_uncertainty_report(region: Region, maps: list[str], uncertainty: list[str],
                             truth: list[str], out: str | Path) -> list[Path]:
    """The report of every task whose map, uncertainty product and truth are given (in the same
    order; tasks named by the maps' ``MAPPER_TASK`` tag). Returns the files written."""
    if not region.synthetic:
        raise InputError(f"region {region.name} is not synthetic: it has no hidden truth to "
                         "check its uncertainty against")
    if not len(maps) == len(uncertainty) == len(truth):
        raise InputError("uncertainty-report: give one uncertainty product and one truth raster "
                         "per map, in the same order")
    figures: dict[str, Any] = {"region": region.name, "synthetic": True, "tasks": {}}
    for m, u, t in zip(maps, uncertainty, truth, strict=True):
        if not Path(t).is_file():
            raise InputError(f"{t}: no truth raster; run the demo's sources (rule demo_sources)")
        with open_raster(m) as ds:
            task = tagged_task(m, ds.tags())
        name = task.name
        if name in figures["tasks"]:  # the second would replace the first's figures
            raise InputError(f"{m}: a second {name} map; give each task's map once")
        check_inputs(task, m, u, t)
        figures["tasks"][name] = task_deciles(task, m, u, t)
    out = Path(out)
    paths = [out, out.with_suffix(".json"), out.with_name(f"{out.stem}_deciles.png")]
    with staged_paths(paths) as (md, js, png):  # all or none
        js.write_text(json.dumps(strict_json(figures), indent=2) + "\n")
        _plot(figures, png)
        md.write_text(_markdown(figures, paths[2].name))
    return paths


ERROR_WORDS = {
    "class_error": "error rate (map class != truth class)",
    "abs_probability_error": "mean abs(map - truth) probability",
}


def _markdown(figures: dict[str, Any], figure_name: str) -> str:
    lines = [
        f"# Uncertainty against the hidden truth, region {figures['region']}",
        "",
        "SYNTHETIC: the region and its truth are synthetic (the demo's); the figures show how the "
        "uncertainty products behave, not how they do on a real place.",
        "",
        "Each map pixel valid in the map, its uncertainty product and the truth, sorted by one "
        "band of the uncertainty product and cut into ten deciles of equal count (1 = least "
        "uncertain). Error rate: share of pixels whose map class differs from the truth's (NSP: "
        "classes at 0.5). Spearman: rank correlation of decile and error (1 = rising at every "
        "decile).",
        "",
        f"![error by decile]({figure_name})",
    ]
    for name, entry in figures["tasks"].items():
        task = get_task(name)
        for band, b in entry["bands"].items():
            kinds = [k for k in ERROR_WORDS if k in b]
            lines += ["", f"## {task.heading}: {band.replace('_', ' ')}", "",
                      f"{b['pixels']:,} pixels; overall " + ", ".join(
                          f"{ERROR_WORDS[k]} {b[k]['overall']:.3f}" for k in kinds) + "; "
                      + ", ".join(f"Spearman ({k.replace('_', ' ')}) {b[k]['spearman']:.2f}"
                                  for k in kinds), ""]
            header = "| decile | uncertainty range | mean | pixels | " + " | ".join(
                ERROR_WORDS[k] for k in kinds) + " |"
            lines += [header, "|" + " --- |" * (4 + len(kinds))]
            for i, row in enumerate(b[kinds[0]]["deciles"]):
                cells = [str(row["decile"]),
                         f"{row['uncertainty_min']:.2f}-{row['uncertainty_max']:.2f}",
                         f"{row['uncertainty_mean']:.3f}", f"{row['pixels']:,}"]
                cells += [f"{b[k]['deciles'][i]['error']:.3f}" for k in kinds]
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(figures: dict[str, Any], path: Path) -> None:
    """Error rate (class error) against decile: one panel per task, one line per band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = figures["tasks"]
    fig = Figure(figsize=(4.6 * max(1, len(tasks)) + 0.4, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    for j, (name, entry) in enumerate(tasks.items(), start=1):
        ax = fig.add_subplot(1, max(1, len(tasks)), j)
        for band, b in entry["bands"].items():
            rows = b["class_error"]["deciles"]
            ax.plot([r["decile"] for r in rows], [r["error"] for r in rows], marker="o", ms=3,
                    label=f"{band.replace('_', ' ')} (Spearman {b['class_error']['spearman']:.2f})")
        ax.set_xlabel("decile of uncertainty (1 = least uncertain)", fontsize=8)
        ax.set_ylabel("error rate (map class vs truth)", fontsize=8)
        ax.set_title(get_task(name).heading, fontsize=9)
        ax.set_ylim(bottom=0)
        ax.set_xticks(range(1, 11))
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{figures['region']} (SYNTHETIC): error rate by decile of uncertainty",
                 fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
