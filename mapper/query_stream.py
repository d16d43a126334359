"""The model calls of one predicted tile: crops encoded in groups of one shape, their queries
packed across crops into calls of one shape (see :mod:`mapper.predictor` on why every call has one
shape), each crop blended as soon as its queries are decoded."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import torch

from mapper.models.miso import Prepared

if TYPE_CHECKING:
    from mapper.blending import Blender
    from mapper.predictor import PredictStats, TilePredictor, _Item

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}
"""``prediction.precision`` -> the autocast dtype (float32: no autocast)."""


class QueryStream:
    """The model calls of one tile: crops encoded ``batch_size`` at a time (padded with blank
    crops), their queries queued in crop order and decoded ``points_per_call`` at a time, each
    call packing the queries of whichever crops they belong to; only the tile's last call is
    padded (with copies of its last query). Every call has one shape, so a query's value does not
    depend on its neighbours in the call (module docstring). A crop is blended as soon as all its
    queries are decoded, in crop order; memory: one call's queries and the groups they span."""

    def __init__(self, predictor: TilePredictor, blender: Blender, stats: PredictStats) -> None:
        self.p = predictor
        self.blender = blender
        self.stats = stats
        self.groups: dict[int, Prepared] = {}
        self.queue: list[list] = []  # [item, group id, slot, queries done, probabilities]
        self.pending = 0
        self.next_group = 0

    def add(self, group: list[_Item]) -> None:
        """Encode a group of crops and queue their queries; decode every full call."""
        p = self.p
        t0 = time.perf_counter()
        s2 = p._to_device(padded([it.s2 for it in group], p.batch_size))
        cov = p._to_device(padded([it.cov for it in group], p.batch_size))
        t1 = time.perf_counter()
        with torch.inference_mode():
            prepared = p.model.prepare(p.model.encode(s2, cov), PRECISIONS[p.precision])
        p._sync()
        self.stats.add("to_device", t1 - t0)
        self.stats.add("encode", time.perf_counter() - t1)
        gid = self.next_group
        self.next_group += 1
        self.groups[gid] = prepared
        for slot, it in enumerate(group):
            n = len(it.index)
            self.queue.append([it, gid, slot, 0, np.empty((n, p.n_out), dtype=np.float32)])
            self.pending += n
        while self.pending >= p.points_per_call:
            self._call(p.points_per_call)

    def finish(self) -> None:
        if self.pending:
            self._call(self.pending)

    def _call(self, n: int) -> None:
        """Decode the next ``n`` queued queries in one call of ``points_per_call`` points."""
        p, size = self.p, self.p.points_per_call
        t0 = time.perf_counter()
        parts, taken, gids = [], 0, []
        for entry in self.queue:
            item, gid, slot, done, _ = entry
            k = min(len(item.index) - done, n - taken)
            if k <= 0:
                if taken == n:
                    break
                continue
            if gid not in gids:
                gids.append(gid)
            parts.append((entry, done, done + k, gids.index(gid) * p.batch_size + slot))
            taken += k
        coords = np.empty((size, 2), dtype=np.float32)
        crop = np.empty(size, dtype=np.int64)
        at = 0
        for entry, lo, hi, index in parts:
            coords[at:at + hi - lo] = entry[0].coords[lo:hi]
            crop[at:at + hi - lo] = index
            at += hi - lo
        coords[at:], crop[at:] = coords[at - 1], crop[at - 1]  # the tile's last call only
        prepared = Prepared.join([self.groups[g] for g in gids])
        coords_t = p._to_device(coords[None])
        crop_t = p._to_device(crop[None])
        t1 = time.perf_counter()
        with torch.inference_mode():
            logits = p.model.predict_packed(prepared, coords_t, crop_t,
                                            PRECISIONS[p.precision])[0].float()
            probs = p.task_spec.probabilities(logits).cpu().numpy()
        t2 = time.perf_counter()
        at = 0
        for entry, lo, hi, _ in parts:
            entry[4][lo:hi] = probs[at:at + hi - lo]
            entry[3] = hi
            at += hi - lo
        self.pending -= n
        self.stats.queries += n
        while self.queue and self.queue[0][3] == len(self.queue[0][0].index):
            item, *_, values = self.queue.pop(0)
            self.blender.add(item.index, item.weights, values.T)
        live = {entry[1] for entry in self.queue}
        self.groups = {g: v for g, v in self.groups.items() if g in live}
        self.stats.add("to_device", t1 - t0)
        self.stats.add("decode", t2 - t1)
        self.stats.add("blend", time.perf_counter() - t2)


def padded(arrays: list[np.ndarray], multiple: int) -> np.ndarray:
    """``arrays`` stacked, then zeros appended up to a multiple of ``multiple``."""
    n = -(-len(arrays) // multiple) * multiple
    out = np.zeros((n, *arrays[0].shape), dtype=arrays[0].dtype)
    out[:len(arrays)] = arrays
    return out
