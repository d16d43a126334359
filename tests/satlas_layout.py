"""SatlasPretrain checkpoints in the file layout of its released weights, for tests.

No pretrained weights can be downloaded in the tests: :func:`satlas_layout` writes a torchvision
Swin-V2 (of any size) as SatlasPretrain stores its single-image multispectral models
(``sentinel2_swinb_si_ms.pth``): backbone tensors under ``backbone.backbone.``, plus FPN and head
tensors a loader must ignore. Its values are random (SYNTHETIC).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def satlas_layout(backbone: nn.Module, path: Path, in_ch: int = 9, noise: bool = True) -> Path:
    """Save a torchvision Swin-V2 the way SatlasPretrain stores its single-image models.

    First conv replaced for ``in_ch`` bands, keys prefixed ``backbone.backbone.``, plus FPN and
    head tensors that a loader must ignore. With ``noise`` every float parameter is perturbed,
    standing in for trained weights that differ from any fresh initialisation.
    """
    torch.manual_seed(11)
    embed = backbone.features[0][0].out_channels
    backbone.features[0][0] = nn.Conv2d(in_ch, embed, kernel_size=4, stride=4)
    state = {}
    for key, value in backbone.state_dict().items():
        if noise and value.is_floating_point() and "relative_coords_table" not in key:
            value = value + 0.01 * torch.randn_like(value)
        state["backbone.backbone." + key] = value
    state["intermediates.0.fpn.layer_blocks.0.0.weight"] = torch.randn(128, 128, 3, 3)
    state["heads.0.layers.0.0.weight"] = torch.randn(4, 128, 3, 3)
    torch.save(state, path)
    return path
