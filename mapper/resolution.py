"""Resolution consistency (the MiSo paper's experiment): a region's maps made by the same models
at coarser out_res against its 10 m map aggregated to the same cells, and what each resolution
costs to predict.

The implicit decoder answers at any coordinate, so the same checkpoints predict a map at 20 m by
querying each 20 m cell's centre once (:mod:`mapper.blending`: an out cell of ``factor`` x
``factor`` lattice pixels, its centre at ``(R + 0.5) * factor``). A consistent model gives there
what its 10 m map says on average over the cell. Per coarser out_res, over the cells valid in
both:

- the 10 m map aggregated to each coarse cell: the mean of its valid 10 m probabilities (per class
  for a multiclass task), the coarse cell covering 10 m pixels ``[R*factor, (R+1)*factor)``;
- binary task (NSP): class agreement at 0.5 (``[coarse > 0.5] == [aggregated > 0.5]``) and the
  mean absolute difference of the probabilities;
- multiclass task (soil order): class agreement (most probable class of the coarse map against
  that of the aggregated 10 m probabilities).

Cost: the sum over a resolution's predict jobs of the seconds each logged (the line
``<tile>: N crops (K skipped), M queries, T s (...)`` of :mod:`mapper.predict`), with the crops
and queries. The encoders run once per crop whatever the out_res; the decoder once per query,
a quarter as many at 20 m.

Out resolutions must be whole multiples of the lattice's 10 m. Where the ratio does not divide
the tile size (50 m on 512 px or 4096 px tiles), a tile holds the cells whose centre lies in it
(:meth:`mapper.blending.CropLattice.out_window`); only coarse cells wholly on the 10 m map are
compared (:func:`coarse_cells_in`).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window

from mapper.config import Region
from mapper.errors import InputError
from mapper.experiment import COMPARED_RES  # noqa: F401 - the report's resolutions, re-exported
from mapper.files import staged_paths
from mapper.grid import TILE_PATTERN
from mapper.products.mosaic import TILE_FIX
from mapper.raster import open_raster, reading, tag_is_true
from mapper.report import strict_json
from mapper.tasks import TASKS, Task, get_task, tagged_task
from mapper.uncertainty import most_probable
from mapper.vrt import write_vrt

PREDICT_LINE = re.compile(
    rf"(?P<tile>{TILE_PATTERN}): (?P<crops>\d+) crops \((?P<skipped>\d+) skipped\), "
    r"(?P<queries>\d+) queries, (?P<seconds>[\d.]+) s"
)
"""The line a predict job logs once its tile is written (:func:`mapper.predict.predict_tile`)."""

STRIP_CELLS = 64
"""Coarse rows compared at once (x factor 10 m rows of every band)."""


def block_mean(fine: np.ndarray, factor: int) -> np.ndarray:
    """Mean of the finite values of each ``factor`` x ``factor`` block of the last two axes of
    ``fine`` (their sizes multiples of ``factor``); NaN where a block has none."""
    *lead, h, w = fine.shape
    blocks = fine.reshape(*lead, h // factor, factor, w // factor, factor)
    finite = np.isfinite(blocks)
    total = np.where(finite, blocks, 0.0).sum(axis=(-3, -1), dtype=np.float64)
    count = finite.sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def agreement(coarse: np.ndarray, aggregated: np.ndarray, binary: bool) -> dict[str, float]:
    """Agreement of a coarse map's probabilities with the aggregated 10 m ones, both [n_out,
    h, w] (NaN nodata), over the cells valid in both: counts and sums, so that strips add up
    (:func:`summarise`)."""
    valid = np.isfinite(coarse).all(axis=0) & np.isfinite(aggregated).all(axis=0)
    if binary:
        c, a = coarse[0][valid], aggregated[0][valid]
        return {"cells": int(valid.sum()), "same_class": int(((c > 0.5) == (a > 0.5)).sum()),
                "abs_diff_sum": float(np.abs(c - a).sum())}
    same = most_probable(coarse) == most_probable(aggregated)
    return {"cells": int(valid.sum()), "same_class": int(same[valid].sum())}


def summarise(counts: dict[str, float]) -> dict[str, float]:
    """Class agreement (share) and, for a binary task, the mean absolute difference."""
    n = counts["cells"]
    n = int(n)
    out = {"cells": n, "class_agreement": counts["same_class"] / n if n else math.nan}
    if "abs_diff_sum" in counts:
        out["mean_abs_diff"] = counts["abs_diff_sum"] / n if n else math.nan
    return out


def coarse_cells_in(fine: rasterio.DatasetReader, coarse: rasterio.DatasetReader,
                    factor: int) -> tuple[Window, int, int] | None:
    """The coarse raster's cells that lie wholly on the fine raster (a window of ``coarse``), and
    the fine column and row of that window's first cell.

    Both are on grids aligned with the lattice, so a coarse cell covers exactly ``factor`` x
    ``factor`` fine pixels; the coarse tiles may reach up to half a cell beyond the fine ones (a
    tile holds the out cells whose centre lies in it), and those cells are left out. None when
    the two grids are not aligned."""
    res = fine.res[0]
    dx = (coarse.transform.c - fine.transform.c) / res  # fine pixels from fine to coarse origin
    dy = (fine.transform.f - coarse.transform.f) / res
    if abs(dx - round(dx)) > 1e-6 or abs(dy - round(dy)) > 1e-6:
        return None
    dx, dy = round(dx), round(dy)
    c0, r0 = max(0, -(dx // factor)), max(0, -(dy // factor))  # first cell starting at >= 0
    c1 = min(coarse.width, (fine.width - dx) // factor)
    r1 = min(coarse.height, (fine.height - dy) // factor)
    window = Window(c0, r0, max(0, c1 - c0), max(0, r1 - r0))
    return window, dx + c0 * factor, dy + r0 * factor


def compare(fine_vrt: Path, coarse_vrt: Path, binary: bool,
            coarse_name: str | None = None) -> dict[str, float]:
    """A coarse map's agreement with the reference map (10 m by default) aggregated to its cells
    (module docstring), over the coarse cells wholly on the reference map, streamed in strips
    of :data:`STRIP_CELLS` coarse rows. ``coarse_name``: how messages name the coarse map (its
    tiles, not a VRT that is gone by the time the user reads them)."""
    with rasterio.open(fine_vrt) as fine, rasterio.open(coarse_vrt) as coarse:
        factor = round(coarse.res[0] / fine.res[0])
        same = abs(coarse.res[0] - factor * fine.res[0]) <= 1e-9 and coarse.count == fine.count
        found = coarse_cells_in(fine, coarse, factor) if same else None
        if found is None or found[0].width == 0 or found[0].height == 0:
            raise InputError(
                f"{coarse_name or coarse_vrt}: the coarse tiles are not cells of the reference "
                "tiles' lattice (same region and lattice, an out_res a multiple of the map's); "
                f"{TILE_FIX}"
            )
        window, fc, fr = found
        width, height = int(window.width), int(window.height)
        total: dict[str, float] = defaultdict(float)
        for r in range(0, height, STRIP_CELLS):
            h = min(STRIP_CELLS, height - r)
            c = coarse.read(window=Window(window.col_off, window.row_off + r, width, h))
            f = fine.read(window=Window(fc, fr + r * factor, width * factor, h * factor))
            for key, value in agreement(c.astype(np.float64), block_mean(f, factor),
                                        binary).items():
                total[key] += value
    return summarise(dict(total))


def logged_costs(logs: list[str | Path]) -> list[dict[str, Any]]:
    """Per predict log: tile, crops, queries and seconds of its last :data:`PREDICT_LINE`."""
    costs = []
    for log in map(Path, logs):
        if not log.is_file():
            raise InputError(f"{log}: no such predict log; rerun that predict job (snakemake "
                             "--cores 1 -R <its tile>) so that its time is logged")
        found = PREDICT_LINE.findall(log.read_text(errors="replace"))
        if not found:
            raise InputError(f"{log}: no '<tile>: N crops (K skipped), M queries, T s' line; "
                             "rerun that predict job")
        tile, crops, _, queries, seconds = found[-1]
        costs.append({"tile": tile, "crops": int(crops), "queries": int(queries),
                      "seconds": float(seconds)})
    return costs


def resolution_figures(tiles: list[str | Path], logs: list[str | Path],
                       workdir: Path) -> dict[str, Any]:
    """Every compared resolution's agreement and cost, from predicted tiles of every task and
    out_res (told by their ``MAPPER_TASK`` and ``MAPPER_OUT_RES`` tags) and each tile's predict
    log (``logs[i]`` is the log of the job that wrote ``tiles[i]``)."""
    if len(tiles) != len(logs):
        raise InputError(f"resolution report: {len(tiles)} tiles but {len(logs)} predict logs; "
                         "give each tile's log, in the same order")
    groups: dict[tuple[str, float], list[Path]] = defaultdict(list)
    cost: dict[tuple[str, float], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    synthetic = False
    for path, c in zip(map(Path, tiles), logged_costs(logs), strict=True):
        with open_raster(path) as ds:
            tags = ds.tags()
        synthetic |= tag_is_true(tags, "MAPPER_SYNTHETIC")
        if path.stem != c["tile"]:
            raise InputError(f"{path}: its log names tile {c['tile']}; give each tile's own log")
        key = (tagged_task(path, tags).name, float(tags.get("MAPPER_OUT_RES", "nan")))
        groups[key].append(path)
        for k in ("crops", "queries", "seconds"):
            cost[key][k] += c[k]
        cost[key]["jobs"] += 1
    out: dict[str, Any] = {"synthetic_tiles": synthetic, "tasks": {}}
    for task in sorted({t for t, _ in groups}):
        spec = get_task(task)
        resolutions = sorted(r for t, r in groups if t == task)
        if len(resolutions) < 2:
            raise InputError(f"resolution report: {task} tiles at one out_res only; give the "
                             "map's predicted tiles and those at a coarser out_res")
        reference = resolutions[0]  # the map's (10 m by default)
        fine = write_vrt(sorted(groups[(task, reference)]), workdir / f"{task}_reference.vrt",
                         TILE_FIX)
        entry: dict[str, Any] = {}
        for res in resolutions:
            figures: dict[str, Any] = {k: v for k, v in cost[(task, res)].items()}
            if res != reference:
                these = sorted(groups[(task, res)])
                coarse = write_vrt(these, workdir / f"{task}_{res:g}m.vrt", TILE_FIX)
                with reading(f"a predicted {task} tile", TILE_FIX,
                             groups[(task, reference)] + groups[(task, res)]):
                    figures.update(compare(fine, coarse, spec.binary,
                                           f"{these[0]} (a {task} tile at {res:g} m)"))
            entry[f"{res:g}"] = figures
        out["tasks"][task] = entry
    return out


def write_resolution_report(region: Region, tiles: list[str | Path], logs: list[str | Path],
                            out: str | Path) -> list[Path]:
    """``<out>.md`` (the table) and ``<out>.json`` (every figure); returns the files written."""
    out = Path(out)
    paths = [out, out.with_suffix(".json")]
    with staged_paths(paths) as (md, js):  # both or neither
        figures = resolution_figures(tiles, logs, md.parent.parent)
        synthetic = region.synthetic or figures.pop("synthetic_tiles")
        figures = {"region": region.name, "synthetic": synthetic, **figures}
        js.write_text(json.dumps(strict_json(figures), indent=2) + "\n")
        md.write_text(_markdown(figures))
    return paths


def _markdown(figures: dict[str, Any]) -> str:
    tasks = figures["tasks"]
    specs = list(TASKS.items())  # every task a column, "n/a" where it was not predicted
    resolutions = sorted({float(r) for t in tasks.values() for r in t})
    base_key = f"{resolutions[0]:g}" if resolutions else ""
    lines = [f"# Resolution consistency, region {figures['region']}", ""]
    if figures["synthetic"]:
        lines += ["SYNTHETIC: the maps' sources are synthetic; the figures show how the maps "
                  "behave, not a real place.", ""]
    lines += [
        "The same models predict the region at each out_res (one query per out cell, at its "
        f"centre); each coarse map is compared with the {base_key} m map aggregated to its "
        f"cells (mean of the {base_key} m probabilities over the cell), over the cells valid in "
        "both. A binary task (NSP): class agreement at 0.5 and mean absolute probability "
        "difference; a multiclass one: agreement of the most probable class. Time: the sum of "
        "the predict jobs' logged seconds (each with the threads its profile gives predict: 2 "
        "in the default one, 4 in SLURM's), with their crops and decoder queries.",
        "",
        "| out_res | " + " | ".join(head for _, spec in specs for head in _heads(spec))
        + f" | cells | predict seconds ({' + '.join(_short(spec) for _, spec in specs)}) "
        f"| queries | time vs {base_key or '10'} m |",
        "| --- " * (5 + sum(len(_heads(spec)) for _, spec in specs)) + "|",
    ]
    base = sum(t.get(base_key, {}).get("seconds", 0.0) for t in tasks.values())
    for res in resolutions:
        key = f"{res:g}"
        seconds = sum(t.get(key, {}).get("seconds", 0.0) for t in tasks.values())
        queries = sum(t.get(key, {}).get("queries", 0) for t in tasks.values())
        counts = [tasks[name][key]["cells"] for name, _ in specs
                  if "cells" in tasks.get(name, {}).get(key, {})]
        row = [f"{key} m"]
        for name, spec in specs:
            entry = tasks.get(name, {}).get(key, {})
            row.append(_share(entry, "class_agreement"))
            if spec.binary:
                row.append(f"{entry['mean_abs_diff']:.4f}" if "mean_abs_diff" in entry
                           else _share(entry, ""))
        row += [
            _cells(counts),
            f"{seconds:,.1f}",
            f"{int(queries):,}",
            f"{seconds / base:.2f}" if base else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _cells(counts: list[int]) -> str:
    """The cells compared: one count where every task compared the same cells, else each task's
    (in the columns' order, " / " between)."""
    if len(set(counts)) > 1:
        return " / ".join(f"{n:,}" for n in counts)
    return f"{counts[0]:,}" if counts else ""


def _short(spec: Task) -> str:
    """A task in a column heading: its abbreviation, else its subject."""
    return spec.abbreviation or spec.subject


def _heads(spec: Task) -> list[str]:
    """A task's columns: class agreement, and for a binary task the mean absolute difference
    of the probability; a multiclass task's agreement is of the most probable class."""
    if spec.binary:
        return [f"{_short(spec)} class agreement", f"{_short(spec)} mean abs. prob. difference"]
    return [f"{_short(spec)} agreement"]


def _share(entry: dict[str, Any], key: str) -> str:
    """A share in percent; the 10 m row is the reference, a task not predicted is n/a."""
    if not entry:
        return "n/a"
    return f"{100 * entry[key]:.1f} %" if key in entry else "(reference)"
