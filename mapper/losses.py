"""Training losses of MiSo: InfoNCE between embeddings, masked BCE (NSP), CE (soil order).

InfoNCE arrangement. Embeddings are [B, N, D]: B crops, N query points per crop, the n-th point
of every crop at the same role (labelled point, random point or grid node). For each point index
n separately, the B x B cosine similarities between modality a at (crop i, point n) and modality
b at (crop j, point n), divided by the temperature 0.1, are logits: the positive of (i, n) is
(i, n) in the other modality (the same place seen two ways); its negatives are the other crops'
n-th points. Points of the same crop are never contrasted with each other, since neighbouring
pixels of a crop are legitimately alike, while different crops are different places. The loss is
cross-entropy along rows (a -> b) plus along columns (b -> a), each averaged over the valid
anchors: the sum of both directions, as the reference code has it (so its loss weights keep their
meaning). A crop contributes nothing at a point index it has no valid point for (``valid``
mask); with fewer than 2 valid crops at an index there is no negative and that index is skipped.

Task losses: the weighted terms of the task's ``loss_weights`` (:mod:`mapper.tasks`, the
reference's weights), summed in that order:
    nsp       BCE(logits) + 0.1 NCE(visual, geo) + 0.1 NCE(sat, cov)
    soilorder CE(logits) + 1.0 CE(geo_logits) + 0.1 NCE(sat, cov)
    pretrain  NCE(sat, cov) + NCE(visual, geo)
(without the NCE(visual, geo) terms where ``training.geo_alignment`` is false)
Labels: a binary task's targets are [B, N] floats 0/1 with a boolean mask of labelled points; a
multiclass task's are [B, N] int64 class indices with ``IGNORE_INDEX`` where unlabelled. A batch
without any label gives a zero supervised term (with gradient graph), so unlabelled crops feed
only the NCE terms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from mapper.models.miso import MiSoOutput
from mapper.tasks import PRETRAIN, Task, get_task

TEMPERATURE = 0.1
PRETRAIN_WEIGHTS = (("nce_sat_cov", 1.0), ("nce_visual_geo", 1.0))
"""The reference's pretraining loss: both InfoNCE pairs, equally weighted."""
GEO_ALIGNMENT = "nce_visual_geo"
"""The InfoNCE pair that aligns the visual embedding with the geo encoder's: left out of every
loss when a region sets ``training.geo_alignment: false``."""
IGNORE_INDEX = -100  # torch's own default for cross_entropy


def info_nce(a: Tensor, b: Tensor, valid: Tensor | None = None,
             temperature: float = TEMPERATURE) -> Tensor:
    """Symmetric InfoNCE of a, b [B, N, D] across the batch at each point index (module doc).

    ``valid`` [B, N] bool marks points that take part (default: all). Returns a scalar.
    """
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"info_nce needs two [B, N, D] tensors, got {tuple(a.shape)}, "
                         f"{tuple(b.shape)}")
    bsz, n, _ = a.shape
    if valid is None:
        valid = torch.ones(bsz, n, dtype=torch.bool, device=a.device)
    a_n = F.normalize(a, dim=-1).transpose(0, 1)  # [B, N, D] -> [N, B, D]
    b_n = F.normalize(b, dim=-1).transpose(0, 1)  # [B, N, D] -> [N, B, D]
    logits = a_n @ b_n.transpose(1, 2) / temperature  # [N, B(a), B(b)]
    ok = valid.transpose(0, 1)  # [B, N] -> [N, B]
    anchors = ok & (ok.sum(dim=1, keepdim=True) >= 2)  # [N, B]: valid, with a negative
    if not bool(anchors.any()):
        return (a.sum() + b.sum()) * 0.0
    pair_ok = ok[:, :, None] & ok[:, None, :]  # [N, B, B]
    logits = logits.masked_fill(~pair_ok, float("-inf"))
    target = torch.arange(bsz, device=a.device).expand(n, bsz)  # [N, B]: the diagonal
    rows = F.cross_entropy(logits[anchors], target[anchors])  # a -> b
    cols = F.cross_entropy(logits.transpose(1, 2)[anchors], target[anchors])  # b -> a
    return rows + cols


def binary_bce(logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean BCE over labelled points: logits [B, N, 1] or [B, N], target [B, N] 0/1, mask [B, N]."""
    if logits.ndim == target.ndim + 1:
        logits = logits.squeeze(-1)  # [B, N, 1] -> [B, N]
    if not bool(mask.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[mask], target[mask].to(logits.dtype))


def multiclass_ce(logits: Tensor, target: Tensor, ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Mean CE over labelled points: logits [B, N, K], target [B, N] int64 (ignore_index off)."""
    labelled = target != ignore_index
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[labelled], target[labelled])  # [M, K], [M]


def task_loss(
    task: str,
    out: MiSoOutput,
    target: Tensor | None = None,
    mask: Tensor | None = None,
    valid: Tensor | None = None,
    geo_alignment: bool = True,
) -> tuple[Tensor, dict[str, float]]:
    """Total loss of a task (a map task's name or "pretrain") and its named terms (for logs).

    ``target``/``mask``: a binary task's 0/1 targets and labelled mask, or a multiclass task's
    class indices (mask unused, IGNORE_INDEX marks unlabelled); not needed for "pretrain".
    ``valid`` [B, N]: points that take part in the contrastive terms (e.g. not on nodata).
    ``geo_alignment`` False (region setting ``training.geo_alignment``): the InfoNCE pair of the
    visual and geo embeddings is left out (not computed), in pretraining and in every task.
    """
    spec = None if task == PRETRAIN else get_task(task)
    if spec is None:
        weights = PRETRAIN_WEIGHTS
    else:
        if target is None or (spec.binary and mask is None):
            needs = "target and mask" if spec.binary else "target"
            raise ValueError(f"{spec.name} loss needs {needs}")
        weights = spec.loss_weights
    weights = tuple((n, w) for n, w in weights if geo_alignment or n != GEO_ALIGNMENT)
    terms: dict[str, Tensor] = {}
    for name, _ in weights:
        terms[name] = _term(name, spec, out, target, mask, valid)
    # every term first, then the sum (autograd's order of work follows the order the graph was
    # built in); the first term (weight 1) enters as is, the others weighted
    (first, _), *rest = weights
    total = terms[first]
    for name, weight in rest:
        total = total + weight * terms[name]
    logged = {k: float(v.detach()) for k, v in terms.items()}
    return total, logged | {"total": float(total.detach())}


def _term(name: str, task: Task | None, out: MiSoOutput, target: Tensor | None,
          mask: Tensor | None, valid: Tensor | None) -> Tensor:
    """One named loss term (:data:`mapper.tasks.SUPERVISED`, :data:`mapper.tasks.CONTRASTIVE`);
    ``task`` None for pretraining, which has contrastive terms only."""
    if name == "nce_visual_geo":
        return info_nce(out.visual, out.geo, valid)
    if name == "nce_sat_cov":
        return info_nce(out.sat, out.cov, valid)
    assert task is not None and target is not None, name
    logits = out.geo_logits if name.endswith("_geo") else out.logits
    if task.binary:
        return binary_bce(logits, target, mask)
    return multiclass_ce(logits, target)
