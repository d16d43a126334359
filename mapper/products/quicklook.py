"""Quick-look PNGs of the map products: the product drawn with its legend, for a glance.

Read from the product COG's overviews (a decimated read: GDAL picks the nearest overview), so
drawing a statewide product costs what drawing a small one does. Values are the product's stored
encoding: a binary task's UInt8 percent (0..100) in the task's ramp, a multiclass task's class
index in the task's colours; 255 is nodata and left blank. The region's boundary is drawn as a
black line and, when it is buffered, the mapped area's outline dashed. Axes in km of EPSG:3338.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely

from mapper import __version__
from mapper.files import atomic_path
from mapper.products.cog import PERCENT_NODATA
from mapper.products.colours import hex_colour
from mapper.tasks import RGB, Task


def capital(text: str) -> str:
    """``text`` with its first letter in upper case (the rest as is)."""
    return text[:1].upper() + text[1:]


def outline_lines(geometry: shapely.Geometry, tolerance: float) -> list[np.ndarray]:
    """The rings of a (multi)polygon as [n, 2] arrays in km, simplified to ``tolerance`` metres
    (a quick-look pixel: a statewide coast is drawn with a few thousand points, not all)."""
    simple = shapely.simplify(geometry, tolerance) if tolerance > 0 else geometry
    rings = shapely.get_rings(shapely.get_parts(simple))
    return [shapely.get_coordinates(r) / 1000.0 for r in rings]


def _read_decimated(cog: Path, band: int, max_px: int) -> tuple[np.ndarray, tuple, float]:
    """Band ``band`` of ``cog`` at most ``max_px`` a side (GDAL picks the nearest overview),
    its extent in km (left, right, bottom, top) and its decimated pixel size in metres."""
    with rasterio.open(cog) as src:
        scale = max(1.0, max(src.width, src.height) / max_px)
        shape = (max(1, round(src.height / scale)), max(1, round(src.width / scale)))
        data = src.read(band, out_shape=shape)
        left, bottom, right, top = src.bounds
    return data, (left / 1000, right / 1000, bottom / 1000, top / 1000), (right - left) / shape[1]


def _outline_and_axes(ax: Any, extent: tuple, pixel_m: float, outline: shapely.Geometry | None,
                      area: shapely.Geometry | None) -> None:
    """The boundary (solid) and mapped area (dashed) over a panel, with its km axes."""
    for geometry, style in ((outline, "-"), (area, "--")):
        if geometry is None or geometry.is_empty:
            continue
        for line in outline_lines(geometry, pixel_m):
            ax.plot(line[:, 0], line[:, 1], style, color="black", linewidth=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set_xlabel("x (km, EPSG:3338)")
    ax.set_ylabel("y (km, EPSG:3338)")


def _save(fig: Any, png: Path, synthetic: bool) -> Path:
    if synthetic:
        fig.text(0.5, 0.01, "Synthetic data: describes no real place", ha="center",
                 color="firebrick")
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": f"mapper {__version__}"})
    return png


def _ramp_cmap(name: str, ramp: Sequence[tuple[float, RGB]]) -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    return LinearSegmentedColormap.from_list(
        name, [(v, tuple(c / 255 for c in rgb)) for v, rgb in ramp])


def write_quicklook(cog: Path, png: Path, task: Task, title: str, synthetic: bool,
                    max_px: int = 1024, outline: shapely.Geometry | None = None,
                    area: shapely.Geometry | None = None) -> Path:
    """A PNG with legend of the product, read from its overviews (at most ``max_px`` a side):
    a binary task's probability in its ramp, a multiclass task's classes in their colours;
    ``outline`` (the region's boundary, EPSG:3338) drawn solid, ``area`` (the buffered mapped
    area) dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    data, extent, pixel_m = _read_decimated(cog, 1, max_px)
    fig = Figure(figsize=(8, 6.5), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_equal(data, PERCENT_NODATA)
    if task.binary:
        im = ax.imshow(masked, cmap=_ramp_cmap(task.name, task.ramp), vmin=0, vmax=100,
                       extent=extent, interpolation="nearest")
        bar = fig.colorbar(im, ax=ax, shrink=0.8)
        bar.set_label(f"probability of {task.subject} (%)")
    else:
        classes = task.classes
        colours = [tuple(c / 255 for c in rgb) for rgb in task.colours]
        cmap = ListedColormap(colours)
        norm = BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes))
        ax.imshow(masked, cmap=cmap, norm=norm, extent=extent, interpolation="nearest")
        handles = [Patch(facecolor=hex_colour(rgb), edgecolor="none", label=name)
                   for name, rgb in zip(classes, task.colours, strict=True)]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                  title=capital(task.subject))
    _outline_and_axes(ax, extent, pixel_m, outline, area)
    ax.set_title(title + (" — SYNTHETIC" if synthetic else ""))
    return _save(fig, png, synthetic)


def write_ramp_quicklook(cog: Path, png: Path, labels: Sequence[str],
                         ramp: Sequence[tuple[float, RGB]], title: str, synthetic: bool,
                         max_px: int = 1024, outline: shapely.Geometry | None = None,
                         area: shapely.Geometry | None = None,
                         maxima: Sequence[int] | None = None) -> Path:
    """A PNG of a UInt8-percent product with one panel per band (``labels``, in band order),
    each in ``ramp`` (stops over 0..1) with its colour bar; outlines as :func:`write_quicklook`.
    ``maxima``: the percent at the top of each band's ramp (default 100 for every band)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(labels)
    fig = Figure(figsize=(6.4 * n + 1.0, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    cmap = _ramp_cmap("ramp", ramp)
    for band, (label, vmax) in enumerate(zip(labels, maxima or [100] * n, strict=True), start=1):
        data, extent, pixel_m = _read_decimated(cog, band, max_px)
        ax = fig.add_subplot(1, n, band)
        im = ax.imshow(np.ma.masked_equal(data, PERCENT_NODATA), cmap=cmap, vmin=0, vmax=vmax,
                       extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8).set_label(label)
        _outline_and_axes(ax, extent, pixel_m, outline, area)
    fig.suptitle(title + (" — SYNTHETIC" if synthetic else ""))
    return _save(fig, png, synthetic)
