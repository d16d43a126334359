"""What the cross-validation compares, its models and its splits, and the out resolutions the
resolution report compares, each defined once.

The command line's ``cv-fold`` choices, the workflow's ``{model}`` and ``{split}`` wildcards, the
samples' fold columns (:mod:`mapper.splits`), the folds' training (:mod:`mapper.evaluate`) and
the report's tables and figures (:mod:`mapper.report`) all read them from here. A light module
(no third-party import), as every ``python -m mapper`` command and every workflow parse loads it.
"""

from __future__ import annotations

MODELS: tuple[str, ...] = ("rf", "miso", "miso_nopretrain")
"""Random Forest on the points' stack values; MiSo fine-tuned from the pretrained checkpoint;
MiSo without it (the ablation)."""

MODEL_NAMES: dict[str, str] = {"rf": "Random Forest", "miso": "MiSo",
                               "miso_nopretrain": "MiSo (no pretraining)"}

SPLITS: dict[str, float | None] = {"random": None, "sh1km": 1_000.0, "sh10km": 10_000.0}
"""Split name -> holdout distance in metres (``None``: random folds)."""

SPLIT_NAMES: dict[str, str] = {"random": "Random", "sh1km": "SH-1km", "sh10km": "SH-10km"}

COMPARED_RES: tuple[int, ...] = (20, 50)
"""Out resolutions (m) the resolution report (:mod:`mapper.resolution`) predicts and compares
with the 10 m map (the MiSo paper's experiment: 10, 20 and 50 m)."""


def in_order(values: list[str], known: tuple[str, ...] | list[str]) -> list[str]:
    """``values`` in the order of ``known`` (MODELS, the SPLITS), any other after them sorted:
    the order of the report's and the zone tables' rows and figures."""
    return [k for k in known if k in values] + sorted(v for v in values if v not in known)
