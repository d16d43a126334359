"""The pictures of docs/demo/: the SYNTHETIC demo sources, its truth maps and its maps.

    python scripts/plot_demo.py [--root resources/demo] [--maps maps] [--out docs/demo]

One PNG per source (Sentinel-2 true and false colour, a full-resolution crop of the ice-wedge
polygon texture, DEM, climate, observations). The truth maps are drawn as the map products' own
quick-looks are (:func:`mapper.products.write_quicklook`, from a COG with the product's encoding
and overviews), over the maps' extent when the maps exist, so that ``truth_<task>.png`` and
``map_<task>.png`` (a copy of ``maps/<task>_demo.png``, when present) share palette, scale,
extent and legend and compare by eye. Observations are coloured with the same palettes.
Images are decimated so each file stays small (well under 300 KB).
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import rasterio  # noqa: E402
from PIL import Image  # noqa: E402
from rasterio.windows import from_bounds  # noqa: E402
from scipy import ndimage  # noqa: E402

from mapper.bands import CLASS_NODATA, SOIL_ORDERS  # noqa: E402
from mapper.demo.render import S2_NATIVE, SPECTRA  # noqa: E402
from mapper.demo.world import TUNDRA  # noqa: E402
from mapper.files import atomic_path  # noqa: E402
from mapper.products import PERCENT_NODATA, write_quicklook  # noqa: E402
from mapper.products.cog import to_cog  # noqa: E402
from mapper.products.colours import hex_colour  # noqa: E402
from mapper.raster import write_geotiff  # noqa: E402
from mapper.tasks import TASKS  # noqa: E402

SOIL_COLOURS = [hex_colour(rgb) for rgb in TASKS["soilorder"].colours]
NSP_RAMP = TASKS["nsp"].ramp
NSP_PRESENT, NSP_ABSENT = hex_colour(NSP_RAMP[-1][1]), hex_colour(NSP_RAMP[0][1])
"""The products' palettes (mapper.products.colours): soil orders, and the NSP ramp's two ends."""
OVERVIEW_RESAMPLING = {"nsp": "AVERAGE", "soilorder": "MODE"}
"""As the products' overviews (mapper.products), which their quick-looks are read from."""
DPI = 90
SHOWN = ("B04", "B08", "B11")


def _stretch(rgb: np.ndarray, valid: np.ndarray, top: float, gamma: float = 0.8) -> np.ndarray:
    """Reflectance x 1e4 -> 0..1 with one stretch for all bands (keeps colours natural)."""
    out = np.clip(rgb / (top * 1e4), 0, 1) ** gamma
    out[:, ~valid] = 0
    return np.moveaxis(out, 0, -1)


def _save(fig: plt.Figure, path: Path) -> None:
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    _indexed(png, path)


def _indexed(src: Path | io.BytesIO, dest: Path) -> None:
    """Store as an indexed-colour PNG (256 colours, no dithering): small files for the docs.
    Written under a temporary name and renamed, as every output."""
    with Image.open(src) as image, atomic_path(dest) as tmp:
        indexed = image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
        indexed.save(tmp, format="PNG", optimize=True)
    print(f"{dest} ({dest.stat().st_size // 1024} KB)")


def plot_sentinel2(root: Path, out: Path) -> None:
    with rasterio.open(root / "sources/sentinel2.tif") as src:
        step = max(1, src.width // 600)
        data = src.read(out_shape=(src.count, src.height // step, src.width // step),
                        resampling=rasterio.enums.Resampling.nearest).astype("float32")  # fmt: skip
        names = list(src.descriptions)
    valid = data[0] > 0
    for fname, bands, label, top in [
        ("sentinel2_truecolour.png", ("B04", "B03", "B02"), "true colour B04 B03 B02", 0.14),
        ("sentinel2_falsecolour.png", ("B08", "B04", "B03"), "false colour B08 B04 B03", 0.40),
    ]:
        rgb = np.stack([data[names.index(b)] for b in bands])
        fig, ax = plt.subplots(figsize=(7.5, 7.5))
        ax.imshow(_stretch(rgb, valid, top), interpolation="nearest")
        ax.set_title(f"SYNTHETIC Sentinel-2 L2A-like, {label}\nEPSG:32606 10 m (shown at "
                     f"{10 * step} m); black = cloud gap (nodata 0)", fontsize=10)  # fmt: skip
        ax.set_axis_off()
        _save(fig, out / fname)


def plot_polygon_crop(root: Path, out: Path) -> None:
    """Full-resolution crops: an ice-wedge polygon field, a closer zoom, and similar tundra
    without polygons. Both kinds of crop are found from the image alone: windows whose mean
    spectrum is tussock tundra's, with the most and the least fine-scale (3 px) contrast."""
    with rasterio.open(root / "sources/sentinel2.tif") as src:
        names = list(src.descriptions)
        refl = {b: src.read(names.index(b) + 1).astype("float32") / 1e4 for b in SHOWN}
    nir = refl["B08"]
    valid = nir > 0
    half, zoom = 20, 10  # crops of 400 m and 200 m
    unlike = np.zeros(nir.shape, dtype="float32")
    for b in SHOWN:  # per-pixel (5 px window) distance from the tundra spectrum
        ref = SPECTRA[TUNDRA][S2_NATIVE.index(b)]
        unlike = np.maximum(unlike, np.abs(ndimage.uniform_filter(refl[b], 5) - ref) / ref)
    size = 2 * half + 1
    like = ndimage.uniform_filter(((unlike < 0.25) & valid).astype("float32"), size)
    fine = np.abs(nir - ndimage.uniform_filter(nir, 3))
    texture = ndimage.uniform_filter(fine, size)
    pick = like > 0.97
    pick[:half], pick[-half:], pick[:, :half], pick[:, -half:] = False, False, False, False
    if not pick.any():
        print("no tundra-like window found: polygon crop skipped")
        return
    r1, c1 = np.unravel_index(np.argmax(np.where(pick, texture, -1)), nir.shape)
    r2, c2 = np.unravel_index(np.argmin(np.where(pick, texture, 9)), nir.shape)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.9))
    zoom = 15
    panels = [
        (axes[0], np.s_[r1 - half : r1 + half, c1 - half : c1 + half], "polygon field, 400 m"),
        (axes[1], np.s_[r1 - zoom : r1 + zoom, c1 - zoom : c1 + zoom], "same, zoom 200 m"),
        (axes[2], np.s_[r2 - half : r2 + half, c2 - half : c2 + half], "tundra, no polygons"),
    ]
    for ax, crop, label in panels:
        m = nir[crop]
        ax.imshow(m, cmap="gray", vmin=0.10, vmax=0.38, interpolation="nearest")
        local = ndimage.uniform_filter(fine[crop], 5).mean()
        ax.set_title(f"{label}\nB08 mean {m.mean():.3f}, std {m.std():.3f}; 3 px contrast "
                     f"{local:.3f}", fontsize=9)  # fmt: skip
        ax.set_axis_off()
    fig.suptitle("SYNTHETIC Sentinel-2 B08 (NIR), full resolution (10 m pixels): same mean "
                 "spectrum, different texture\n(wet troughs of ~30 m ice-wedge polygons; a "
                 "per-pixel value cannot tell them apart)", fontsize=10)  # fmt: skip
    _save(fig, out / "sentinel2_polygons_crop.png")


def _hillshade(elev: np.ndarray, dx: float, dy: float) -> np.ndarray:
    gy, gx = np.gradient(elev, dy, dx)
    slope = np.arctan(np.hypot(gx, gy))
    aspect = np.arctan2(-gx, gy)
    az, alt = np.radians(315), np.radians(45)
    return np.sin(alt) * np.cos(slope) + np.cos(alt) * np.sin(slope) * np.cos(az - aspect)


def plot_dem(root: Path, out: Path) -> None:
    with rasterio.open(root / "sources/dem.tif") as src:
        elev = src.read(1)
        lat = src.xy(src.height // 2, 0)[1]
        res = src.res
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
    dx = res[0] * 111_320 * np.cos(np.radians(lat))
    dy = res[1] * 110_570
    fig, ax = plt.subplots(figsize=(8, 6.5))
    im = ax.imshow(elev, cmap="terrain", vmin=0, vmax=1200, extent=extent)
    ax.imshow(_hillshade(elev, dx, dy), cmap="gray", alpha=0.45, extent=extent)
    ax.set_aspect(1 / np.cos(np.radians(lat)))
    fig.colorbar(im, ax=ax, shrink=0.7, label="elevation (m)")
    ax.set_title("SYNTHETIC DEM, EPSG:4326 1 arc-second (float32 m)", fontsize=10)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    _save(fig, out / "dem.png")


def plot_climate(root: Path, out: Path) -> None:
    with rasterio.open(root / "sources/climate.tif") as src:
        data = src.read()
        names = list(src.descriptions)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    units = {"precip_annual": "mm", "summer_warmth": "degree-days", "jan_tmin": "deg C"}
    for ax, band, name in zip(axes, data, names, strict=True):
        im = ax.imshow(band, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8, label=units.get(name, ""))
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
    fig.suptitle("SYNTHETIC climate normals, EPSG:3338 1 km (origin 371 m off the lattice)")
    _save(fig, out / "climate.png")


def _truth_window(truth: Path, product: Path | None) -> rasterio.windows.Window:
    """The truth's window over the product's extent (both on the lattice), else all of it."""
    with rasterio.open(truth) as t:
        if product is None or not product.exists():
            return rasterio.windows.Window(0, 0, t.width, t.height)
        with rasterio.open(product) as m:
            return from_bounds(*m.bounds, transform=t.transform).round_offsets().round_lengths()


def plot_truth(root: Path, maps: Path, out: Path) -> None:
    """``truth_<task>.png`` drawn as the product's quick-look: the truth stored as the product
    (NSP UInt8 percent, soil order class index; 255 nodata), made a COG with the product's
    overview resampling, then drawn by write_quicklook over the map's extent."""
    for task in ("nsp", "soilorder"):
        truth = root / "truth" / f"{task}.tif"
        window = _truth_window(truth, maps / f"{task}_demo.tif")
        with rasterio.open(truth) as t:
            values = t.read(1, window=window, boundless=True, fill_value=t.nodata)
            transform, crs = t.window_transform(window), t.crs.to_string()
        if task == "nsp":  # as mapper.products stores probabilities: percent, round half even
            ok = np.isfinite(values)
            stored = np.full(values.shape, PERCENT_NODATA, dtype=np.uint8)
            stored[ok] = np.clip(np.rint(values[ok] * 100.0), 0, 100).astype(np.uint8)
            nodata = PERCENT_NODATA
        else:
            stored, nodata = values.astype(np.uint8), CLASS_NODATA  # class index; water nodata
        with tempfile.TemporaryDirectory() as tmp:
            raw, cog = Path(tmp) / "raw.tif", Path(tmp) / "truth.tif"
            write_geotiff(raw, stored[None], transform, crs, nodata=nodata)
            to_cog(raw, cog, resampling=OVERVIEW_RESAMPLING[task])
            png = Path(tmp) / "quicklook.png"
            spec = TASKS[task]
            write_quicklook(cog, png, spec, f"Hidden truth: {spec.title.lower()}, demo",
                            synthetic=True)
            _indexed(png, out / f"truth_{task}.png")


def copy_map_quicklooks(maps: Path, out: Path) -> None:
    """``map_<task>.png``: the demo maps' own quick-looks (when ``make demo`` has made them),
    stored as the truth's are."""
    for task in ("nsp", "soilorder"):
        quicklook = maps / f"{task}_demo.png"
        if not quicklook.exists():
            print(f"{quicklook}: not found (run make demo first); map_{task}.png left as it is")
            continue
        _indexed(quicklook, out / f"map_{task}.png")


def plot_observations(root: Path, out: Path) -> None:
    with open(root / "sources/observations.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    lon = np.array([float(r["lon"]) for r in rows])
    lat = np.array([float(r["lat"]) for r in rows])
    soil = [r["soil_order"] for r in rows]
    nsp = [r["nsp"] for r in rows]
    with rasterio.open(root / "sources/dem.tif") as src:
        elev = src.read(1)
        extent = (src.bounds.left, src.bounds.right, src.bounds.bottom, src.bounds.top)
        res = src.res
    mid = float(np.mean(lat))
    dx = res[0] * 111_320 * np.cos(np.radians(mid))
    fig, axes = plt.subplots(1, 2, figsize=(14, 6))
    for ax in axes:
        ax.imshow(_hillshade(elev, dx, res[1] * 110_570), cmap="gray", extent=extent, alpha=0.6)
        ax.set_aspect(1 / np.cos(np.radians(mid)))
        ax.set_xlim(lon.min() - 0.01, lon.max() + 0.01)
        ax.set_ylim(lat.min() - 0.005, lat.max() + 0.005)
    for name, colour in zip(SOIL_ORDERS, SOIL_COLOURS, strict=True):
        sel = np.array([s == name for s in soil])
        axes[0].scatter(lon[sel], lat[sel], s=7, color=colour, label=f"{name} ({sel.sum()})")
    sel = np.array([s == "" for s in soil])
    axes[0].scatter(lon[sel], lat[sel], s=5, color="none", edgecolor="k", linewidth=0.4,
                    label=f"no soil order ({sel.sum()})")  # fmt: skip
    axes[0].legend(fontsize=7, loc="lower left", markerscale=1.5)
    axes[0].set_title("soil order", fontsize=10)
    for value, colour, label in [("1", NSP_PRESENT, "NSP = 1"), ("0", NSP_ABSENT, "NSP = 0"),
                                 ("", "#999999", "NSP missing")]:  # fmt: skip
        sel = np.array([v == value for v in nsp])
        axes[1].scatter(lon[sel], lat[sel], s=6, color=colour, label=f"{label} ({sel.sum()})")
    axes[1].legend(fontsize=7, loc="lower left", markerscale=1.5)
    axes[1].set_title("near-surface permafrost", fontsize=10)
    fig.suptitle(f"SYNTHETIC field observations ({len(rows)} points, 1952-2023): clustered along "
                 "a road, the river and at study sites")  # fmt: skip
    _save(fig, out / "observations.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("resources/demo"))
    parser.add_argument("--maps", type=Path, default=Path("maps"))
    parser.add_argument("--out", type=Path, default=Path("docs/demo"))
    args = parser.parse_args()
    for needed in (args.root / "sources" / "sentinel2.tif", args.maps / "nsp_demo.tif"):
        if not needed.is_file():
            sys.exit(f"error: {needed}: not found; run make demo first (--root, --maps: "
                     f"elsewhere)")
    args.out.mkdir(parents=True, exist_ok=True)
    plot_sentinel2(args.root, args.out)
    plot_polygon_crop(args.root, args.out)
    plot_dem(args.root, args.out)
    plot_climate(args.root, args.out)
    plot_truth(args.root, args.maps, args.out)
    copy_map_quicklooks(args.maps, args.out)
    plot_observations(args.root, args.out)


if __name__ == "__main__":
    main()
