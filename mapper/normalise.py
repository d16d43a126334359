"""Stack values -> model inputs: Sentinel-2 scaled for its encoder, covariates fitted to 0..1.

Input: a stack array ``[..., 19, H, W]`` float32 in physical units (band order
:data:`mapper.bands.STACK_BANDS`; reflectance as 0..1 floats; NaN = nodata). Output: ``s2``
``[..., 9, H, W]`` and ``cov`` ``[..., 10, H, W]`` (11 with the aspect as components, below),
float32 with every nodata value set to 0 (the model's convention: a missing value looks like the
darkest / lowest input, or, for standardised Sentinel-2, like the band's mean).

Sentinel-2, one of two scalings (``s2_scaling``):

- ``"satlas"`` (fixed, no fitting; for a satellite encoder initialised from SatlasPretrain: the
  MiSo authors' scaling, their RGB stretch and SatlasPretrain's ``/ 8160`` for the other six
  bands; SatlasPretrain itself took ESA's 8-bit true-colour image / 255 for R, G, B, of
  top-of-atmosphere L1C). Reflectance is taken as ``v * 1e4`` (L2A digital numbers without
  offset), then R, G, B: a 2-98 % stretch with the reference's fixed limits, R 78-3318,
  G 158-3411, B 167-3335: ``(v*1e4 - lo) / (hi - lo)``; B05, B06, B07, B08, B11, B12:
  ``v*1e4 / 8160``; all clipped to 0..1.
- ``"standardised"`` (fitted on training pixels; for a satellite encoder trained from random
  weights): each band clipped to its 1st-99th percentile, minus the mean and divided by the
  standard deviation of the clipped values, ``(clip(v, p1, p99) - mean) / std`` (about -3..3).
  The fixed scaling squeezes the within-cover variation that carries image texture into a few
  hundredths (tundra texture in the demo region: a standard deviation of 0.02-0.06 against a
  0..1 range), which an encoder starting from random weights learns to see only after many
  more steps: on the controlled check of ``benchmarks/bench_context.py`` (a label decided by
  texture alone) the demo model stayed at chance after 16 epochs with the fixed scaling and
  reached a held-out AUC of 0.98 in 12 epochs standardised.

Covariates (fitted on training pixels): each band is clipped to its 1st-99th percentile
``[p1, p99]``, z-scored with the mean and standard deviation of the clipped values, then min-max
scaled to 0..1 over the z-scored range. The three steps are affine on the clipped value, so they
compose exactly to ``(clip(v, p1, p99) - p1) / (p99 - p1)``, which is what is computed; mean and
standard deviation are kept in the stored dict for the record. A band whose percentiles coincide
(constant over the training pixels) maps to 0.5 where it has data (standardised Sentinel-2: 0).
A band with no value at all in the training pixels (``unseen``) maps to 0 everywhere, its nodata
value: the model was trained on 0 there, and a value it never saw would be an input outside its
training (stored dicts before format 4 did not record such bands and map them as constant).

Aspect, one of two encodings (``aspect``, the region's ``model.aspect``;
:data:`mapper.bands.ASPECT_ENCODINGS`):

- ``"number"`` (the reference's): the degrees, scaled as every covariate. 359 and 1 degrees then
  lie at opposite ends, and flat ground (aspect NaN) takes the nodata value 0, next to north.
- ``"components"``: in the aspect band's place, its north and east components ``cos(aspect)``
  and ``sin(aspect)``, 0 on flat ground (a finite slope without an aspect), mapped from -1..1
  to 0..1 as ``(c + 1) / 2`` (no fitting: the range is fixed); nodata 0 as for every covariate.
  :func:`point_features` gives the same components, unscaled, for Random Forest.

Validity: a pixel is *valid* (usable as a sample, a query point or a prediction) where all 9
Sentinel-2 bands and the DEM elevation are finite. Other covariates may be missing on their own
(e.g. hydrology at a truncated catchment, climate at a coast) and are then just set to 0; a pixel
without imagery or terrain has nothing to learn from.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mapper.bands import ASPECT_ENCODINGS, COVARIATE_BANDS, S2_BANDS, STACK_BANDS, model_covariates
from mapper.errors import CheckpointError, InputError

logger = logging.getLogger(__name__)

N_S2 = len(S2_BANDS)
N_COV = len(COVARIATE_BANDS)
S2_NAMES = [name for name, _ in S2_BANDS]
ELEVATION = STACK_BANDS.index("elevation")
ASPECT = COVARIATE_BANDS.index("aspect")
SLOPE = COVARIATE_BANDS.index("slope")

# The MiSo authors' scaling for SatlasPretrain's multispectral Sentinel-2 models (reflectance x
# 1e4): their 2-98 % RGB stretch, and SatlasPretrain's / 8160 for the other six bands.
RGB_STRETCH: dict[str, tuple[float, float]] = {
    "s2_red": (78.0, 3318.0),
    "s2_green": (158.0, 3411.0),
    "s2_blue": (167.0, 3335.0),
}
OTHER_S2_DIVISOR = 8160.0
REFLECTANCE_SCALE = 1e4
PERCENTILES = (1.0, 99.0)
FORMAT = "mapper.normaliser/4"
FORMATS = ("mapper.normaliser/1", "mapper.normaliser/2", "mapper.normaliser/3", FORMAT)
"""Stored formats read back; version 1 (before ``s2_scaling``) always used the fixed scaling,
versions 1 and 2 (before ``aspect``) the aspect as a number, versions 1 to 3 (before ``unseen``)
recorded no band as unseen."""
S2_SCALINGS = ("satlas", "standardised")


def s2_scaling_for(satlas_weights: str | None) -> str:
    """The Sentinel-2 scaling of a model: fixed for SatlasPretrain weights, else standardised."""
    return "satlas" if satlas_weights else "standardised"


def _percentile_stats(v: np.ndarray) -> tuple[float, float, float, float]:
    """(p1, p99, mean, std) of the finite values of one band, clipped to [p1, p99]."""
    p_lo, p_hi = np.percentile(v, PERCENTILES)
    clipped = np.clip(v, p_lo, p_hi)
    return float(p_lo), float(p_hi), float(clipped.mean()), float(clipped.std())


def _s2_affine() -> tuple[np.ndarray, np.ndarray]:
    """Per-band (offset, scale) so that ``s2 = (v * 1e4 - offset) * scale`` (before clipping)."""
    offset = np.zeros(N_S2, dtype=np.float64)
    scale = np.full(N_S2, 1.0 / OTHER_S2_DIVISOR, dtype=np.float64)
    for i, name in enumerate(S2_NAMES):
        if name in RGB_STRETCH:
            lo, hi = RGB_STRETCH[name]
            offset[i], scale[i] = lo, 1.0 / (hi - lo)
    return offset, scale


def _check_stack(stack: np.ndarray) -> None:
    if stack.ndim < 3 or stack.shape[-3] != len(STACK_BANDS):
        raise InputError(
            f"stack array of shape {tuple(stack.shape)} is not [..., {len(STACK_BANDS)}, H, W] "
            "in the stack's band order; read it with mapper.windows"
        )


def aspect_components(aspect: np.ndarray, slope: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """North and east components (``cos``, ``sin``) of an aspect in degrees: 0 on flat ground
    (aspect NaN where the slope is finite), NaN where the slope is missing too (no DEM)."""
    with np.errstate(invalid="ignore"):
        turn = np.radians(aspect)
        flat = ~np.isfinite(aspect) & np.isfinite(slope)
        north = np.where(flat, 0.0, np.cos(turn))
        east = np.where(flat, 0.0, np.sin(turn))
    return north.astype(aspect.dtype, copy=False), east.astype(aspect.dtype, copy=False)


def point_features(values: np.ndarray, aspect: str = "number") -> np.ndarray:
    """Random Forest's features from a table of stack values ``[N, 19]``: the values as they are
    (physical units, NaN = nodata), with the aspect column replaced by its two components when
    ``aspect`` is ``"components"`` (``[N, 20]``, in :func:`mapper.bands.input_bands` order)."""
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[1] != len(STACK_BANDS):
        raise InputError(f"point values of shape {values.shape} are not [N, {len(STACK_BANDS)}] "
                         "in the stack's band order")
    model_covariates(aspect)  # refuses an unknown encoding
    if aspect == "number":
        return values
    i = N_S2 + ASPECT
    north, east = aspect_components(values[:, i], values[:, N_S2 + SLOPE])
    return np.concatenate([values[:, :i], north[:, None], east[:, None], values[:, i + 1:]],
                          axis=1)


def valid(stack: np.ndarray) -> np.ndarray:
    """Bool mask ``[..., H, W]``: all 9 Sentinel-2 bands and the elevation are finite."""
    _check_stack(stack)
    ok = np.isfinite(stack[..., :N_S2, :, :]).all(axis=-3)
    return ok & np.isfinite(stack[..., ELEVATION, :, :])


def valid_pixels(values: np.ndarray) -> np.ndarray:
    """:func:`valid` for a table of point values ``[N, 19]`` (one row per point): bool ``[N]``."""
    return np.isfinite(values[:, :N_S2]).all(axis=1) & np.isfinite(values[:, ELEVATION])


@dataclass(frozen=True)
class Normaliser:
    """Stack -> (s2, cov) model inputs; covariate limits fitted on training pixels.

    ``lo`` / ``hi``: per covariate band the 1st / 99th percentile (physical units), ``mean`` /
    ``std`` of the clipped values (recorded, see the module doc). ``s2_scaling``: ``"satlas"``
    or ``"standardised"``; for the latter ``s2_lo`` / ``s2_hi`` / ``s2_mean`` / ``s2_std`` hold the
    same statistics of the 9 Sentinel-2 bands (reflectance 0..1), else they are empty.
    ``aspect``: ``"number"`` or ``"components"`` (module doc; the aspect band's fitted limits are
    then kept but not used). ``unseen``: the covariates (names) without a value in any training
    pixel; they map to 0, their nodata value, wherever they have data. Build with
    :meth:`fit`; store with :meth:`to_dict` (plain lists and floats, fit for checkpoints);
    restore with :meth:`from_dict`.
    """

    lo: tuple[float, ...]
    hi: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_pixels: int = 0
    s2_scaling: str = "satlas"
    s2_lo: tuple[float, ...] = ()
    s2_hi: tuple[float, ...] = ()
    s2_mean: tuple[float, ...] = ()
    s2_std: tuple[float, ...] = ()
    aspect: str = "number"
    unseen: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.aspect not in ASPECT_ENCODINGS:
            raise ValueError(f"Normaliser.aspect must be one of {ASPECT_ENCODINGS}, "
                             f"got {self.aspect!r}")
        for name in ("lo", "hi", "mean", "std"):
            if len(getattr(self, name)) != N_COV:
                raise ValueError(f"Normaliser.{name} needs {N_COV} values (one per covariate)")
        if self.s2_scaling not in S2_SCALINGS:
            raise ValueError(f"Normaliser.s2_scaling must be one of {S2_SCALINGS}, "
                             f"got {self.s2_scaling!r}")
        want = N_S2 if self.s2_scaling == "standardised" else 0
        for name in ("s2_lo", "s2_hi", "s2_mean", "s2_std"):
            if len(getattr(self, name)) != want:
                raise ValueError(f"Normaliser.{name} needs {want} values with s2_scaling "
                                 f"{self.s2_scaling!r}")
        unknown = [name for name in self.unseen if name not in COVARIATE_BANDS]
        if unknown:
            raise ValueError(f"Normaliser.unseen names no covariate: {unknown}")

    # -- fitting --------------------------------------------------------------------------------
    @classmethod
    def fit(cls, pixels: np.ndarray, max_pixels: int = 1_000_000, seed: int = 0,
            s2_scaling: str = "satlas", aspect: str = "number") -> Normaliser:
        """Fit the covariate limits (and, standardised, the Sentinel-2 ones) on training pixels.

        ``pixels``: stack values, either ``[..., 19, H, W]`` crops or a ``[N, 19]`` table.
        Only :func:`valid` pixels count; per band only its finite values. At most ``max_pixels``
        pixels (a seeded random subset) are used, which fixes the percentiles to well under a
        percent of the band's range at any region size.
        """
        if s2_scaling not in S2_SCALINGS:
            raise ValueError(f"s2_scaling must be one of {S2_SCALINGS}, got {s2_scaling!r}")
        table = cls._as_table(pixels)
        table = table[valid_pixels(table)]
        if table.shape[0] == 0:
            raise InputError(
                "no valid training pixel (all 9 Sentinel-2 bands and elevation finite) to fit "
                "the normalisation on; check that the stacks hold Sentinel-2 and elevation data"
            )
        if table.shape[0] > max_pixels:
            pick = np.random.default_rng(seed).choice(table.shape[0], max_pixels, replace=False)
            table = table[np.sort(pick)]
        stats = []
        unseen = []
        for b in range(N_S2, len(STACK_BANDS)):
            v = table[:, b].astype(np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                logger.warning("covariate %s has no value in the training pixels; it maps to 0",
                               STACK_BANDS[b])
                stats.append((0.0, 0.0, 0.0, 0.0))
                unseen.append(STACK_BANDS[b])
                continue
            stats.append(_percentile_stats(v))
        s2_stats: list[tuple[float, ...]] = [(), (), (), ()]
        if s2_scaling == "standardised":  # valid pixels: every Sentinel-2 value is finite
            s2_stats = list(zip(*(_percentile_stats(table[:, b].astype(np.float64))
                                  for b in range(N_S2)), strict=True))
        lo, hi, mean, std = (tuple(column) for column in zip(*stats, strict=True))
        return cls(lo, hi, mean, std, int(table.shape[0]), s2_scaling,
                   *(tuple(column) for column in s2_stats), aspect=aspect,
                   unseen=tuple(unseen))

    @staticmethod
    def _as_table(pixels: np.ndarray) -> np.ndarray:
        """``[..., 19, H, W]`` -> ``[N, 19]``; a ``[N, 19]`` table passes through."""
        pixels = np.asarray(pixels, dtype=np.float32)
        if pixels.ndim == 2 and pixels.shape[1] == len(STACK_BANDS):
            return pixels
        _check_stack(pixels)
        moved = np.moveaxis(pixels, -3, -1)  # [..., 19, H, W] -> [..., H, W, 19]
        return moved.reshape(-1, len(STACK_BANDS))

    # -- storage --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints (covariate names kept, so a reordered stack is refused)."""
        return {
            "format": FORMAT,
            "s2_bands": list(S2_NAMES),
            "covariates": list(COVARIATE_BANDS),
            "rgb_stretch": {k: list(v) for k, v in RGB_STRETCH.items()},
            "other_s2_divisor": OTHER_S2_DIVISOR,
            "percentiles": list(PERCENTILES),
            "lo": list(self.lo),
            "hi": list(self.hi),
            "mean": list(self.mean),
            "std": list(self.std),
            "n_pixels": int(self.n_pixels),
            "s2_scaling": self.s2_scaling,
            "s2_lo": list(self.s2_lo),
            "s2_hi": list(self.s2_hi),
            "s2_mean": list(self.s2_mean),
            "s2_std": list(self.s2_std),
            "aspect": self.aspect,
            "inputs": model_covariates(self.aspect),
            "unseen": list(self.unseen),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> Normaliser:
        """Inverse of :meth:`to_dict`; refuses a dict of another format or band list (the error
        names ``source``, the checkpoint the dict was read from, when given).

        A version-1 dict (no ``s2_scaling``) reads as the fixed SatlasPretrain scaling.
        """
        where = f"{source}: " if source is not None else ""
        if not isinstance(data, dict) or data.get("format") not in FORMATS:
            raise CheckpointError(
                f"{where}normalisation is not a {FORMAT!r} dict; retrain the checkpoint with this "
                "mapper"
            )
        if data.get("covariates") != COVARIATE_BANDS or data.get("s2_bands") != S2_NAMES:
            raise CheckpointError(
                f"{where}normalisation was fitted for other bands "
                f"({data.get('s2_bands')} + {data.get('covariates')}); retrain on current stacks"
            )
        scaling = data.get("s2_scaling", "satlas")
        fixed = {k: tuple(v) for k, v in data.get("rgb_stretch", {}).items()}
        if scaling == "satlas" and (fixed != RGB_STRETCH
                                    or data.get("other_s2_divisor") != OTHER_S2_DIVISOR):
            raise CheckpointError(
                f"{where}normalisation uses another Sentinel-2 scaling than this mapper's; retrain"
            )
        if scaling not in S2_SCALINGS:
            raise CheckpointError(
                f"{where}normalisation has an unknown Sentinel-2 scaling {scaling!r}; retrain"
            )
        aspect = data.get("aspect", "number")
        if aspect not in ASPECT_ENCODINGS:
            raise CheckpointError(
                f"{where}normalisation has an unknown aspect encoding {aspect!r}; retrain"
            )

        def floats(key: str) -> tuple[float, ...]:
            return tuple(float(v) for v in data.get(key, ()))

        try:
            return cls(floats("lo"), floats("hi"), floats("mean"), floats("std"),
                       int(data.get("n_pixels", 0)), scaling, floats("s2_lo"), floats("s2_hi"),
                       floats("s2_mean"), floats("s2_std"), aspect,
                       tuple(str(name) for name in data.get("unseen", ())))
        except (TypeError, ValueError) as exc:  # missing, short or non-numeric statistics
            raise CheckpointError(f"{where}normalisation is damaged ({exc}); retrain") from None

    # -- applying -------------------------------------------------------------------------------
    @property
    def n_covariates(self) -> int:
        """Covariate inputs it gives: 10, or 11 with the aspect as components."""
        return len(model_covariates(self.aspect))

    def __call__(self, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``stack [..., 19, H, W]`` -> ``(s2 [..., 9, H, W], cov [..., C, H, W])`` float32, with
        C = :attr:`n_covariates`."""
        _check_stack(stack)
        stack = np.asarray(stack, dtype=np.float32)
        shape = (1,) * (stack.ndim - 3)
        if self.s2_scaling == "standardised":
            s2 = self._standardised(stack[..., :N_S2, :, :], shape)
        else:
            s2 = self._satlas(stack[..., :N_S2, :, :], shape)
        lo = np.asarray(self.lo, dtype=np.float32).reshape(*shape, N_COV, 1, 1)
        hi = np.asarray(self.hi, dtype=np.float32).reshape(*shape, N_COV, 1, 1)
        span = hi - lo
        cov = stack[..., N_S2:, :, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = np.where(span > 0, (np.clip(cov, lo, hi) - lo) / np.where(span > 0, span, 1), 0.5)
        seen = np.asarray([name not in self.unseen for name in COVARIATE_BANDS]).reshape(
            *shape, N_COV, 1, 1)
        cov = np.where(np.isfinite(stack[..., N_S2:, :, :]) & seen, cov, np.nan)
        cov = np.nan_to_num(np.clip(cov, 0.0, 1.0), nan=0.0)
        if self.aspect == "components":
            cov = self._components(cov, stack[..., N_S2:, :, :])
        return s2.astype(np.float32, copy=False), cov.astype(np.float32, copy=False)

    @staticmethod
    def _components(cov: np.ndarray, physical: np.ndarray) -> np.ndarray:
        """``cov`` with its aspect channel replaced by the two components, mapped to 0..1."""
        north, east = aspect_components(physical[..., ASPECT, :, :], physical[..., SLOPE, :, :])
        parts = [np.nan_to_num((c + 1.0) / 2.0, nan=0.0)[..., None, :, :] for c in (north, east)]
        return np.concatenate([cov[..., :ASPECT, :, :], *parts, cov[..., ASPECT + 1:, :, :]],
                              axis=-3)

    @staticmethod
    def _satlas(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """SatlasPretrain's fixed scaling of reflectance ``[..., 9, H, W]``, clipped to 0..1."""
        offset, scale = _s2_affine()
        s2 = v * np.float32(REFLECTANCE_SCALE)
        s2 = (s2 - offset.reshape(*shape, N_S2, 1, 1).astype(np.float32)) * scale.reshape(
            *shape, N_S2, 1, 1
        ).astype(np.float32)
        return np.nan_to_num(np.clip(s2, 0.0, 1.0), nan=0.0)

    def _standardised(self, v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``(clip(v, p1, p99) - mean) / std`` per band; nodata and constant bands -> 0."""
        def column(values: tuple[float, ...]) -> np.ndarray:
            return np.asarray(values, dtype=np.float32).reshape(*shape, N_S2, 1, 1)

        lo, hi, mean, std = (column(c) for c in (self.s2_lo, self.s2_hi, self.s2_mean,
                                                  self.s2_std))
        with np.errstate(invalid="ignore", divide="ignore"):
            s2 = np.where(std > 0, (np.clip(v, lo, hi) - mean) / np.where(std > 0, std, 1), 0.0)
        return np.nan_to_num(s2, nan=0.0)

    def valid(self, stack: np.ndarray) -> np.ndarray:
        """See :func:`valid` (all 9 Sentinel-2 bands and the elevation finite)."""
        return valid(stack)
