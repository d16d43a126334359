"""MiSo: two Swin-V2 encoders, an implicit query per modality, a geo encoder, mappers and heads.

    feats = model.encode(s2, cov)              # once per crop batch
    out = model.query(feats, coords, xy)       # any query points, in chunks
    logits = model.predict(feats, coords, xy)  # prediction only
    prep = model.prepare(feats)                # prediction, packed queries of several crops:
    logits = model.predict_packed(prep, coords, crop)  # coords [1, Q, 2], crop [1, Q]

Inputs: ``s2`` [B, 9, H, W] Sentinel-2 and ``cov`` [B, 10, H, W] covariates, float32 normalised
to 0..1 with nodata as 0, H and W multiples of 32 px. ``coords`` [B, N, 2]: query points as
crop-normalised (x, y) in [-1, 1], pixel-corner convention, y = -1 the crop's top (north) edge
(see :mod:`mapper.models.implicit`). ``xy`` [B, N, 2]: the same points in EPSG:3338 metres (x
easting, y northing), for the geo branch.

Embeddings: sat = mapper_sat(query_sat), cov = mapper_cov(query_cov), visual =
mapper_visual(sat + cov), geo = mapper_geo(geo_encoder(xy)); logits = head(visual) predicts,
geo_logits = geo_head(geo) serves the auxiliary losses. Every embedding is D = cfg.emb_dim wide.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from mapper.errors import ConfigError, InputError
from mapper.models.config import ModelConfig
from mapper.models.geo import GeoEncoder
from mapper.models.implicit import DECODERS, Decoder, ImplicitQuery, PreparedStage
from mapper.models.swin import SwinEncoder, load_satlas

logger = logging.getLogger(__name__)


def mapper_mlp(dim: int) -> nn.Sequential:
    """Per-modality mapper: Linear D->D, GELU, Linear D->D, LayerNorm."""
    return nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.LayerNorm(dim))


def prediction_head(dim: int, n_out: int) -> nn.Sequential:
    """Head: Linear D->D, GELU, Linear D->D/2, GELU, Linear D/2->n_out (logits)."""
    return nn.Sequential(
        nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim // 2), nn.GELU(),
        nn.Linear(dim // 2, n_out),
    )


@dataclass
class Features:
    """Encoded crops: per modality the 4 stage maps [B, C_i, H / 2^(i+2), W / 2^(i+2)], after
    the input crop [B, bands, H, W] itself when the model has a pixel query."""

    sat: list[Tensor]
    cov: list[Tensor]

    @property
    def batch(self) -> int:
        return int(self.sat[0].shape[0])


@dataclass
class Prepared:
    """Per-crop tables of the fast decoder for both modalities (:meth:`MiSo.prepare`)."""

    sat: list[PreparedStage]
    cov: list[PreparedStage]

    @property
    def batch(self) -> int:
        return int(self.sat[0].cells.shape[0])

    @staticmethod
    def join(parts: list[Prepared]) -> Prepared:
        """The crops of ``parts`` as one batch, in order (tables concatenated, exact)."""
        if len(parts) == 1:
            return parts[0]

        def cat(stages: list[list[PreparedStage]]) -> list[PreparedStage]:
            return [replace(group[0], cells=torch.cat([s.cells for s in group]))
                    for group in zip(*stages, strict=True)]

        return Prepared(sat=cat([p.sat for p in parts]), cov=cat([p.cov for p in parts]))


@dataclass
class MiSoOutput:
    """Per query point: embeddings [B, N, D] and logits [B, N, n_out]."""

    sat: Tensor
    cov: Tensor
    visual: Tensor
    geo: Tensor
    logits: Tensor
    geo_logits: Tensor


class MiSo(nn.Module):
    """The MiSo model for one task with ``n_out`` logits (1 for NSP, 7 for soil order)."""

    def __init__(self, cfg: ModelConfig, n_out: int, decoder: Decoder = "fast") -> None:
        super().__init__()
        self.cfg = cfg
        self.n_out = n_out
        self.decoder: Decoder = decoder
        d = cfg.emb_dim
        self.sat_encoder = SwinEncoder(cfg, cfg.n_s2_bands)
        self.cov_encoder = SwinEncoder(cfg, cfg.n_cov_bands)
        self.sat_query = ImplicitQuery(cfg, cfg.n_s2_bands)
        self.cov_query = ImplicitQuery(cfg, cfg.n_cov_bands)
        self.geo_encoder = GeoEncoder(cfg)
        self.sat_mapper = mapper_mlp(d)
        self.cov_mapper = mapper_mlp(d)
        self.geo_mapper = mapper_mlp(d)
        self.visual_mapper = mapper_mlp(d)
        self.head = prediction_head(d, n_out)
        self.geo_head = prediction_head(d, n_out)
        self.set_decoder(decoder)

    def set_decoder(self, decoder: Decoder) -> None:
        """Choose the implicit decoder, "fast" (default) or "plain"; both give the same values."""
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder

    def encode(self, s2: Tensor, cov: Tensor) -> Features:
        """Both encoders: s2 [B, 9, H, W], cov [B, 10, H, W] -> Features."""
        if s2.shape[1] != self.cfg.n_s2_bands or cov.shape[1] != self.cfg.n_cov_bands:
            raise InputError(
                f"model takes {self.cfg.n_s2_bands} Sentinel-2 and {self.cfg.n_cov_bands} "
                f"covariate bands, got {s2.shape[1]} and {cov.shape[1]}; check the stack bands"
            )
        if s2.shape[0] != cov.shape[0] or s2.shape[-2:] != cov.shape[-2:]:
            raise InputError(
                f"s2 {tuple(s2.shape)} and covariates {tuple(cov.shape)} differ in batch or size"
            )
        sat, cov_maps = self.sat_encoder(s2), self.cov_encoder(cov)
        if self.cfg.pixel_query is not None:  # the input crops themselves, at stride 1
            sat, cov_maps = [s2, *sat], [cov, *cov_maps]
        return Features(sat=sat, cov=cov_maps)

    def _visual_chunks(
        self, feats: Features, coords: Tensor, chunk: int
    ) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
        """(slice, sat, cov, visual) embeddings per chunk of query points."""
        if coords.ndim != 3 or coords.shape[-1] != 2 or coords.shape[0] != feats.batch:
            raise InputError(
                f"coords must be [B={feats.batch}, N, 2] crop-normalised (x, y), "
                f"got {tuple(coords.shape)}"
            )
        sat_prep = self.sat_query.prepare(feats.sat, self.decoder)
        cov_prep = self.cov_query.prepare(feats.cov, self.decoder)
        for start in range(0, coords.shape[1], max(1, chunk)):
            part = slice(start, start + max(1, chunk))
            c = coords[:, part]
            sat = self.sat_mapper(self.sat_query.decode(sat_prep, c))  # [B, n, D]
            cov = self.cov_mapper(self.cov_query.decode(cov_prep, c))  # [B, n, D]
            yield part, sat, cov, self.visual_mapper(sat + cov)

    def query(self, feats: Features, coords: Tensor, xy: Tensor, chunk: int = 4096) -> MiSoOutput:
        """Every embedding and both logits at the query points (training, contrastive losses)."""
        if xy.shape != coords.shape:
            raise InputError(f"xy {tuple(xy.shape)} must match coords {tuple(coords.shape)}")
        parts: dict[str, list[Tensor]] = {k: [] for k in MiSoOutput.__dataclass_fields__}
        for part, sat, cov, visual in self._visual_chunks(feats, coords, chunk):
            geo = self.geo_mapper(self.geo_encoder(xy[:, part]))  # [B, n, D]
            parts["sat"].append(sat)
            parts["cov"].append(cov)
            parts["visual"].append(visual)
            parts["geo"].append(geo)
            parts["logits"].append(self.head(visual))
            parts["geo_logits"].append(self.geo_head(geo))
        if coords.shape[1] == 0:
            return self._empty_output(coords)
        return MiSoOutput(**{k: torch.cat(v, dim=1) for k, v in parts.items()})

    def predict(
        self, feats: Features, coords: Tensor, xy: Tensor | None = None, chunk: int = 4096
    ) -> Tensor:
        """Logits [B, N, n_out] from the visual branch only (the geo branch does not predict).

        ``xy`` is accepted for symmetry with :meth:`query` and unused. Under
        ``torch.inference_mode()`` memory is bounded by one chunk of embeddings.
        """
        chunks = self._visual_chunks(feats, coords, chunk)
        logits = [self.head(visual) for _, _, _, visual in chunks]
        if not logits:
            return coords.new_zeros(coords.shape[0], 0, self.n_out)
        return torch.cat(logits, dim=1)

    def prepare(self, feats: Features, dtype: torch.dtype | None = None) -> Prepared:
        """The fast decoder's per-crop tables of encoded crops, for :meth:`predict_packed`;
        ``dtype`` bfloat16: computed under autocast (the tables in bfloat16)."""
        with _autocast(feats.sat[0].device.type, dtype):
            return Prepared(sat=self.sat_query.prepare(feats.sat, "fast"),
                            cov=self.cov_query.prepare(feats.cov, "fast"))

    def predict_packed(
        self, prep: Prepared, coords: Tensor, crop: Tensor, dtype: torch.dtype | None = None
    ) -> Tensor:
        """Logits [1, Q, n_out] of packed queries: ``coords`` [1, Q, 2] crop-normalised, ``crop``
        [1, Q] (int64) the index of each query's crop in ``prep`` (one call, no chunking).

        ``dtype`` bfloat16: the implicit queries (per-neighbour MLPs, most of the decoder's
        FLOPs) run under autocast; the mappers and the head stay float32. On 6,000 queries of
        a 7-class model at the reference size, 4.7 % of the pixels moved by more than 1 stored
        percent in bfloat16 everywhere (encoders included), 0.98 % with the whole decoder in
        bfloat16, none with the implicit queries alone, for 5 % less speed than all-bfloat16
        (0.04 % over the 16,009 cells of benchmarks/bench_predict.py 6).
        """
        if coords.ndim != 3 or coords.shape[0] != 1 or coords.shape[-1] != 2:
            raise InputError(f"packed coords must be [1, Q, 2], got {tuple(coords.shape)}")
        if crop.shape != coords.shape[:-1]:
            raise InputError(f"crop {tuple(crop.shape)} must be coords {tuple(coords.shape)} "
                             "without its last axis")
        with _autocast(coords.device.type, dtype):
            sat = self.sat_query.decode(prep.sat, coords, crop)
            cov = self.cov_query.decode(prep.cov, coords, crop)
        sat, cov = self.sat_mapper(sat.float()), self.cov_mapper(cov.float())
        return self.head(self.visual_mapper(sat + cov))

    def forward(self, s2: Tensor, cov: Tensor, coords: Tensor, xy: Tensor) -> MiSoOutput:
        return self.query(self.encode(s2, cov), coords, xy)

    def _empty_output(self, coords: Tensor) -> MiSoOutput:
        b, d = coords.shape[0], self.cfg.emb_dim
        emb = coords.new_zeros(b, 0, d)
        out = coords.new_zeros(b, 0, self.n_out)
        return MiSoOutput(sat=emb, cov=emb, visual=emb, geo=emb, logits=out, geo_logits=out)


def _autocast(device_type: str, dtype: torch.dtype | None) -> torch.autocast:
    """Autocast to ``dtype``; off for None and float32."""
    return torch.autocast(device_type, dtype=dtype or torch.float32,
                          enabled=dtype not in (None, torch.float32))


@functools.cache
def _warn_random_satellite_encoder() -> None:
    """Said once per process: a random satellite encoder is legitimate (demo) but worth knowing."""
    logger.warning(
        "satellite encoder starts from random weights: no satlas_weights in the model config"
    )


def build_model(cfg: ModelConfig, n_out: int) -> MiSo:
    """A new MiSo for training: the satellite encoder from ``cfg.satlas_weights`` when set.

    The covariate encoder and everything else start from random weights. The SatlasPretrain
    file must match the size (CheckpointError naming it otherwise).
    """
    model = MiSo(cfg, n_out)
    if cfg.satlas_weights:
        load_satlas(model.sat_encoder, cfg.satlas_weights, cfg)
    else:
        _warn_random_satellite_encoder()
    return model
