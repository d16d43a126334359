"""Model sizes of MiSo as one frozen dataclass, passed whole to every block.

A size fixes every tensor shape in the model, so a checkpoint stores ``ModelConfig.to_dict()``
and is rebuilt from it alone. Three sizes are named:

- ``swinv2_t``: Swin-V2-T encoders (stage channels 96/192/384/768), the size of SatlasPretrain's
  ``sentinel2_swint_si_ms.pth``; embedding 768, implicit MLP widths of the reference scaled to it.
- ``swinv2_b``: Swin-V2-B encoders (128/256/512/1024), SatlasPretrain's
  ``sentinel2_swinb_si_ms.pth``; embedding 1024 and the reference's implicit MLP widths
  130->256->512->1024, 258->256->512->1024, 514->512->1024->1024, 1026->1024->1024->1024.
- ``demo``: every part at a small width, so a 64 px crop trains on a laptop CPU.

Geo extent is in EPSG:3338 metres (Alaska Albers): the state's bounding box that the geo encoder
maps onto [-1, 1].
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from mapper.bands import ASPECT_ENCODINGS, model_covariates
from mapper.errors import ConfigError

ALASKA_EXTENT = (-2_200_000.0, 0.0, 1_500_000.0, 2_400_000.0)  # xmin, ymin, xmax, ymax (m)


def reference_query_widths(emb_dim: int) -> tuple[tuple[int, int], ...]:
    """Hidden widths (h1, h2) of the 4 stages' implicit MLPs, as the reference derives them.

    The reference ties them to the embedding width D: stage 1 and 2 use (D/4, D/2), stage 3
    (D/2, D), stage 4 (D, D); every MLP ends in D. At D = 1024 this gives its Swin-B widths.
    """
    d = emb_dim
    return ((d // 4, d // 2), (d // 4, d // 2), (d // 2, d), (d, d))


@dataclass(frozen=True)
class ModelConfig:
    """Every size of a MiSo model.

    Encoders (both modalities): ``embed_dim`` channels after the 4x4 patch conv, doubled at each of
    the 4 stages (strides 4, 8, 16, 32 px); ``depths`` blocks and ``heads`` attention heads per
    stage; square attention ``window`` in feature cells. Decoder: ``emb_dim`` (D) is the width of
    every per-point embedding; ``query_hidden[i]`` the hidden widths of stage i's implicit MLP.
    Geo encoder: ``geo_frequencies`` sin/cos frequencies per axis on a geometric scale of
    timescales ``geo_timescales`` (in units of the normalised [-1, 1] coordinate) over
    ``geo_extent`` (EPSG:3338 metres, xmin, ymin, xmax, ymax); ``dropout`` in its residual
    blocks. ``stochastic_depth`` is the Swin drop-path rate at the last block (torchvision's
    defaults: 0.2 for T, 0.5 for B). ``pixel_query``: hidden widths (h1, h2) of a fifth implicit
    query that reads the input crop itself at its own 10 m pixels (stride 1) beside the 4
    stages, or None for the reference's 4 stages alone (README "The model: the pixel query and
    geo alignment").
    ``aspect``: how the covariate encoder takes the aspect band (``"number"``, the reference's,
    or ``"components"``; :mod:`mapper.normalise`), which fixes ``n_cov_bands`` (10 or 11).
    ``satlas_weights``: path of a SatlasPretrain Sentinel-2 multispectral single-image checkpoint
    that initialises the satellite encoder, or None for a random start.
    """

    name: str
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    window: int
    emb_dim: int
    query_hidden: tuple[tuple[int, int], ...]
    stochastic_depth: float = 0.0
    n_s2_bands: int = 9
    n_cov_bands: int = 10
    geo_frequencies: int = 64
    geo_timescales: tuple[float, float] = (0.0005, 2.0)
    geo_extent: tuple[float, float, float, float] = ALASKA_EXTENT
    dropout: float = 0.1
    pixel_query: tuple[int, int] | None = None
    aspect: str = "number"
    satlas_weights: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        n = len(self.depths)
        if n != 4 or len(self.heads) != 4 or len(self.query_hidden) != 4:
            raise ConfigError(
                f"model config {self.name!r}: depths, heads and query_hidden need 4 entries "
                f"(one per Swin stage), got {len(self.depths)}, {len(self.heads)}, "
                f"{len(self.query_hidden)}; fix the model section"
            )
        for c, h in zip(self.stage_channels, self.heads, strict=True):
            if c % h:
                raise ConfigError(
                    f"model config {self.name!r}: stage width {c} is not divisible by {h} heads; "
                    "choose embed_dim and heads so that every stage divides"
                )
        if self.emb_dim % 2 or self.emb_dim < 2:
            raise ConfigError(
                f"model config {self.name!r}: emb_dim must be even (the head halves it), "
                f"got {self.emb_dim}"
            )
        if self.pixel_query is not None and (
            len(self.pixel_query) != 2 or min(self.pixel_query) < 1
        ):
            raise ConfigError(
                f"model config {self.name!r}: pixel_query must be two positive hidden widths "
                f"(h1, h2) or null, got {self.pixel_query}"
            )
        if self.aspect not in ASPECT_ENCODINGS:
            raise ConfigError(
                f"model config {self.name!r}: aspect must be one of {ASPECT_ENCODINGS}, "
                f"got {self.aspect!r}"
            )
        if self.n_cov_bands != len(model_covariates(self.aspect)):
            raise ConfigError(
                f"model config {self.name!r}: {self.n_cov_bands} covariate bands with the aspect "
                f"as {self.aspect}, which gives {len(model_covariates(self.aspect))}"
            )
        xmin, ymin, xmax, ymax = self.geo_extent
        if not (xmax > xmin and ymax > ymin):
            raise ConfigError(
                f"model config {self.name!r}: geo_extent must be (xmin, ymin, xmax, ymax) with "
                f"max > min, got {self.geo_extent}"
            )

    @property
    def stage_channels(self) -> tuple[int, ...]:
        """Channels of the 4 stage feature maps (strides 4, 8, 16, 32)."""
        return tuple(self.embed_dim * 2**i for i in range(len(self.depths)))

    def with_aspect(self, aspect: str) -> ModelConfig:
        """This config taking the aspect as ``aspect`` says, with the covariate count it gives."""
        return dataclasses.replace(self, aspect=aspect, n_cov_bands=len(model_covariates(aspect)))

    @classmethod
    def named(cls, name: str, **overrides: Any) -> ModelConfig:
        """One of the named sizes ("swinv2_t", "swinv2_b", "demo"), fields overridable."""
        if name not in _NAMED:
            raise ConfigError(
                f"unknown model size {name!r}; choose one of {', '.join(sorted(_NAMED))}"
            )
        return dataclasses.replace(_NAMED[name], **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (lists, numbers, strings) for checkpoints and YAML."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = [list(v) if isinstance(v, tuple) else v for v in value]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are refused rather than silently dropped."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"model config: unknown keys {unknown}; known keys are {sorted(names)}"
            )
        kwargs = dict(data)
        for key in ("depths", "heads", "geo_timescales", "geo_extent"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        if kwargs.get("pixel_query") is not None:
            kwargs["pixel_query"] = tuple(kwargs["pixel_query"])
        if "query_hidden" in kwargs:
            kwargs["query_hidden"] = tuple(tuple(p) for p in kwargs["query_hidden"])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"model config: {exc}; give every required key") from exc


_NAMED: dict[str, ModelConfig] = {
    "swinv2_t": ModelConfig(
        name="swinv2_t",
        embed_dim=96,
        depths=(2, 2, 6, 2),
        heads=(3, 6, 12, 24),
        window=8,
        emb_dim=768,
        query_hidden=reference_query_widths(768),
        stochastic_depth=0.2,
    ),
    "swinv2_b": ModelConfig(
        name="swinv2_b",
        embed_dim=128,
        depths=(2, 2, 18, 2),
        heads=(4, 8, 16, 32),
        window=8,
        emb_dim=1024,
        query_hidden=reference_query_widths(1024),
        stochastic_depth=0.5,
    ),
    "demo": ModelConfig(
        name="demo",
        embed_dim=24,
        depths=(1, 1, 2, 1),
        heads=(1, 2, 4, 8),
        window=4,
        emb_dim=128,
        query_hidden=reference_query_widths(128),
        stochastic_depth=0.0,
    ),
}
