"""Band lists and class names shared by every stage (the stack contract).

The 9 Sentinel-2 bands come first, in SatlasPretrain's multispectral order (R, G, B, B05, B06, B07,
B08, B11, B12) so that its first-conv weights apply unchanged; then the 10 covariates. Stack values
are physical: reflectance as 0..1 floats, elevation in metres, angles in degrees, climate in the
units named below. Normalisation to model inputs happens later (:mod:`mapper.normalise`).
"""

from __future__ import annotations

# (stack band name, Sentinel-2 L2A band it comes from)
S2_BANDS: list[tuple[str, str]] = [
    ("s2_red", "B04"),
    ("s2_green", "B03"),
    ("s2_blue", "B02"),
    ("s2_b05", "B05"),
    ("s2_b06", "B06"),
    ("s2_b07", "B07"),
    ("s2_b08", "B08"),
    ("s2_b11", "B11"),
    ("s2_b12", "B12"),
]

# How a check tells L2A digital numbers that still hold ESA's +1000 offset from their data, shared
# by a STAC item's check (mapper.sources.s2_items) and a composite file's (mapper.stack_bands).
OFFSET_CHECK_BANDS = ("B02", "B12")
"""The darkest bands of clear ground: blue over vegetation, SWIR 2.2 um over water."""
OFFSET_CHECK_MIN_PIXELS = 100
"""Fewer pixels than this give no verdict."""
DARK_PERCENTILE = 1.0
"""Over clear pixels: the darkest 1 % of the lower of the two bands."""

TERRAIN_BANDS: list[str] = ["elevation", "slope", "aspect", "curvature", "tpi", "twi", "spi"]
CLIMATE_BANDS: list[str] = ["precip_annual", "summer_warmth", "jan_tmin"]
COVARIATE_BANDS: list[str] = TERRAIN_BANDS + CLIMATE_BANDS

STACK_BANDS: list[str] = [name for name, _ in S2_BANDS] + COVARIATE_BANDS

ASPECT_ENCODINGS: tuple[str, ...] = ("number", "components")
"""How the models take the aspect band (``model.aspect``): ``number``, the degrees as one input (the
reference's); ``components``, its north and east components ``cos`` and ``sin`` (0 on flat
ground) as two inputs in its place."""
ASPECT_COMPONENTS: list[str] = ["aspect_north", "aspect_east"]


def model_covariates(aspect: str = "number") -> list[str]:
    """The models' covariate inputs, in order: the stack's covariates, with the aspect band as one
    number or as its two components (:data:`ASPECT_ENCODINGS`)."""
    if aspect not in ASPECT_ENCODINGS:
        raise ValueError(f"aspect encoding must be one of {ASPECT_ENCODINGS}, got {aspect!r}")
    if aspect == "number":
        return list(COVARIATE_BANDS)
    i = COVARIATE_BANDS.index("aspect")
    return COVARIATE_BANDS[:i] + ASPECT_COMPONENTS + COVARIATE_BANDS[i + 1:]


def input_bands(aspect: str = "number") -> list[str]:
    """The models' input bands in tensor order: the 9 Sentinel-2 bands, then
    :func:`model_covariates` (the stack's bands when aspect is a number)."""
    return [name for name, _ in S2_BANDS] + model_covariates(aspect)

UNITS: dict[str, str] = {
    **{name: "reflectance (0-1)" for name, _ in S2_BANDS},
    "elevation": "m",
    "slope": "degrees",
    "aspect": "degrees clockwise from north",
    "aspect_north": "cos(aspect) (0 on flat ground; model input only)",
    "aspect_east": "sin(aspect) (0 on flat ground; model input only)",
    "curvature": "1/m (maximum curvature)",
    "tpi": "m (topographic position index)",
    "twi": "ln(m) (topographic wetness index)",
    "spi": "ln(m) (stream power index ln(a tan b), a = specific catchment area in m)",
    "precip_annual": "mm/year",
    "summer_warmth": "degree-days above 0 C (summer warmth index)",
    "jan_tmin": "degrees C (January mean minimum)",
}

SOIL_ORDERS: list[str] = [
    "Andisols",
    "Entisols",
    "Gelisols",
    "Histosols",
    "Inceptisols",
    "Mollisols",
    "Spodosols",
]
CLASS_NODATA = 255
