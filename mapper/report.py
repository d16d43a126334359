"""The evaluation report of one task: metrics per fold, mean +- sd over folds, per split and model.

    report(region, task, fold_files, out)   # out = results/<region>/reports/<task>.md

Writes beside ``out``:
- ``<task>.md``: a Markdown report: the summary table (accuracy, macro (over the classes of a
  fold's test points) and weighted precision / recall / F1, and for a binary task such as NSP AUC
  and R1 = recall of present), a per-class table (precision, recall, F1), fold sizes, for a
  synthetic region with truth rasters how the held-out predictions agree with the hidden truth,
  and the results by zone of each of the region's zone layers (:mod:`mapper.zonal`);
- ``<task>.json``: every figure, per fold too;
- ``<task>_splits.png``: bars of the headline metrics per split and model (+- sd);
- ``<task>_confusion.png``: confusion matrices pooled over the folds, per split and model
  (rows true class, normalised per row);
- ``<task>_reliability.png``: per split, the pooled held-out predictions of each model against
  the observed labels (:mod:`mapper.label_reliability`: the probability of present against the
  share present for a binary task, the top-label confidence against the accuracy for a
  multiclass one), in ``RELIABILITY_BINS`` equal-width bins with the expected calibration error;
  for a binary task on a synthetic region also against the hidden truth probability at the same
  points (:func:`mapper.truth.plot_reliability` draws it). The figures are
  :mod:`mapper.report_figures`'.

R1 (binary) is given at two thresholds side by side: 0.5 (the class predictions) and the prior,
the share of present among the fold's training points (no test label used), which says whether a
low R1 is a ranking or a threshold problem.

"mean +- sd" is over the folds that had training and test points (sample sd, ddof 1); a fold
whose spatial holdout left no training point, or none of whose test points has a prediction, is
counted and left out. Per-class figures are averaged
over the folds where the class occurs (true or predicted).

Truth (synthetic regions only, ``resources/<region>/truth/<task>.tif``): how the pooled held-out
predictions agree with it, and for a binary task their reliability, are :mod:`mapper.truth`'s.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mapper.config import Region
from mapper.errors import InputError
from mapper.evaluate import read_fold
from mapper.experiment import MODEL_NAMES, MODELS, SPLIT_NAMES, SPLITS, in_order
from mapper.files import staged_paths
from mapper.label_reliability import (
    bin_table,
    label_reliability,
    label_reliability_markdown,
)
from mapper.metrics import classification_metrics
from mapper.report_figures import (
    has_reliability,
    plot_confusion,
    plot_reliability_panels,
    plot_splits,
)
from mapper.tasks import get_task
from mapper.truth import RELIABILITY_BINS, truth_agreement, truth_path
from mapper.zonal import zone_markdown, zone_results
from mapper.zones import read_zone_layer, zone_layer_path

logger = logging.getLogger(__name__)

THIN_FOLD = 20
"""Folds with fewer training points than this are flagged in the report."""
SUMMARY = {
    "binary": ["accuracy", "auc", "r1", "macro_precision", "macro_recall", "macro_f1",
               "weighted_precision", "weighted_recall", "weighted_f1"],
    "multiclass": ["accuracy", "macro_precision", "macro_recall", "macro_f1",
                   "weighted_precision", "weighted_recall", "weighted_f1"],
}
"""Metrics of the summary table, per kind of task (:mod:`mapper.tasks`)."""
DIAGNOSTICS = {"binary": ["prior", "mean_p_present", "mean_p_absent", "r1_at_prior",
                          "precision_at_prior"], "multiclass": []}
BESIDE = {"r1": ["r1_at_prior", "prior"]}
"""Diagnostics shown in the summary table right after a metric: R1 at the prior beside R1 at 0.5."""
LABELS = {"accuracy": "accuracy", "auc": "AUC", "r1": "R1 at 0.5", "r1_at_prior": "R1 at prior",
          "prior": "prior", "macro_precision": "macro P",
          "macro_recall": "macro R", "macro_f1": "macro F1", "weighted_precision": "weighted P",
          "weighted_recall": "weighted R", "weighted_f1": "weighted F1"}


def _stats(values: list[float]) -> dict[str, float]:
    v = np.array([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    if not len(v):
        return {"mean": float("nan"), "sd": float("nan"), "n": 0}
    sd = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
    return {"mean": float(v.mean()), "sd": sd, "n": int(len(v))}


def _fmt(s: dict[str, float], folds: int | None = None) -> str:
    """``mean ± sd`` of a figure; with ``folds``, the row's folds with training and test points,
    how many the figure rests on when fewer (AUC and R1 are undefined where a fold's test points
    are one class)."""
    if not s["n"]:
        return "–"
    text = f"{s['mean']:.3f}" if not math.isfinite(s["sd"]) else f"{s['mean']:.3f} ± {s['sd']:.3f}"
    if folds is None or s["n"] >= folds:
        return text
    return f"{text} ({s['n']} fold{'s' if s['n'] > 1 else ''})"


def _fixed(x: float) -> str:
    """A figure to 3 decimals; "–" where it is undefined (NaN: AUC and correlation of test points
    of one class)."""
    return f"{x:.3f}" if math.isfinite(x) else "–"


# -- the report -----------------------------------------------------------------------------------


def calibration(y_true: np.ndarray, p: np.ndarray, train_counts: list[int]) -> dict[str, float]:
    """Diagnostics of one fold of a binary task: mean predicted probability of the present and
    absent test points, and recall and precision of "present" at a threshold equal to the share
    of present among the fold's training points (the prior; uses no test label)."""
    prior = train_counts[1] / max(sum(train_counts), 1)
    present, yes = y_true == 1, p >= prior
    return {
        "prior": float(prior),
        "mean_p_present": float(p[present].mean()) if present.any() else float("nan"),
        "mean_p_absent": float(p[~present].mean()) if (~present).any() else float("nan"),
        "r1_at_prior": float((yes & present).sum() / present.sum()) if present.any()
        else float("nan"),
        "precision_at_prior": float((yes & present).sum() / yes.sum()) if yes.any()
        else float("nan"),
    }


def collect(task: str, fold_files: list[str | Path], region: str | None = None
            ) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Per-fold metric records and all predictions (pooled) of the fold files, each checked to
    be of ``task`` (its classes, in order) and ``region`` (when given), and given once."""
    spec = get_task(task)
    classes = list(spec.classes)
    records, frames = [], []
    seen: dict[tuple[str, str, int], str | Path] = {}
    for path in fold_files:
        df, meta = read_fold(path)
        if meta.get("task") != task:
            raise InputError(f"{path}: a {meta.get('task')} fold, not {task}; pass {task} folds")
        if region is not None and meta.get("region") not in (None, region):
            raise InputError(f"{path}: a fold of region {meta['region']}, not {region}; pass "
                             f"region {region}'s folds")
        if meta.get("classes") and list(meta["classes"]) != classes:
            raise InputError(f"{path}: a fold of the classes {meta['classes']}, not {task}'s "
                             f"{classes}; delete it and run the same target again")
        key = (meta["split"], meta["model"], int(meta["fold"]))
        if key in seen:
            raise InputError(f"{path}: {key[1]} {key[0]} fold {key[2]} is given twice (also "
                             f"{seen[key]}); pass each fold once")
        seen[key] = path
        rec = {k: meta[k] for k in ("model", "split", "fold", "n_train", "n_test", "note")}
        rec["synthetic"] = bool(meta.get("synthetic"))
        rec["train_counts"] = meta.get("train_counts")
        rec["path"] = str(path)
        usable = df[df["y_pred"] >= 0]
        if meta["n_train"] > 0 and len(usable):
            score = usable[spec.probability_columns[1]].to_numpy() if spec.binary else None
            rec["metrics"] = classification_metrics(usable["y_true"].to_numpy(),
                                                    usable["y_pred"].to_numpy(), classes, score)
            if spec.binary and rec["train_counts"]:
                rec["metrics"].update(calibration(usable["y_true"].to_numpy(), score,
                                                  rec["train_counts"]))
        else:
            rec["metrics"] = None
        records.append(rec)
        frames.append(df)
    # in split, model and fold order: the figures (float sums) do not depend on the files' order
    splits = in_order(sorted({r["split"] for r in records}), tuple(SPLITS))
    models = in_order(sorted({r["model"] for r in records}), MODELS)
    order = sorted(range(len(records)), key=lambda i: (splits.index(records[i]["split"]),
                                                        models.index(records[i]["model"]),
                                                        int(records[i]["fold"])))
    records, frames = [records[i] for i in order], [frames[i] for i in order]
    cols = ["obs_id", "x", "y", "y_true", *spec.probability_columns, "y_pred", "model", "split",
            "fold"]
    preds = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    return records, preds


def summarise(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """``{split: {model: {metric: {mean, sd, n}, per_class: {...}, folds, folds_used}}}``."""
    spec = get_task(task)
    classes = list(spec.classes)
    summary: dict[str, Any] = {}
    for split in in_order(sorted({r["split"] for r in records}), tuple(SPLITS)):
        for model in in_order(sorted({r["model"] for r in records}), MODELS):
            recs = [r for r in records if r["split"] == split and r["model"] == model]
            if not recs:
                continue
            used = [r["metrics"] for r in recs if r["metrics"] is not None]
            entry: dict[str, Any] = {"folds": len(recs), "folds_used": len(used),
                                     "n_test": sum(r["n_test"] for r in recs
                                                   if r["metrics"] is not None)}
            for m in SUMMARY[spec.kind] + DIAGNOSTICS[spec.kind]:
                entry[m] = _stats([u.get(m, float("nan")) for u in used])
            entry["per_class"] = {
                c: {m: _stats([u["per_class"][c][m] for u in used])
                    for m in ("precision", "recall", "f1")}
                | {"support": int(sum(u["per_class"][c]["support"] for u in used))}
                for c in classes
            }
            summary.setdefault(split, {})[model] = entry
    return summary


def _markdown(region: Region, task: str, summary: dict[str, Any], records: list[dict[str, Any]],
              truth: dict[str, Any] | None, out: Path, by_zone: list[str] | None = None,
              label_rel: dict[str, Any] | None = None, synthetic: bool = False) -> str:
    spec = get_task(task)
    classes = list(spec.classes)
    lines = [f"# Evaluation: {spec.heading}, region {region.name}", ""]
    if region.synthetic:
        lines += ["**SYNTHETIC region**: every source and observation is synthetic; these figures "
                  "describe no real place.", ""]
    elif synthetic:
        lines += ["**SYNTHETIC inputs**: stacks of this region were made from a synthetic file "
                  "(tag MAPPER_SYNTHETIC); these figures describe no real place.", ""]
    n_folds = max((r["fold"] for r in records), default=-1) + 1
    lines += [
        f"{n_folds}-fold cross-validation; each model trained on a fold's training points and "
        "scored on its test points; the same folds for every model. Figures are mean ± sd over "
        "the folds with training and test points (sample sd); a figure undefined in some of "
        "them (AUC and R1 where a fold's test points are one class) says on how many folds it "
        "rests; *test points* counts those of these folds. SH-d: no "
        "training point within d of a test point (spatial holdout with a dead zone). Class "
        "predictions at the most probable class (0.5 for NSP). Macro averages are over the "
        "classes of a fold's test points, the same for every model.", "",
    ]
    if spec.binary:
        lines += [
            "R1 = recall of present. *R1 at 0.5* counts the class predictions; *R1 at prior* "
            "thresholds the probability at the *prior*, the share of present among the fold's "
            "training points (no test label used): a model that ranks well but whose "
            "probabilities stay near the prevalence has a low R1 at 0.5 and a higher one at the "
            "prior.", "",
        ]
    metrics = [c for m in SUMMARY[spec.kind] for c in (m, *BESIDE.get(m, []))]
    lines.append("| split | model | folds | test points | "
                 + " | ".join(LABELS[m] for m in metrics) + " |")
    lines.append("|" + "---|" * (4 + len(metrics)))
    for split, models in summary.items():
        for model, e in models.items():
            lines.append(
                f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                f"{e['folds_used']}/{e['folds']} | {e['n_test']} | "
                + " | ".join(_fmt(e[m], e["folds_used"]) for m in metrics) + " |"
            )
    thin = [r for r in records if 0 < r["n_train"] < THIN_FOLD]
    if thin:
        shown = ", ".join(sorted({f"{SPLIT_NAMES.get(r['split'], r['split'])} fold {r['fold']} "
                                  f"({r['n_train']})" for r in thin}))
        lines += ["", f"Folds trained on fewer than {THIN_FOLD} points (the dead zone of a wide "
                  f"holdout in a small region) count in the means but say little: {shown}."]
    if spec.binary:
        lines += [
            "", f"## Calibration ({spec.abbreviation or spec.subject})", "",
            "A model can rank points well (AUC) yet rarely reach 0.5 when its probabilities stay "
            "near the prevalence. Here, against the observed test labels: the mean predicted "
            "probability of the present and absent test points, and recall / precision of "
            "present at the prior, the share of present among the fold's training points (no "
            "test label used).", "",
            "| split | model | prior | mean p (present) | mean p (absent) | R1 at prior | "
            "precision at prior |", "|---|---|---|---|---|---|---|",
        ]
        for split, models in summary.items():
            for model, e in models.items():
                lines.append(
                    f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                    + " | ".join(_fmt(e[m], e["folds_used"]) for m in DIAGNOSTICS[spec.kind])
                    + " |")
    lines += ["", "## Per class (precision / recall / F1, means over the folds; sd in the "
              "JSON; n: test points)", ""]
    lines.append("| split | model | " + " | ".join(classes) + " |")
    lines.append("|" + "---|" * (2 + len(classes)))
    for split, models in summary.items():
        for model, e in models.items():
            cells = []
            for c in classes:
                pc = e["per_class"][c]
                if not pc["f1"]["n"]:
                    cells.append("–")
                    continue
                # precision has no value in a fold that never predicts the class: "–" when
                # no fold has one, as for any figure resting on no fold
                cells.append(" / ".join(f"{pc[m]['mean']:.2f}" if pc[m]["n"] else "–"
                                        for m in ("precision", "recall", "f1"))
                             + f" (n={pc['support']})")
            lines.append(f"| {SPLIT_NAMES.get(split, split)} | "
                         f"{MODEL_NAMES.get(model, model)} | " + " | ".join(cells) + " |")
    lines += ["", "## Folds (training / test points)", "", "| split | model | "
              + " | ".join(f"fold {k}" for k in range(n_folds)) + " |",
              "|" + "---|" * (2 + n_folds)]
    for split, models in summary.items():
        for model in models:
            cells = []
            for k in range(n_folds):
                r = [r for r in records if (r["split"], r["model"], r["fold"]) == (split, model, k)]
                cells.append(f"{r[0]['n_train']} / {r[0]['n_test']}" if r else "–")
            lines.append(f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                         + " | ".join(cells) + " |")
    figure = out.with_name(f"{out.stem}_reliability.png")
    if label_rel:
        lines += label_reliability_markdown(task, label_rel, figure, (SPLIT_NAMES, MODEL_NAMES))
    if truth is not None:
        lines += ["", "## Agreement with the hidden truth (synthetic region)", "",
                  f"Held-out predictions pooled over folds, read against `{truth['path']}` at the "
                  "test points. The observed labels are noisy draws from the truth; their own "
                  "agreement bounds what a model can reach.", ""]
        if spec.binary:
            lines += ["| split | model | points | AUC vs truth>0.5 | corr. vs truth prob. | "
                      "labels: AUC / corr. | chance: AUC / corr. |",
                      "|---|---|---|---|---|---|---|"]
            for split, models in truth["splits"].items():
                for model, t in models.items():
                    lines.append(
                        f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                        f"{t['n']} | {_fixed(t['auc_vs_truth'])} | {_fixed(t['corr_vs_truth'])} | "
                        f"{_fixed(t['labels_auc_vs_truth'])} / "
                        f"{_fixed(t['labels_corr_vs_truth'])} | "
                        f"{t['chance_auc']:.1f} / {t['chance_corr']:.1f} |")
            lines += _reliability_markdown(spec.abbreviation or spec.subject, truth, out)
        else:
            lines += ["| split | model | points | accuracy vs truth | labels vs truth | "
                      "chance (majority class) |", "|---|---|---|---|---|---|"]
            for split, models in truth["splits"].items():
                for model, t in models.items():
                    lines.append(
                        f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                        f"{t['n']} | {t['accuracy_vs_truth']:.3f} | "
                        f"{t['labels_accuracy_vs_truth']:.3f} | {t['chance_accuracy']:.3f} |")
    lines += by_zone or []
    against = " and the hidden truth" if has_reliability(truth) else ""
    lines += ["", f"Figures: `{out.stem}_splits.png` (headline metrics per split), "
              f"`{out.stem}_confusion.png` (pooled confusion matrices), `{figure.name}` "
              f"(reliability against the observed labels{against}); every figure per fold in "
              f"`{out.stem}.json`.", ""]
    return "\n".join(lines)


def _reliability_markdown(subject: str, truth: dict[str, Any], out: Path) -> list[str]:
    """The reliability section: ECE per split and model, then the bins of each split."""
    lines = [
        "", f"## Reliability against the hidden truth ({subject})", "",
        f"The same pooled held-out points, their predicted probability in {RELIABILITY_BINS} "
        "equal-width bins against the truth probability at the same points: a calibrated model's "
        "mean prediction in a bin equals the mean truth there. ECE (expected calibration error) = "
        "sum over bins of n_b / N × |mean predicted − mean truth|, in probability units (0: "
        f"calibrated). Figure: `{out.stem}_reliability.png`.", "",
        "| split | model | points | ECE | mean predicted | mean truth |",
        "|---|---|---|---|---|---|",
    ]
    for split, models in truth["splits"].items():
        for model, t in models.items():
            lines.append(f"| {SPLIT_NAMES.get(split, split)} | {MODEL_NAMES.get(model, model)} | "
                         f"{t['n']} | {t['ece']:.3f} | {t['mean_pred']:.3f} | "
                         f"{t['mean_truth']:.3f} |")
    for split, models in truth["splits"].items():
        lines += bin_table(f"{SPLIT_NAMES.get(split, split)}: mean predicted / mean truth "
                           "(points) per bin of predicted probability",
                           {MODEL_NAMES.get(m, m): t["reliability"] for m, t in models.items()})
    return lines


def strict_json(obj: Any) -> Any:
    """NaN -> None, for strict JSON (empty reliability bins, undefined metrics)."""
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [strict_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _check_complete(records: list[dict[str, Any]], folds: int, region: Region) -> None:
    """Every split and model given must have each of the region's ``evaluation.folds`` folds:
    a mean over some of them would read as the whole cross-validation."""
    have: dict[tuple[str, str], set[int]] = {}
    for r in records:
        have.setdefault((r["split"], r["model"]), set()).add(int(r["fold"]))
    for (split, model), got in sorted(have.items()):
        if got != set(range(folds)):
            missing = sorted(set(range(folds)) - got)
            extra = sorted(got - set(range(folds)))
            what = (f"lacks fold(s) {', '.join(map(str, missing))} of" if missing else
                    f"has fold(s) {', '.join(map(str, extra))} beyond")
            raise InputError(
                f"{model} {split} {what} region {region.name}'s {folds} (evaluation.folds of "
                f"{region.path}); pass every fold of each split and model, as the workflow's "
                "report rule does"
            )


def report(
    region: Region,
    task: str,
    fold_files: list[str | Path],
    out: str | Path,
    truth: str | Path | None = None,
    zones: list[str | Path] | None = None,
) -> dict[str, Any]:
    """Write ``out`` (Markdown) and its JSON and PNGs beside it (module doc); returns the
    JSON content. ``truth``: the truth raster (default ``resources/<region>/truth/<task>.tif``
    when the region is synthetic and the file exists). ``zones``: prepared zone layers to break
    the results down by (:mod:`mapper.zonal`; default: the region's ``zones``, each at
    :func:`mapper.zones.zone_layer_path`; ``[]``: none)."""
    out = Path(out)
    if not fold_files:
        raise InputError(f"{out}: no fold predictions given; pass the cv-fold outputs")
    if zones is None:
        zones = [zone_layer_path(region.name, z["name"]) for z in region.settings.get("zones", [])]
    layers = [read_zone_layer(p) for p in zones]  # a missing layer fails before any work
    records, preds = collect(task, fold_files, region.name)
    # a real region whose stacks read a synthetic file: its folds say so (their samples did)
    synthetic = region.synthetic or any(r["synthetic"] for r in records)
    _check_complete(records, int(region.settings["evaluation"]["folds"]), region)
    summary = summarise(task, records)
    truth_info = None
    tpath = Path(truth) if truth else truth_path(region, task)
    if (truth or region.synthetic) and tpath.is_file():
        truth_info = truth_agreement(task, preds, tpath)
    elif truth:
        where = (f" (this synthetic region's is {truth_path(region, task)}, which its sources "
                 "rule writes)" if region.synthetic else "")
        raise InputError(f"{tpath}: truth raster not found; check the --truth path{where}")
    label_rel = label_reliability(task, preds)
    content = {
        "region": region.name, "synthetic": synthetic, "task": task,
        "classes": list(get_task(task).classes), "summary": summary,
        "folds": [{k: v for k, v in r.items()} for r in records], "truth": truth_info,
        "label_reliability": label_rel,
        "zones": {layer.name: zone_results(task, preds, layer) for layer in layers},
    }
    by_zone = [line for z in content["zones"].values()
               for line in zone_markdown(task, z, SPLIT_NAMES, MODEL_NAMES, LABELS)]
    base = out.with_suffix("")
    files = [out, base.with_suffix(".json")] + [base.parent / f"{base.name}_{kind}.png"
                                                for kind in ("splits", "confusion", "reliability")]
    with staged_paths(files) as (md, js, splits, confusion, reliability):  # all or none
        js.write_text(json.dumps(strict_json(content), indent=1, sort_keys=False))
        plot_splits(task, summary, LABELS, splits, synthetic)
        plot_confusion(task, preds, confusion, synthetic)
        plot_reliability_panels(task, label_rel, truth_info, reliability, synthetic)
        md.write_text(_markdown(region, task, summary, records, truth_info, out, by_zone,
                                label_rel, synthetic))
    logger.info("wrote %s (+ .json, _splits.png, _confusion.png, _reliability.png) from %d folds",
                out, len(records))
    return content
