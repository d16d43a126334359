"""InfoNCE arrangement, masked BCE/CE and the task losses' weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mapper.losses import IGNORE_INDEX, binary_bce, info_nce, multiclass_ce, task_loss
from mapper.models.miso import MiSoOutput


@pytest.fixture
def pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two views of 6 crops x 4 points: b is a noisy copy of a."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 4, 16, generator=g)
    return a, a + 0.3 * torch.randn(6, 4, 16, generator=g)


def test_aligned_beats_shuffled(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    shuffled = b[torch.tensor([1, 2, 3, 4, 5, 0])]  # every crop paired with another crop
    assert info_nce(a, b) < 0.5 * info_nce(a, shuffled)
    assert info_nce(a, a) < info_nce(a, b)


def test_symmetric(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    torch.testing.assert_close(info_nce(a, b), info_nce(b, a))


def test_value_from_formula() -> None:
    # 2 crops, 1 point: cosine similarities s_ij, loss = CE rows + CE columns at T = 0.1
    a = torch.tensor([[[1.0, 0.0]], [[0.0, 2.0]]])
    b = torch.tensor([[[1.0, 1.0]], [[0.0, 1.0]]])
    s = torch.tensor([[1 / math.sqrt(2), 0.0], [1 / math.sqrt(2), 1.0]]) / 0.1
    rows = -(F.log_softmax(s, dim=1).diagonal()).mean()
    cols = -(F.log_softmax(s, dim=0).diagonal()).mean()
    torch.testing.assert_close(info_nce(a, b), rows + cols)


def test_points_contrast_only_across_crops(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    # the loss is the mean of per-point-index losses: other points of a crop are not negatives
    per_index = torch.stack([info_nce(a[:, n : n + 1], b[:, n : n + 1]) for n in range(4)])
    torch.testing.assert_close(info_nce(a, b), per_index.mean())


def test_valid_mask_drops_crops(pair: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = pair
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[2] = False
    torch.testing.assert_close(info_nce(a, b, valid), info_nce(a[[0, 1, 3, 4, 5]],
                                                               b[[0, 1, 3, 4, 5]]))
    alone = torch.zeros(6, 4, dtype=torch.bool)
    alone[0] = True  # one crop: no negatives anywhere
    a.requires_grad_(True)
    loss = info_nce(a, b, alone)
    loss.backward()
    assert float(loss.detach()) == 0.0 and a.grad is not None


def test_bce_ignores_unlabelled() -> None:
    logits = torch.tensor([[[2.0], [-1.0], [0.5]]])
    target = torch.tensor([[1.0, float("nan"), 0.0]])
    mask = torch.tensor([[True, False, True]])
    expected = F.binary_cross_entropy_with_logits(torch.tensor([2.0, 0.5]),
                                                  torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(binary_bce(logits, target, mask), expected)
    assert float(binary_bce(logits, target, torch.zeros_like(mask))) == 0.0


def test_ce_ignores_unlabelled() -> None:
    logits = torch.randn(1, 4, 7, generator=torch.Generator().manual_seed(1))
    target = torch.tensor([[3, IGNORE_INDEX, 0, IGNORE_INDEX]])
    expected = F.cross_entropy(logits[0, [0, 2]], torch.tensor([3, 0]))
    torch.testing.assert_close(multiclass_ce(logits, target), expected)
    assert float(multiclass_ce(logits, torch.full((1, 4), IGNORE_INDEX))) == 0.0


def fake_output(n_out: int) -> MiSoOutput:
    g = torch.Generator().manual_seed(2)
    emb = [torch.randn(4, 3, 8, generator=g) for _ in range(4)]
    return MiSoOutput(*emb, logits=torch.randn(4, 3, n_out, generator=g),
                      geo_logits=torch.randn(4, 3, n_out, generator=g))


def test_task_weights() -> None:
    out = fake_output(1)
    target = torch.randint(0, 2, (4, 3)).float()
    mask = torch.rand(4, 3, generator=torch.Generator().manual_seed(3)) > 0.3
    total, terms = task_loss("nsp", out, target, mask)
    expected = (binary_bce(out.logits, target, mask) + 0.1 * info_nce(out.visual, out.geo)
                + 0.1 * info_nce(out.sat, out.cov))
    torch.testing.assert_close(total, expected)
    assert terms["total"] == pytest.approx(float(expected))

    out = fake_output(7)
    classes = torch.randint(0, 7, (4, 3))
    total, _ = task_loss("soilorder", out, classes)
    expected = (multiclass_ce(out.logits, classes) + multiclass_ce(out.geo_logits, classes)
                + 0.1 * info_nce(out.sat, out.cov))
    torch.testing.assert_close(total, expected)

    total, terms = task_loss("pretrain", out)
    torch.testing.assert_close(total, info_nce(out.sat, out.cov) + info_nce(out.visual, out.geo))
    assert set(terms) == {"nce_sat_cov", "nce_visual_geo", "total"}

    # training.geo_alignment false: the visual-geo pair is left out of every loss (not computed)
    total, terms = task_loss("pretrain", out, geo_alignment=False)
    torch.testing.assert_close(total, info_nce(out.sat, out.cov))
    assert set(terms) == {"nce_sat_cov", "total"}
    out = fake_output(1)
    total, terms = task_loss("nsp", out, target, mask, geo_alignment=False)
    torch.testing.assert_close(
        total, binary_bce(out.logits, target, mask) + 0.1 * info_nce(out.sat, out.cov))
    assert set(terms) == {"bce", "nce_sat_cov", "total"}
