"""Geo encoder: EPSG:3338 position -> D-vector, a Space2Vec grid-cell encoding and an FC stack.

Position is the query point's x, y in EPSG:3338 (Alaska Albers) metres, mapped linearly onto
[-1, 1] over the configured extent (the state's bounding box; points outside extrapolate
linearly, which the sinusoids tolerate). Each normalised coordinate c is encoded as sin(c / t),
cos(c / t) at ``geo_frequencies`` timescales t on a geometric scale from the smallest to the
largest of ``geo_timescales`` (0.0005 .. 2: wavelengths from about 5.8 km in x and 3.8 km in y,
the state's box being wider than tall, to the whole state), laid out [axis, frequency,
sin|cos] -> 4 F features (256 at F = 64).

Normalisation is done in float64 when the input is float64 (pass metres as float64 to keep 10 m
differences exact); float32 metres carry about 0.1 m of rounding, far below the finest
wavelength.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mapper.models.config import ModelConfig


def grid_cell_frequencies(n: int, min_timescale: float, max_timescale: float) -> Tensor:
    """Angular frequencies 1 / t for n timescales t geometric from min to max (float32 [n])."""
    if n == 1:
        return torch.tensor([1.0 / min_timescale])
    step = math.log(max_timescale / min_timescale) / (n - 1)
    timescales = min_timescale * torch.exp(torch.arange(n, dtype=torch.float64) * step)
    return (1.0 / timescales).float()


class GridCellEncoding(nn.Module):
    """EPSG:3338 metres [..., 2] -> [..., 4 F] sin/cos features (no parameters)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        xmin, ymin, xmax, ymax = cfg.geo_extent
        self.register_buffer(
            "frequencies",
            grid_cell_frequencies(cfg.geo_frequencies, *cfg.geo_timescales),
            persistent=False,
        )
        self.lo = (xmin, ymin)
        self.span = (xmax - xmin, ymax - ymin)
        self.out_dim = 4 * cfg.geo_frequencies

    def normalise(self, xy: Tensor) -> Tensor:
        """Metres -> [-1, 1] over the extent, x and y separately, in xy's precision."""
        lo = torch.tensor(self.lo, dtype=xy.dtype, device=xy.device)
        span = torch.tensor(self.span, dtype=xy.dtype, device=xy.device)
        return 2.0 * (xy - lo) / span - 1.0

    def forward(self, xy: Tensor) -> Tensor:
        c = self.normalise(xy).to(self.frequencies.dtype)  # [..., 2]
        angles = c[..., :, None] * self.frequencies  # [..., 2, F]
        enc = torch.stack([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., 2, F, 2]
        return enc.flatten(-3)  # [..., 2, F, 2] -> [..., 4F]


class ResidualFC(nn.Module):
    """x -> LayerNorm(x + Dropout(ReLU(Linear(x))))."""

    def __init__(self, dim: int, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x + self.drop(torch.relu(self.fc(x))))


class GeoEncoder(nn.Module):
    """xy [B, N, 2] EPSG:3338 metres -> [B, N, D].

    FC 4F -> D + ReLU, 3 residual FC blocks (ReLU, dropout, LayerNorm), FC D -> D + ReLU (the
    reference ends its stack with a ReLU too; the geo mapper MLP follows).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.emb_dim
        self.encoding = GridCellEncoding(cfg)
        self.first = nn.Linear(self.encoding.out_dim, d)
        self.blocks = nn.Sequential(*(ResidualFC(d, cfg.dropout) for _ in range(3)))
        self.last = nn.Linear(d, d)

    def forward(self, xy: Tensor) -> Tensor:
        x = torch.relu(self.first(self.encoding(xy)))
        return torch.relu(self.last(self.blocks(x)))
