"""Analytic decoder FLOPs: the reference figures, and agreement with torch's own counter."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mapper.models.config import ModelConfig
from mapper.models.flops import decoder_flops
from mapper.models.miso import MiSo


def test_reference_widths() -> None:
    cfg = ModelConfig.named("swinv2_b")
    plain = decoder_flops(cfg, n_out=1, decoder="plain")
    fast = decoder_flops(cfg, n_out=1, decoder="fast")
    assert plain.per_query / 1e6 == pytest.approx(135, abs=1)
    assert fast.per_query / 1e6 == pytest.approx(58, abs=1)
    assert plain.per_crop == plain.per_call == 0
    # the fast path's per-crop work is small against a fully queried 256 px crop
    assert fast.per_query_amortised(256 * 256) < 1.01 * fast.per_query


@pytest.mark.parametrize("pixel_query", [None, (32, 64)], ids=["stages", "pixel_query"])
@pytest.mark.parametrize("decoder", ["plain", "fast"])
def test_counts_match_torch_counter(decoder: str, pixel_query: tuple[int, int] | None) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig.named("demo", pixel_query=pixel_query)
    model = MiSo(cfg, n_out=7, decoder=decoder).eval()
    with torch.no_grad():
        feats = model.encode(torch.rand(1, 9, 64, 64), torch.rand(1, 10, 64, 64))
        n = 500
        counter = FlopCounterMode(display=False)
        with counter:
            model.predict(feats, torch.rand(1, n, 2) * 2 - 1, chunk=n)
    counted = counter.get_total_flops()
    analytic = decoder_flops(cfg, n_out=7, decoder=decoder, crop_px=64)
    expected = n * analytic.per_query + analytic.per_crop + analytic.per_call
    # torch also counts the 4-neighbour weighted sums (a few hundred FLOPs per query)
    assert expected <= counted <= 1.02 * expected
