"""Implicit query: geometry from the formula, fast == plain, chunking, resolution invariance."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mapper.errors import ConfigError
from mapper.models.config import ModelConfig
from mapper.models.implicit import ImplicitQuery, StageQuery, neighbours


def centre(index: float, cells: int) -> float:
    """Crop-normalised coordinate of a cell centre, pixel-corner convention."""
    return -1.0 + (2 * index + 1) / cells


def reference_stage(stage: StageQuery, feat: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The stage query written point by point from the definition (slow, independent)."""
    b, _, h, w = feat.shape
    rows = []
    for bi in range(b):
        outs = []
        for x, y in coords[bi].tolist():
            u = (x + 1) / (2 / w) - 0.5  # column in cells, centres at integers
            v = (y + 1) / (2 / h) - 0.5  # row in cells
            c0, r0 = math.floor(u), math.floor(v)
            acc = torch.zeros(stage.out.in_features, dtype=torch.float64)
            for dc in (0, 1):
                for dr in (0, 1):
                    weight = (1 - abs(u - (c0 + dc))) * (1 - abs(v - (r0 + dr)))
                    cc, rr = min(max(c0 + dc, 0), w - 1), min(max(r0 + dr, 0), h - 1)
                    inp = torch.cat([feat[bi, :, rr, cc].double(),
                                     torch.tensor([u - cc, v - rr], dtype=torch.float64)])
                    acc += weight * stage.mlp.double()(inp)
            outs.append(stage.norm.double()(stage.out.double()(acc)))
        rows.append(torch.stack(outs))
    stage.float()
    return torch.stack(rows).float()


@pytest.fixture
def identity_stage() -> StageQuery:
    """A stage whose MLP returns the cell feature (ignores offsets) and output Linear is I."""
    stage = StageQuery(in_ch=3, hidden=(3, 3), out_dim=3)
    with torch.no_grad():
        for layer in (stage.mlp[0], stage.mlp[2], stage.mlp[4], stage.out):
            layer.weight.zero_()
            layer.weight[:, :3] = torch.eye(3)
            layer.bias.zero_()
    return stage


def test_neighbours_off_diagonal_axes() -> None:
    # cell (row 1, col 2) of a 4 x 5 map, query 1/4 cell right (x) and 3/4 cell down (y)
    h, w = 4, 5
    x = centre(2, w) + 0.25 * 2 / w
    y = centre(1, h) + 0.75 * 2 / h
    index, offsets, weights = neighbours(torch.tensor([[[x, y]]]), h, w)
    cells = [(int(i) // w, int(i) % w) for i in index[0, 0]]
    assert cells == [(1, 2), (1, 3), (2, 2), (2, 3)]
    expected_w = [0.75 * 0.25, 0.25 * 0.25, 0.75 * 0.75, 0.25 * 0.75]
    assert weights[0, 0].tolist() == pytest.approx(expected_w, abs=1e-6)
    expected_off = [(0.25, 0.75), (-0.75, 0.75), (0.25, -0.25), (-0.75, -0.25)]
    assert offsets[0, 0].tolist() == [pytest.approx(o, abs=1e-5) for o in expected_off]


def test_neighbours_clamp_at_border() -> None:
    # the crop's upper-left corner: all 4 neighbours are cell (0, 0), offsets from its centre
    index, offsets, weights = neighbours(torch.tensor([[[-1.0, -1.0]]]), 4, 4)
    assert index[0, 0].tolist() == [0, 0, 0, 0]
    assert offsets[0, 0].tolist() == [[-0.5, -0.5]] * 4
    assert float(weights.sum()) == pytest.approx(1.0)


@pytest.mark.parametrize("decoder", ["plain", "fast"])
def test_cell_centres_return_cell_value(identity_stage: StageQuery, decoder: str) -> None:
    g = torch.Generator().manual_seed(0)
    feat = torch.rand(1, 3, 4, 6, generator=g) + 0.1  # positive: ReLUs pass it unchanged
    pts = [(r, c) for r in range(4) for c in range(6)]
    coords = torch.tensor([[[centre(c, 6), centre(r, 4)] for r, c in pts]])
    out = identity_stage(feat, coords, decoder=decoder)
    expected = torch.stack([feat[0, :, r, c] for r, c in pts])
    torch.testing.assert_close(out[0], F.layer_norm(expected, (3,)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("decoder", ["plain", "fast"])
def test_between_cells_is_bilinear_on_correct_axes(identity_stage: StageQuery,
                                                   decoder: str) -> None:
    g = torch.Generator().manual_seed(1)
    feat = torch.rand(1, 3, 4, 4, generator=g) + 0.1
    x = centre(1, 4) + 0.25 * 2 / 4  # 1/4 of the way from column 1 to column 2
    y = centre(2, 4) + 0.75 * 2 / 4  # 3/4 of the way from row 2 to row 3
    out = identity_stage(feat, torch.tensor([[[x, y]]]), decoder=decoder)[0, 0]
    f = feat[0]
    mix = (0.75 * 0.25 * f[:, 2, 1] + 0.25 * 0.25 * f[:, 2, 2]
           + 0.75 * 0.75 * f[:, 3, 1] + 0.25 * 0.75 * f[:, 3, 2])
    swapped = (0.25 * 0.75 * f[:, 2, 1] + 0.75 * 0.75 * f[:, 2, 2]
               + 0.25 * 0.25 * f[:, 3, 1] + 0.75 * 0.25 * f[:, 3, 2])
    torch.testing.assert_close(out, F.layer_norm(mix, (3,)), atol=1e-5, rtol=0)
    assert not torch.allclose(out, F.layer_norm(swapped, (3,)), atol=1e-3)


@pytest.mark.parametrize("decoder", ["plain", "fast"])
@pytest.mark.parametrize("shape", [(2, 5, 4, 4), (1, 8, 3, 7), (2, 4, 1, 1)])
def test_stage_matches_formula(decoder: str, shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(2)
    b, c, h, w = shape
    stage = StageQuery(c, (6, 5), 8)
    feat = torch.randn(shape)
    coords = torch.rand(b, 9, 2) * 2.2 - 1.1  # includes the border ring and just outside
    coords[:, 0] = torch.tensor([-1.0, 1.0])
    out = stage(feat, coords, decoder=decoder)
    torch.testing.assert_close(out, reference_stage(stage, feat, coords), atol=2e-5, rtol=0)


@pytest.mark.parametrize("shape,hidden,dim", [
    ((2, 16, 8, 8), (32, 64), 128),
    ((3, 40, 4, 6), (20, 48), 128),
    ((1, 96, 2, 2), (128, 128), 128),
    ((1, 1024, 2, 2), (1024, 1024), 1024),  # Swin-B's last stage at the reference widths
])
def test_fast_equals_plain(shape: tuple[int, int, int, int], hidden: tuple[int, int],
                           dim: int) -> None:
    torch.manual_seed(3)
    stage = StageQuery(shape[1], hidden, dim)
    feat = torch.randn(shape)
    coords = torch.rand(shape[0], 300, 2) * 2 - 1
    plain, fast = stage(feat, coords, "plain"), stage(feat, coords, "fast")
    assert (plain - fast).abs().max() < 1e-5


def test_fast_equals_plain_gradients() -> None:
    torch.manual_seed(4)
    stage = StageQuery(12, (16, 24), 32)
    feat = torch.randn(2, 12, 4, 4)
    coords = torch.rand(2, 50, 2) * 2 - 1
    grads = []
    for decoder in ("plain", "fast"):
        stage.zero_grad()
        stage(feat, coords, decoder).square().sum().backward()
        grads.append([p.grad.clone() for p in stage.parameters()])
    for gp, gf in zip(*grads, strict=True):
        torch.testing.assert_close(gp, gf, atol=1e-4, rtol=1e-4)


@pytest.fixture
def demo_query() -> tuple[ImplicitQuery, list[torch.Tensor]]:
    torch.manual_seed(5)
    query = ImplicitQuery(ModelConfig.named("demo"), 9)
    feats = [torch.randn(2, c, 64 // 2 ** (i + 2), 64 // 2 ** (i + 2))
             for i, c in enumerate(ModelConfig.named("demo").stage_channels)]
    return query, feats


def test_multiscale_fast_plain_and_chunks(demo_query: tuple[ImplicitQuery,
                                                             list[torch.Tensor]]) -> None:
    query, feats = demo_query
    coords = torch.rand(2, 257, 2) * 2 - 1
    whole = query(feats, coords, "fast", chunk=10_000)
    assert whole.shape == (2, 257, 128)
    assert (query(feats, coords, "plain", chunk=10_000) - whole).abs().max() < 1e-5
    for chunk in (1, 64, 100):
        torch.testing.assert_close(query(feats, coords, "fast", chunk=chunk), whole,
                                   atol=1e-5, rtol=0)
    assert query(feats, coords[:, :0], "fast").shape == (2, 0, 128)


def block_centres(block_px: int, crop_px: int = 64) -> torch.Tensor:
    """Crop-normalised centres of block_px x block_px pixel blocks, row-major: [n*n, 2]."""
    n = crop_px // block_px
    t = -1.0 + (block_px * torch.arange(n, dtype=torch.float64) + block_px / 2) * 2 / crop_px
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.flatten(), yy.flatten()], dim=-1).float()


def test_resolutions_agree_where_points_coincide(
    demo_query: tuple[ImplicitQuery, list[torch.Tensor]],
) -> None:
    query, feats = demo_query
    sets = {m: block_centres(m // 10) for m in (10, 20, 50)}  # 64^2, 32^2, 12^2 points
    outs = {m: query(feats, c.expand(2, -1, -1), "fast", chunk=1000) for m, c in sets.items()}
    # the same coordinates give the same embedding whatever else is queried
    union = torch.cat(list(sets.values())).expand(2, -1, -1)
    together = torch.split(query(feats, union, "fast", chunk=777), [len(c) for c in sets.values()],
                           dim=1)
    for m, part in zip(sets, together, strict=True):
        torch.testing.assert_close(outs[m], part, atol=1e-5, rtol=0)
    # 50 m block centres are 10 m pixel centres (pixel 5k + 2): same values there
    hits = 0
    for m_a, m_b in ((10, 50), (10, 20), (20, 50)):
        a, b = sets[m_a], sets[m_b]
        match = (a[:, None, :] - b[None, :, :]).abs().amax(-1) < 1e-6  # [n_a, n_b]
        ia, ib = match.nonzero(as_tuple=True)
        hits += len(ia)
        torch.testing.assert_close(outs[m_a][:, ia], outs[m_b][:, ib], atol=1e-5, rtol=0)
    assert hits == 144  # every 50 m centre is a 10 m centre; 20 m centres fall on pixel corners


def test_unknown_decoder(demo_query: tuple[ImplicitQuery, list[torch.Tensor]]) -> None:
    query, feats = demo_query
    with pytest.raises(ConfigError):
        query(feats, torch.zeros(2, 1, 2), "slow")
