"""Learning-rate schedule per iteration: linear warm-up, then cosine decay (the reference's).

Over ``total`` optimiser steps, the first ``warmup`` steps rise linearly from ``warmup_lr`` to
``lr_max``; the rest follow half a cosine from ``lr_max`` down to ``lr_min`` at the last step.
The schedule is a pure function of the step, so a resumed run needs only the step count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Schedule:
    """Warm-up + cosine learning rates over ``total`` steps (``warmup`` of them warming up)."""

    total: int
    warmup: int
    warmup_lr: float
    lr_max: float
    lr_min: float

    @classmethod
    def of(cls, total: int, warmup_fraction: float, warmup_lr: float, lr_max: float,
           lr_min: float) -> Schedule:
        """Warm-up of ``round(warmup_fraction * total)`` steps (at least 1 if the fraction > 0),
        capped so that the cosine keeps at least 2 steps, ``lr_max`` and ``lr_min`` at the last
        (a fraction near 1 would otherwise end the run at ``lr_max``): none when ``total`` <= 2."""
        warmup = int(round(warmup_fraction * total))
        if warmup_fraction > 0:
            warmup = max(1, warmup)
        return cls(int(total), min(warmup, max(int(total) - 2, 0)), warmup_lr, lr_max, lr_min)

    def lr(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based)."""
        if step < self.warmup:
            return self.warmup_lr + (self.lr_max - self.warmup_lr) * step / self.warmup
        span = max(self.total - 1 - self.warmup, 1)
        t = min(max(step - self.warmup, 0) / span, 1.0)
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1.0 + math.cos(math.pi * t))
