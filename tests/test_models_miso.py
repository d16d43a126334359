"""The full MiSo model at the demo size: API shapes, decoders, chunks, gradients, geo encoder."""

from __future__ import annotations

import pytest
import torch

from mapper.errors import ConfigError, InputError
from mapper.losses import task_loss
from mapper.models.config import ModelConfig
from mapper.models.geo import GeoEncoder, GridCellEncoding
from mapper.models.miso import Features, MiSo, MiSoOutput, Prepared

PIXEL = ModelConfig.named("demo", pixel_query=(32, 64))
"""The demo size with the pixel query: the input crop itself is a fifth map the queries read."""


@pytest.fixture(scope="module", params=[None, (32, 64)], ids=["stages", "pixel_query"])
def model(request: pytest.FixtureRequest) -> MiSo:
    torch.manual_seed(0)
    return MiSo(ModelConfig.named("demo", pixel_query=request.param), n_out=7).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic crops (random 0..1 values), query points and their EPSG:3338 metres."""
    g = torch.Generator().manual_seed(1)
    s2 = torch.rand(2, 9, 64, 64, generator=g)
    cov = torch.rand(2, 10, 64, 64, generator=g)
    coords = torch.rand(2, 50, 2, generator=g) * 2 - 1
    xy = torch.tensor([-150_000.0, 1_600_000.0]) + coords * 320.0  # a 640 m crop
    return s2, cov, coords, xy


def test_api_shapes(model: MiSo, batch: tuple[torch.Tensor, ...]) -> None:
    s2, cov, coords, xy = batch
    with torch.no_grad():
        feats = model.encode(s2, cov)
        out = model.query(feats, coords, xy, chunk=16)
    maps = 4 if model.cfg.pixel_query is None else 5
    assert isinstance(feats, Features) and len(feats.sat) == len(feats.cov) == maps
    if model.cfg.pixel_query is not None:  # the crops themselves come first, at stride 1
        assert feats.sat[0] is s2 and feats.cov[0] is cov
    assert isinstance(out, MiSoOutput)
    for name in ("sat", "cov", "visual", "geo"):
        assert getattr(out, name).shape == (2, 50, 128)
    assert out.logits.shape == out.geo_logits.shape == (2, 50, 7)


def test_predict_forward_and_decoders_agree(model: MiSo, batch: tuple[torch.Tensor, ...]) -> None:
    s2, cov, coords, xy = batch
    with torch.no_grad():
        feats = model.encode(s2, cov)
        out = model.query(feats, coords, xy)
        torch.testing.assert_close(model.predict(feats, coords, xy, chunk=7), out.logits,
                                   atol=1e-5, rtol=0)
        torch.testing.assert_close(model(s2, cov, coords, xy).logits, out.logits)
        model.set_decoder("plain")
        try:
            plain = model.query(feats, coords, xy, chunk=13)
        finally:
            model.set_decoder("fast")
    for name in ("sat", "cov", "visual", "geo", "logits", "geo_logits"):
        assert (getattr(plain, name) - getattr(out, name)).abs().max() < 1e-5, name


def test_queries_are_independent_of_each_other(model: MiSo,
                                               batch: tuple[torch.Tensor, ...]) -> None:
    s2, cov, coords, xy = batch
    with torch.no_grad():
        feats = model.encode(s2, cov)
        full = model.predict(feats, coords)
        one = model.predict(feats, coords[:, 17:18])
        empty = model.predict(feats, coords[:, :0])
    torch.testing.assert_close(one, full[:, 17:18], atol=1e-5, rtol=0)
    assert empty.shape == (2, 0, 7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_packed_queries_equal_per_crop_queries(
    model: MiSo, batch: tuple[torch.Tensor, ...], dtype: torch.dtype
) -> None:
    """Prediction packs the queries of several crops into one call (a crop index per query, the
    crops' tables joined): the values are those of each crop's own queries, in float32 and with
    the implicit queries in bfloat16; in calls of one shape, bit for bit whatever the other
    queries."""
    s2, cov, coords, _ = batch
    with torch.inference_mode():
        feats = model.encode(s2, cov)
        alone = model.predict(feats, coords)
        first = model.prepare(model.encode(s2[:1], cov[:1]), dtype)
        second = model.prepare(model.encode(s2[1:], cov[1:]), dtype)
        joined = Prepared.join([first, second])
        assert joined.batch == 2 and joined.sat[0].cells.dtype == dtype
        packed = torch.cat([coords[0, :32], coords[1, :32]])[None]  # 64 queries per call
        crop = torch.tensor([0] * 32 + [1] * 32)[None]
        out = model.predict_packed(joined, packed, crop, dtype)[0]
        assert out.dtype == torch.float32  # the mappers and the head run in float32
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(out[:32], alone[0, :32], atol=tol, rtol=0)
        torch.testing.assert_close(out[32:], alone[1, :32], atol=tol, rtol=0)
        if dtype == torch.bfloat16:
            assert not torch.equal(out[:32], alone[0, :32]), "bfloat16 is used"
        # the same 64-query shape with other neighbours: the same bits
        mixed = torch.cat([coords[1, 32:], coords[0, :32], coords[1, :14]])[None]
        mixed_crop = torch.tensor([1] * 18 + [0] * 32 + [1] * 14)[None]
        other = model.predict_packed(joined, mixed, mixed_crop, dtype)
        assert torch.equal(other[0, 18:50], out[:32])
        with pytest.raises(InputError, match="without its last axis"):
            model.predict_packed(joined, packed, crop[:, :10])


def test_bad_inputs(model: MiSo, batch: tuple[torch.Tensor, ...]) -> None:
    s2, cov, coords, xy = batch
    with pytest.raises(InputError, match="bands"):
        model.encode(s2[:, :3], cov)
    feats = model.encode(s2, cov)
    with pytest.raises(InputError):
        model.query(feats, coords, xy[:, :3])
    with pytest.raises(InputError):
        model.predict(feats, coords[0])
    with pytest.raises(ConfigError):
        model.set_decoder("approximate")


@pytest.mark.parametrize("cfg", [ModelConfig.named("demo"), PIXEL], ids=["stages", "pixel_query"])
def test_every_parameter_trains_under_soilorder_loss(cfg: ModelConfig) -> None:
    torch.manual_seed(2)
    model = MiSo(cfg, n_out=7).train()
    s2, cov = torch.rand(3, 9, 64, 64), torch.rand(3, 10, 64, 64)
    coords = torch.rand(3, 5, 2) * 2 - 1
    xy = torch.rand(3, 5, 2) * 1e6
    target = torch.randint(0, 7, (3, 5))
    loss, terms = task_loss("soilorder", model(s2, cov, coords, xy), target)
    loss.backward()
    assert set(terms) == {"ce", "ce_geo", "nce_sat_cov", "total"}
    silent = [k for k, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert silent == []


def test_grid_cell_encoding_conventions() -> None:
    cfg = ModelConfig.named("demo")
    enc = GridCellEncoding(cfg)
    xmin, ymin, xmax, ymax = cfg.geo_extent
    corners = torch.tensor([[xmin, ymin], [xmax, ymax], [(xmin + xmax) / 2, (ymin + ymax) / 2]],
                           dtype=torch.float64)
    torch.testing.assert_close(enc.normalise(corners),
                               torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]],
                                            dtype=torch.float64))
    features = enc(corners)  # [3, 4F], laid out [axis, frequency, sin|cos]
    assert features.shape == (3, 4 * cfg.geo_frequencies)
    at_centre = features[2].view(2, cfg.geo_frequencies, 2)
    torch.testing.assert_close(at_centre[..., 0], torch.zeros(2, cfg.geo_frequencies))
    torch.testing.assert_close(at_centre[..., 1], torch.ones(2, cfg.geo_frequencies))
    # the finest wavelength is 2 pi x 0.0005 of the half-extent: kilometres, not metres
    assert float(enc.frequencies.max()) == pytest.approx(2000.0, rel=1e-4)
    assert float(enc.frequencies.min()) == pytest.approx(0.5, rel=1e-4)


def test_geo_encoder_separates_places() -> None:
    torch.manual_seed(3)
    geo = GeoEncoder(ModelConfig.named("demo")).eval()
    xy = torch.tensor([[[0.0, 1_000_000.0], [0.0, 1_000_000.0], [300_000.0, 1_200_000.0]]])
    emb = geo(xy)
    assert emb.shape == (1, 3, 128)
    torch.testing.assert_close(emb[0, 0], emb[0, 1])
    assert not torch.allclose(emb[0, 0], emb[0, 2])


def test_config_round_trip_and_errors() -> None:
    for name in ("demo", "swinv2_t", "swinv2_b"):
        cfg = ModelConfig.named(name)
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    b = ModelConfig.named("swinv2_b")
    pairs = zip(b.stage_channels, b.query_hidden, strict=True)
    widths = [(c + 2, *hidden, b.emb_dim) for c, hidden in pairs]
    assert widths == [(130, 256, 512, 1024), (258, 256, 512, 1024), (514, 512, 1024, 1024),
                      (1026, 1024, 1024, 1024)]
    with pytest.raises(ConfigError, match="unknown keys"):
        ModelConfig.from_dict({**b.to_dict(), "patch": 4})
    with pytest.raises(ConfigError, match="unknown model size"):
        ModelConfig.named("swinv2_l")
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig.named("demo", heads=(5, 2, 4, 8))


def test_pixel_query_sees_the_10m_pixel_under_the_query() -> None:
    """At a pixel centre the pixel query reads that pixel alone (bilinear weight 1), so two crops
    that differ in one pixel differ at its centre through the pixel query, and the 4 stages
    alone (40 m cells and coarser) cannot tell which of the 4 x 4 pixels of a cell changed."""
    torch.manual_seed(3)
    model = MiSo(PIXEL, n_out=1).eval()
    s2, cov = torch.rand(1, 9, 64, 64), torch.rand(1, 10, 64, 64)
    changed = s2.clone()
    changed[0, :, 21, 37] += 0.5  # one pixel, every band
    centre = torch.tensor([[[-1 + (2 * 37 + 1) / 64, -1 + (2 * 21 + 1) / 64],
                            [-1 + (2 * 36 + 1) / 64, -1 + (2 * 21 + 1) / 64]]])
    with torch.no_grad():
        a, b = (model.encode(x, cov) for x in (s2, changed))
        pixel = model.sat_query.stages[0]
        here, beside = (pixel(b.sat[0], centre) - pixel(a.sat[0], centre))[0].abs().sum(-1)
    assert here > 0 and beside == 0  # the pixel's own value, not its neighbour's


def test_pixel_query_config_and_old_checkpoints() -> None:
    assert ModelConfig.from_dict(PIXEL.to_dict()) == PIXEL
    assert PIXEL.to_dict()["pixel_query"] == [32, 64]
    # a config saved before the pixel query existed has no such key: the 4 stages, as then
    old = {k: v for k, v in ModelConfig.named("demo").to_dict().items() if k != "pixel_query"}
    assert ModelConfig.from_dict(old).pixel_query is None
    assert len(MiSo(ModelConfig.from_dict(old), n_out=1).sat_query.stages) == 4
    assert len(MiSo(PIXEL, n_out=1).cov_query.stages) == 5
    with pytest.raises(ConfigError, match="pixel_query must be two positive hidden widths"):
        ModelConfig.named("demo", pixel_query=(32, 0))
