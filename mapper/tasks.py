"""The map tasks: what each one predicts, from which label, with which loss and which colours.

Every stage reads its task from :data:`TASKS` (the command line's ``--task`` choices, the
workflow's ``{task}`` wildcard, checkpoint validation, losses, evaluation, products), so a task is
defined once, here. A task is of one of two kinds:

- ``binary``: one logit per point, the probability of presence (sigmoid). Evaluated as the two
  classes ``absent, present`` (label 0/1); predicted as one probability band named after the
  task; mapped as a probability (UInt8 percent) drawn with a colour ramp.
- ``multiclass``: one logit per class (softmax). Labels are class indices in ``classes`` order
  (observations give class names); predicted as one probability band per class; mapped as the
  most probable class with a colour table, plus the class probabilities.

Loss weights follow the authors' code: each task's loss is its supervised term (BCE or CE on the
prediction head) plus weighted auxiliary terms named as in :mod:`mapper.losses`.

Contrastive pretraining (:data:`PRETRAIN`) is a kind of checkpoint, not a map task: it has no
label, class or product.

Adding a task: an entry in :data:`TASKS` (a label column that the observation tables carry, its
classes, loss weights, colours and product wording); the rest of the pipeline follows from it. A
new *kind* of task (a continuous target such as organic-layer thickness) also needs its loss, its
evaluation metrics and its product writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mapper.bands import SOIL_ORDERS
from mapper.errors import ConfigError, InputError

Kind = Literal["binary", "multiclass"]
RGB = tuple[int, int, int]

KINDS: tuple[Kind, ...] = ("binary", "multiclass")
PRETRAIN = "pretrain"
"""The task name of contrastive-pretraining checkpoints (not a map task)."""

SUPERVISED = {"binary": "bce", "multiclass": "ce"}
"""The supervised loss term of each kind, on the prediction head's logits; ``<term>_geo`` is the
same on the geo head's logits (:func:`mapper.losses.task_loss`)."""
CONTRASTIVE = ("nce_visual_geo", "nce_sat_cov")
"""InfoNCE terms between embeddings that any task may weight."""


@dataclass(frozen=True)
class Task:
    """One map task (module doc). Text fields are used verbatim in products and reports."""

    name: str
    """Identifier: ``--task``, file names (``maps/<name>_<region>.tif``), checkpoint task."""
    kind: Kind
    classes: tuple[str, ...]
    """Evaluated classes in label-index order (``absent, present`` for a binary task)."""
    label_column: str
    """Column of the observation and samples tables holding the label (empty: unlabelled)."""
    title: str
    """Title of the map product."""
    subject: str
    """What is mapped, lower case, as it reads in a sentence (``probability of <subject>``)."""
    loss_weights: tuple[tuple[str, float], ...]
    """(term, weight) in the order the terms are computed and summed; the supervised term first,
    with weight 1."""
    abbreviation: str = ""
    """Short name in report headings, if any."""
    definition: str = ""
    """Binary tasks: what presence means (product metadata)."""
    ramp: tuple[tuple[float, RGB], ...] = ()
    """Binary tasks: (probability, colour) stops of the map's colour ramp, linear in between."""
    colours: tuple[RGB, ...] = ()
    """Multiclass tasks: one colour per class, in ``classes`` order."""
    out_of_scope: tuple[str, ...] = ()
    """Multiclass tasks: class names an observation table may hold that the task does not map;
    such a row is read as unlabelled for this task (its other labels are kept), and counted."""

    def __post_init__(self) -> None:
        def bad(problem: str) -> ConfigError:
            return ConfigError(f"task {self.name!r} in mapper/tasks.py: {problem}")

        if self.kind not in KINDS:
            raise bad(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.name == PRETRAIN or not self.name.isidentifier() or not self.name.islower():
            raise bad("the name must be a lower-case identifier other than 'pretrain'")
        if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
            raise bad("needs at least two distinct classes")
        if self.kind == "binary" and (len(self.classes) != 2 or not self.ramp):
            raise bad("a binary task has two classes (absent, present) and a colour ramp")
        if self.kind == "multiclass" and len(self.colours) != len(self.classes):
            raise bad(f"{len(self.colours)} colours for {len(self.classes)} classes")
        terms = [t for t, _ in self.loss_weights]
        sup = SUPERVISED[self.kind]
        if not terms or terms[0] != sup or self.loss_weights[0][1] != 1.0:
            raise bad(f"the loss starts with its supervised term ({sup!r}, 1.0)")
        allowed = (sup, f"{sup}_geo", *CONTRASTIVE)
        if any(t not in allowed for t in terms) or len(set(terms)) != len(terms):
            raise bad(f"loss terms {terms}: each at most once, from {', '.join(allowed)}")

    @property
    def binary(self) -> bool:
        return self.kind == "binary"

    @property
    def multiclass(self) -> bool:
        return self.kind == "multiclass"

    @property
    def n_outputs(self) -> int:
        """Logits per point: 1 for a binary task, one per class otherwise."""
        return 1 if self.binary else len(self.classes)

    @property
    def output_names(self) -> list[str]:
        """Names of the logits, of a predicted tile's probability bands and of a checkpoint's
        ``classes``: the task's name for a binary task, the classes otherwise."""
        return [self.name] if self.binary else list(self.classes)

    def probabilities(self, logits: Any) -> Any:
        """The probabilities of logits ``[..., n_outputs]`` (a torch tensor), in their dtype: of
        presence, by the sigmoid, for a binary task (one per point, as its map's band); of each
        class, by the softmax over the last axis, otherwise."""
        return logits.sigmoid() if self.binary else logits.softmax(dim=-1)

    @property
    def probability_columns(self) -> list[str]:
        """Columns of the per-class probabilities in cross-validation tables."""
        return [f"p_{c}" for c in self.classes]

    @property
    def label_dtype(self) -> str:
        """Dtype of training targets: float 0/1 for BCE, int64 class indices for CE."""
        return "float32" if self.binary else "int64"

    @property
    def entropy_definition(self) -> str:
        """What the uncertainty product's first band holds (:mod:`mapper.uncertainty`)."""
        if self.binary:
            return (f"normalised binary entropy of the probability p of {self.subject}: "
                    "(-p ln p - (1-p) ln(1-p)) / ln 2; 0 where p is 0 or 1, 1 at p = 0.5")
        return (f"normalised entropy of the blended {self.subject} probabilities: "
                f"-sum p ln p / ln {len(self.classes)}; 0 where one class is certain, 1 where "
                "all are equally likely")

    @property
    def ensemble_measure(self) -> tuple[str, str]:
        """Band name and definition of the uncertainty product's ensemble band (when the region
        has ``prediction.ensemble`` members): the spread of a binary task's probability, the
        disagreement on a multiclass task's class (:mod:`mapper.uncertainty`)."""
        if self.binary:
            return ("ensemble_std", f"standard deviation (ddof 0) of the probability of "
                    f"{self.subject} across the ensemble: the map's model and its members")
        return ("ensemble_disagreement", f"share of the ensemble's members whose most probable "
                f"{self.subject} differs from the map's")

    @property
    def heading(self) -> str:
        """The task in a heading: its subject, and its abbreviation in parentheses."""
        return f"{self.subject} ({self.abbreviation})" if self.abbreviation else self.subject


TASKS: dict[str, Task] = {
    "nsp": Task(
        name="nsp",
        kind="binary",
        classes=("absent", "present"),
        label_column="nsp",
        title="Near-surface permafrost probability",
        subject="near-surface permafrost",
        abbreviation="NSP",
        definition="presence within ~1 m",
        loss_weights=(("bce", 1.0), ("nce_visual_geo", 0.1), ("nce_sat_cov", 0.1)),
        # diverging from "permafrost unlikely" (blue-green) through a pale middle to "likely"
        # (deep purple); stops in probability, since QGIS applies the percent band's scale
        ramp=(
            (0.0, (26, 150, 140)),
            (0.25, (128, 205, 193)),
            (0.5, (245, 245, 230)),
            (0.75, (194, 165, 207)),
            (1.0, (84, 39, 136)),
        ),
    ),
    "soilorder": Task(
        name="soilorder",
        kind="multiclass",
        classes=tuple(SOIL_ORDERS),
        label_column="soil_order",
        title="Soil taxonomic order",
        subject="soil order",
        loss_weights=(("ce", 1.0), ("ce_geo", 1.0), ("nce_sat_cov", 0.1)),
        # rare in Alaska (11 of about 32,000 soil-order points in the MiSo paper's data) and left
        # out of its 7 orders; a point of one keeps its NSP label
        out_of_scope=("Alfisols", "Aridisols", "Oxisols"),
        # hues after the USDA-NRCS Global Soil Regions map, so that the map reads like the soil
        # maps its users know
        colours=(
            (199, 72, 168),  # Andisols: magenta
            (222, 203, 160),  # Entisols: pale tan
            (160, 176, 226),  # Gelisols: pale blue-violet
            (110, 64, 36),  # Histosols: dark brown
            (209, 151, 55),  # Inceptisols: ochre
            (52, 140, 72),  # Mollisols: green
            (236, 150, 196),  # Spodosols: pink-violet
        ),
    ),
}
"""Every map task, by name, in the order the workflow lists them."""

OBSERVATION_COLUMNS = ["obs_id", "lon", "lat", "date", *(t.label_column for t in TASKS.values())]
"""Columns of a region's field observation table (the one input a user supplies)."""


def get_task(name: str) -> Task:
    """The task called ``name``; a one-line ConfigError naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def tagged_task(path: object, tags: dict[str, str]) -> Task:
    """The task a raster of the workflow (a predicted tile, a map) was made for: its
    ``MAPPER_TASK`` tag; one InputError naming the file when the tag is missing or unknown."""
    name = tags.get("MAPPER_TASK", "")
    if name not in TASKS:
        told = f"MAPPER_TASK {name!r} is not a task" if name else "no MAPPER_TASK tag"
        raise InputError(f"{path}: {told}: not a raster the workflow's predict or mosaic made; "
                         f"give those (tasks: {', '.join(TASKS)})")
    return TASKS[name]


def task_names(kind: Kind | None = None) -> list[str]:
    """Names of the tasks (of one kind, if given), in registry order."""
    return [name for name, t in TASKS.items() if kind is None or t.kind == kind]
