"""Multi-scale implicit query (LIIF-style): stage feature maps -> one embedding per query point.

Coordinates. A query is (x, y) normalised to the crop: x = -1 is the crop's left (west) edge and
x = +1 its right edge, y = -1 its top (north) edge and y = +1 its bottom edge, as in
``torch.nn.functional.grid_sample(align_corners=False)``. These are pixel CORNERS: the centre of
pixel (row i, col j) of a P-px crop is x = -1 + (2j + 1) / P, y = -1 + (2i + 1) / P. A stage
map of h x w cells tiles the same square, so cell (r, c) has its centre at
x = -1 + (2c + 1) / w, y = -1 + (2r + 1) / h.

Per stage, a query sees its 4 nearest cell centres. With u = (x + 1) w / 2 - 1/2 and
v = (y + 1) h / 2 - 1/2 (the query in cell units, cell c's centre at u = c), the neighbours are
columns floor(u), floor(u) + 1 and rows floor(v), floor(v) + 1. Each neighbour k contributes
MLP([feature_k, dx_k, dy_k]) where (dx_k, dy_k) = (u - c_k, v - r_k) is the query's offset from
that cell centre in cell units, x first. Contributions are mixed with bilinear weights (each
neighbour weighted by the area of the rectangle opposite to it, (1 - |dx|)(1 - |dy|)), which sum
to 1, then Linear + LayerNorm. Border: a neighbour outside the map is clamped to the edge cell
and its offset is measured from that edge cell's centre, so in the outer half-cell ring a query
sees the edge cells at their true offsets (the same as LIIF's coordinate clamp).

Two decoders compute the same function:

- ``plain``: concatenate [feature, offset] per neighbour, run the whole MLP on each, weight, sum,
  output Linear (the reference's order).
- ``fast``: exact restructuring. The first Linear W1 [f; o] + b1 = (W1_f f + b1) + W1_o o, and
  W1_f f + b1 is computed once per feature CELL before gathering. Because the 4 weights sum to 1,
  sum_k w_k (W3 r_k + b3) = W3 (sum_k w_k r_k) + b3, so the MLP's last Linear moves after the
  weighted sum and fuses with the stage's output Linear: W_out W3 is one [D, h2] matrix per call.

Queries are decoded in chunks of ``chunk`` points per crop, so memory is bounded for any N.

Packed queries (prediction): the fast decoder also takes the queries of several crops as one
sequence, ``coords`` [1, Q, 2] with ``crop`` [1, Q] naming each query's crop in the batch of
feature maps, so crops with different numbers of queries are decoded without padding. Every
operation is per query (gathers, per-row matrix products, LayerNorm), so a query's value does not
depend on which others share its call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mapper.errors import ConfigError
from mapper.models.config import ModelConfig

Decoder = Literal["plain", "fast"]
DECODERS: tuple[str, ...] = ("plain", "fast")


def neighbours(coords: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, Tensor]:
    """The 4 nearest cells of each query on an h x w map (conventions in the module docstring).

    coords: [B, N, 2] crop-normalised (x, y). Returns flat cell indices r * w + c [B, N, 4],
    offsets (dx, dy) in cell units [B, N, 4, 2] and bilinear weights [B, N, 4] (sum 1), in the
    neighbour order (r0, c0), (r0, c0 + 1), (r0 + 1, c0), (r0 + 1, c0 + 1).
    """
    u = (coords[..., 0] + 1.0) * (w / 2.0) - 0.5  # [B, N] column, in cells
    v = (coords[..., 1] + 1.0) * (h / 2.0) - 0.5  # [B, N] row, in cells
    c0, r0 = torch.floor(u), torch.floor(v)
    tx, ty = u - c0, v - r0  # in [0, 1): distance past the upper-left neighbour
    cols = torch.stack([c0, c0 + 1, c0, c0 + 1], dim=-1).clamp(0, w - 1)  # [B, N, 4]
    rows = torch.stack([r0, r0, r0 + 1, r0 + 1], dim=-1).clamp(0, h - 1)  # [B, N, 4]
    wx = torch.stack([1 - tx, tx, 1 - tx, tx], dim=-1)  # opposite-rectangle width
    wy = torch.stack([1 - ty, 1 - ty, ty, ty], dim=-1)  # opposite-rectangle height
    offsets = torch.stack([u[..., None] - cols, v[..., None] - rows], dim=-1)  # [B, N, 4, 2]
    index = (rows * w + cols).long()
    return index, offsets, wx * wy


def _gather(table: Tensor, index: Tensor, crop: Tensor | None = None) -> Tensor:
    """Rows of a per-crop table: table [B, M, K], index [B', N, 4] -> [B', N, 4, K].

    ``crop`` [B', N]: the crop (row of ``table``) of each query; None: query row b is crop b.
    """
    b, m, k = table.shape
    if crop is None:
        base = torch.arange(b, device=index.device).view(b, 1, 1) * m
    else:
        base = crop[..., None] * m
    return table.reshape(b * m, k)[index + base]  # [B*M, K] rows at [B', N, 4] -> [B', N, 4, K]


@dataclass
class PreparedStage:
    """Per-call tensors of the fast decoder: computed once per crop batch, used by every chunk."""

    cells: Tensor  # [B, h*w, h1]: W1_f feature + b1 at every cell
    h: int
    w: int
    weight: Tensor  # [D, h2]: W_out W3
    bias: Tensor  # [D]: W_out b3 + b_out


class StageQuery(nn.Module):
    """Implicit query of one stage map: [B, C, h, w] and [B, N, 2] -> [B, N, D]."""

    def __init__(self, in_ch: int, hidden: tuple[int, int], out_dim: int) -> None:
        super().__init__()
        h1, h2 = hidden
        self.in_ch = in_ch
        # input is [feature (in_ch), dx, dy]
        self.mlp = nn.Sequential(
            nn.Linear(in_ch + 2, h1), nn.ReLU(),
            nn.Linear(h1, h2), nn.ReLU(),
            nn.Linear(h2, out_dim),
        )
        self.out = nn.Linear(out_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def plain(self, feat: Tensor, coords: Tensor) -> Tensor:
        """The reference's order: full MLP per neighbour, weighted sum, output Linear."""
        b, c, h, w = feat.shape
        index, offsets, weights = neighbours(coords, h, w)
        table = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, C, h, w] -> [B, h*w, C]
        x = torch.cat([_gather(table, index), offsets.to(feat.dtype)], dim=-1)  # [B, N, 4, C+2]
        y = self.mlp(x)  # [B, N, 4, D]
        z = torch.einsum("bnk,bnkd->bnd", weights.to(y.dtype), y)  # [B, N, D]
        return self.norm(self.out(z))

    def prepare(self, feat: Tensor) -> PreparedStage:
        """Cell projections and the fused output matrix of the fast decoder."""
        b, c, h, w = feat.shape
        first, last = self.mlp[0], self.mlp[4]
        table = feat.permute(0, 2, 3, 1).reshape(b, h * w, c)  # [B, C, h, w] -> [B, h*w, C]
        cells = F.linear(table, first.weight[:, :c], first.bias)  # [B, h*w, h1]
        weight = self.out.weight @ last.weight  # [D, D] @ [D, h2] -> [D, h2]
        bias = self.out.weight @ last.bias + self.out.bias  # [D]
        return PreparedStage(cells=cells, h=h, w=w, weight=weight, bias=bias)

    def fast(self, prep: PreparedStage, coords: Tensor, crop: Tensor | None = None) -> Tensor:
        """Equal to :meth:`plain` by algebra (module docstring); no per-query [C+2] concat.

        ``crop`` [B', N]: each query's crop for packed queries (module docstring)."""
        index, offsets, weights = neighbours(coords, prep.h, prep.w)
        first, second = self.mlp[0], self.mlp[2]
        w_off = first.weight[:, self.in_ch :]  # [h1, 2]: the offset columns of W1
        a = _gather(prep.cells, index, crop) + offsets.to(w_off.dtype) @ w_off.T  # [B, N, 4, h1]
        r = F.relu(second(F.relu(a)))  # [B, N, 4, h2]
        s = torch.einsum("bnk,bnkd->bnd", weights.to(r.dtype), r)  # [B, N, h2]
        return self.norm(F.linear(s, prep.weight, prep.bias))  # [B, N, D]

    def forward(self, feat: Tensor, coords: Tensor, decoder: Decoder = "fast") -> Tensor:
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "plain":
            return self.plain(feat, coords)
        return self.fast(self.prepare(feat), coords)


def query_maps(cfg: ModelConfig, in_bands: int) -> list[tuple[int, tuple[int, int], int]]:
    """(channels, hidden widths, stride in px) of every map one modality's implicit query reads,
    in order: the input crop itself (``in_bands`` wide, stride 1) when ``cfg.pixel_query`` is
    set, then the 4 stages (strides 4, 8, 16, 32)."""
    maps = [(c, hidden, 2 ** (i + 2))
            for i, (c, hidden) in enumerate(zip(cfg.stage_channels, cfg.query_hidden, strict=True))]
    if cfg.pixel_query is None:
        return maps
    return [(in_bands, cfg.pixel_query, 1), *maps]


class ImplicitQuery(nn.Module):
    """Sum of the stage queries, LayerNorm'd: one D-vector per query point and modality.

    The maps are the 4 Swin stages, preceded by the input crop of ``in_bands`` channels when
    ``cfg.pixel_query`` is set (:func:`query_maps`); ``feats`` passed in must be in that order.
    """

    def __init__(self, cfg: ModelConfig, in_bands: int) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            StageQuery(c, hidden, cfg.emb_dim) for c, hidden, _ in query_maps(cfg, in_bands)
        )
        self.norm = nn.LayerNorm(cfg.emb_dim)

    def prepare(self, feats: list[Tensor], decoder: Decoder) -> list[Tensor | PreparedStage]:
        """Per-call state of a decoder: the maps themselves (plain) or PreparedStage (fast)."""
        if decoder not in DECODERS:
            raise ConfigError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "plain":
            return list(feats)
        return [stage.prepare(f) for stage, f in zip(self.stages, feats, strict=True)]

    def decode(
        self, prepared: list[Tensor | PreparedStage], coords: Tensor, crop: Tensor | None = None
    ) -> Tensor:
        """Embeddings [B, N, D] of one chunk of queries [B, N, 2] from :meth:`prepare`'s output;
        ``crop``: each query's crop for packed queries (fast decoder only)."""
        total = 0
        for stage, p in zip(self.stages, prepared, strict=True):
            if isinstance(p, PreparedStage):
                total = total + stage.fast(p, coords, crop)
            elif crop is not None:
                raise ConfigError("packed queries need the fast decoder")
            else:
                total = total + stage.plain(p, coords)
        return self.norm(total)

    def forward(
        self, feats: list[Tensor], coords: Tensor, decoder: Decoder = "fast", chunk: int = 4096
    ) -> Tensor:
        prepared = self.prepare(feats, decoder)
        if coords.shape[1] == 0:
            return coords.new_zeros(coords.shape[0], 0, self.norm.normalized_shape[0])
        parts = [self.decode(prepared, coords[:, i : i + chunk])
                 for i in range(0, coords.shape[1], chunk)]
        return torch.cat(parts, dim=1)  # [B, N, D]
