"""Colours of the map products and their QGIS styles (.qml).

The colours themselves belong to each task (:mod:`mapper.tasks`):

- a multiclass task (soil order) has one fixed colour per class, in class-index order; the same
  colours go into the GeoTIFF colour table, the quick-look legend, the QGIS style and the STAC
  item's ``classification:classes``;
- a binary task (NSP) has a colour ramp over its probability, stops given in probability (0..1).
  QGIS applies a band's GDAL scale/offset when reading, so the ramp of the UInt8-percent product
  is written in probability.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

from mapper.bands import CLASS_NODATA
from mapper.tasks import RGB, Task

UNCERTAINTY_RAMP: tuple[tuple[float, RGB], ...] = (
    (0.0, (255, 255, 204)),
    (0.25, (254, 217, 118)),
    (0.5, (253, 141, 60)),
    (0.75, (227, 26, 28)),
    (1.0, (128, 0, 38)),
)
"""Stops (0..1) of the uncertainty products' ramp, every task's: pale yellow where the map is sure
to dark red where it is not (sequential, so that it is never read as the NSP ramp's two sides)."""


def hex_colour(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def colour_table(colours: Sequence[RGB]) -> dict[int, tuple[int, int, int, int]]:
    """A rasterio colormap (index -> RGBA) of a class raster: nodata 255 transparent."""
    table = {i: (*rgb, 255) for i, rgb in enumerate(colours)}
    table[CLASS_NODATA] = (0, 0, 0, 0)
    return table


# -- QGIS styles ----------------------------------------------------------------------------------

_QGIS_VERSION = "3.34.0-Prizren"


def _qgis_root() -> tuple[ET.Element, ET.Element]:
    root = ET.Element("qgis", version=_QGIS_VERSION, styleCategories="AllStyleCategories")
    pipe = ET.SubElement(root, "pipe")
    return root, pipe


def _finish(root: ET.Element, pipe: ET.Element) -> str:
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0",
                  colorizeRed="255", colorizeGreen="128", colorizeBlue="128",
                  colorizeStrength="100", invertColors="0")
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + body + "\n"


def ramp_qml(ramp: Sequence[tuple[float, RGB]]) -> str:
    """QGIS style: single-band pseudo-colour, ``ramp`` interpolated over probability 0..1."""
    root, pipe = _qgis_root()
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="singlebandpseudocolor", band="1", opacity="1",
        alphaBand="-1", classificationMin="0", classificationMax="1", nodataColor="",
    )
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    for key, value in [("limits", "None"), ("extent", "WholeRaster"),
                       ("statAccuracy", "Estimated"), ("cumulativeCutLower", "0.02"),
                       ("cumulativeCutUpper", "0.98"), ("stdDevFactor", "2")]:
        ET.SubElement(origin, key).text = value
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader",
                           colorRampType="INTERPOLATED", classificationMode="1", clip="0",
                           minimumValue="0", maximumValue="1", labelPrecision="2")
    options = ET.SubElement(ET.SubElement(shader, "colorramp", type="gradient",
                                          name="[source]"), "Option", type="Map")
    first, last = ramp[0][1], ramp[-1][1]
    stops = ":".join(f"{v};{r},{g},{b},255" for v, (r, g, b) in ramp[1:-1])
    for key, value in [("color1", "{},{},{},255".format(*first)),
                       ("color2", "{},{},{},255".format(*last)),
                       ("discrete", "0"), ("rampType", "gradient"), ("stops", stops)]:
        ET.SubElement(options, "Option", type="QString", name=key, value=value)
    for v, rgb in ramp:
        ET.SubElement(shader, "item", alpha="255", value=f"{v:g}", color=hex_colour(rgb),
                      label=f"{v * 100:.0f} %")
    return _finish(root, pipe)


def classes_qml(classes: Sequence[str], colours: Sequence[RGB]) -> str:
    """QGIS style: paletted (unique values) renderer with the class colours and names."""
    root, pipe = _qgis_root()
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for i, (name, rgb) in enumerate(zip(classes, colours, strict=True)):
        ET.SubElement(palette, "paletteEntry", value=str(i), color=hex_colour(rgb), alpha="255",
                      label=name)
    return _finish(root, pipe)


def style_qml(task: Task) -> str:
    """The QGIS style of a task's main product: its ramp, or its class colours."""
    if task.binary:
        return ramp_qml(task.ramp)
    return classes_qml(task.classes, task.colours)
