"""Colours of the map products and their QGIS styles (.qml).

- Soil orders: one fixed colour per class (index order of :data:`mapper.bands.SOIL_ORDERS`),
  hues after the convention of the USDA-NRCS Global Soil Regions map (Gelisols pale blue-violet,
  Histosols dark brown, Spodosols pink-violet, Andisols magenta, Mollisols green, Inceptisols
  ochre, Entisols pale tan), so that the map reads like the soil maps its users know. The same
  colours go into the GeoTIFF colour table, the quick-look legend, the QGIS style and the STAC
  item's ``classification:classes``.
- NSP probability: a diverging ramp from "permafrost unlikely" (blue-green) through a pale middle
  to "likely" (deep purple), stops given in probability (0..1). QGIS applies a band's GDAL
  scale/offset when reading, so the ramp of the UInt8-percent product is written in probability.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from mapper.bands import CLASS_NODATA, SOIL_ORDERS

RGB = tuple[int, int, int]

SOIL_ORDER_COLOURS: dict[str, RGB] = {
    "Andisols": (199, 72, 168),
    "Entisols": (222, 203, 160),
    "Gelisols": (160, 176, 226),
    "Histosols": (110, 64, 36),
    "Inceptisols": (209, 151, 55),
    "Mollisols": (52, 140, 72),
    "Spodosols": (236, 150, 196),
}

NSP_RAMP: list[tuple[float, RGB]] = [
    (0.0, (26, 150, 140)),
    (0.25, (128, 205, 193)),
    (0.5, (245, 245, 230)),
    (0.75, (194, 165, 207)),
    (1.0, (84, 39, 136)),
]
"""(probability, colour) stops of the NSP ramp, linear in between."""


def hex_colour(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def class_colours(classes: list[str] | None = None) -> list[RGB]:
    """Colours of ``classes`` (default SOIL_ORDERS) in index order."""
    return [SOIL_ORDER_COLOURS[name] for name in (classes or SOIL_ORDERS)]


def colour_table(classes: list[str] | None = None) -> dict[int, tuple[int, int, int, int]]:
    """A rasterio colormap (index -> RGBA) of the class raster: nodata 255 transparent."""
    table = {i: (*rgb, 255) for i, rgb in enumerate(class_colours(classes))}
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


def nsp_qml() -> str:
    """QGIS style: single-band pseudo-colour, the NSP ramp interpolated over probability 0..1."""
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
    ramp = ET.SubElement(ET.SubElement(shader, "colorramp", type="gradient", name="[source]"),
                         "Option", type="Map")
    first, last = NSP_RAMP[0][1], NSP_RAMP[-1][1]
    stops = ":".join(f"{v};{r},{g},{b},255" for v, (r, g, b) in NSP_RAMP[1:-1])
    for key, value in [("color1", "{},{},{},255".format(*first)),
                       ("color2", "{},{},{},255".format(*last)),
                       ("discrete", "0"), ("rampType", "gradient"), ("stops", stops)]:
        ET.SubElement(ramp, "Option", type="QString", name=key, value=value)
    for v, rgb in NSP_RAMP:
        ET.SubElement(shader, "item", alpha="255", value=f"{v:g}", color=hex_colour(rgb),
                      label=f"{v * 100:.0f} %")
    return _finish(root, pipe)


def soilorder_qml(classes: list[str] | None = None) -> str:
    """QGIS style: paletted (unique values) renderer with the class colours and names."""
    classes = classes or SOIL_ORDERS
    root, pipe = _qgis_root()
    renderer = ET.SubElement(pipe, "rasterrenderer", type="paletted", band="1", opacity="1",
                             alphaBand="-1", nodataColor="")
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for i, (name, rgb) in enumerate(zip(classes, class_colours(classes), strict=True)):
        ET.SubElement(palette, "paletteEntry", value=str(i), color=hex_colour(rgb), alpha="255",
                      label=name)
    return _finish(root, pipe)


def style_qml(task: str, classes: list[str] | None = None) -> str:
    """The QGIS style of a task's main product."""
    if task == "nsp":
        return nsp_qml()
    if task == "soilorder":
        return soilorder_qml(classes)
    raise ValueError(f"unknown task {task!r}")
