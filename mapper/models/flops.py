"""Analytic FLOPs of MiSo's prediction path, per query point and per crop, plain vs fast decoder.

Counted: matrix products only, a multiply-add as 2 FLOPs (activations, LayerNorms, the bilinear
weights and the 4-term weighted sums are a few hundred FLOPs per query against millions).
"Per query" is what every decoded point costs in :meth:`MiSo.predict`: both modalities' implicit
queries, the sat, cov and visual mappers and the prediction head (the geo branch does not
predict). The fast decoder moves work from every query to fewer places: the first Linear's
feature half once per feature CELL (``per_crop``), and one W_out W3 matrix product per stage
and modality once per call whatever the batch (``per_call``); both vanish per query when a whole
crop is queried.

At the reference Swin-B widths (D = 1024): plain about 135 MFLOP per query, fast about 58.
"""

from __future__ import annotations

from dataclasses import dataclass

from mapper.models.config import ModelConfig
from mapper.models.implicit import query_maps


@dataclass(frozen=True)
class DecoderFlops:
    """FLOPs of one decoder: per query point, and per crop for work done once per call."""

    implicit: int  # both modalities' stage queries, per query
    mappers: int  # sat, cov, visual mappers, per query
    head: int  # prediction head, per query
    per_crop: int  # fast decoder: first-Linear projections of every feature cell (0 for plain)
    per_call: int  # fast decoder: the fused W_out W3 matrices, once per call (0 for plain)

    @property
    def per_query(self) -> int:
        return self.implicit + self.mappers + self.head

    def per_query_amortised(self, n_queries: int, crops: int = 1) -> float:
        """Per-query cost when ``crops`` crops in one call are each queried at n_queries points."""
        fixed = self.per_crop * crops + self.per_call
        return self.per_query + fixed / max(1, n_queries * crops)


def _stage_macs(c: int, h1: int, h2: int, d: int, decoder: str) -> tuple[int, int]:
    """(per-query MACs, per-call MACs excluding cells) of one stage, one modality."""
    if decoder == "plain":
        per_neighbour = (c + 2) * h1 + h1 * h2 + h2 * d
        return 4 * per_neighbour + d * d, 0
    # fast: offset half of W1, second Linear per neighbour; fused [D, h2] once after the sum
    return 4 * (2 * h1 + h1 * h2) + h2 * d, d * d * h2


def decoder_flops(cfg: ModelConfig, n_out: int, decoder: str, crop_px: int = 256) -> DecoderFlops:
    """FLOPs of the prediction path for ``decoder`` ("plain" or "fast") on ``crop_px`` crops."""
    d = cfg.emb_dim
    implicit = per_crop = per_call = 0
    for bands in (cfg.n_s2_bands, cfg.n_cov_bands):  # the two modalities
        for c, (h1, h2), stride in query_maps(cfg, bands):
            stage_query, stage_call = _stage_macs(c, h1, h2, d, decoder)
            implicit += stage_query
            per_call += stage_call
            if decoder == "fast":
                per_crop += (crop_px // stride) ** 2 * c * h1
    mappers = 3 * 2 * d * d
    head = d * d + d * (d // 2) + (d // 2) * n_out
    return DecoderFlops(implicit=2 * implicit, mappers=2 * mappers, head=2 * head,
                        per_crop=2 * per_crop, per_call=2 * per_call)
