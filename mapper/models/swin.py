"""Swin-V2 encoder returning the 4 stage feature maps, and SatlasPretrain weight loading.

The encoder is torchvision's ``SwinTransformer`` built exactly as ``swin_v2_t``/``swin_v2_b``
build it (``SwinTransformerBlockV2``, ``PatchMergingV2``), with the first conv replaced by
``Conv2d(in_ch, C, 4, stride=4)``. Only ``features`` is kept (no final norm, pooling or
classifier), so the state-dict keys are torchvision's ``features.*`` and SatlasPretrain's
``backbone.backbone.features.*`` load after stripping the prefix, without renaming.

Input crops are [B, in_ch, H, W] with H and W multiples of 32 (the 4 stages halve three times
after the stride-4 patch conv); windows larger than a stage map are padded by torchvision.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformer,
    SwinTransformerBlockV2,
)

from mapper.errors import CheckpointError, InputError
from mapper.models.config import ModelConfig

logger = logging.getLogger(__name__)

SATLAS_PREFIX = "backbone.backbone."


class SwinEncoder(nn.Module):
    """Swin-V2 feature pyramid: [B, in_ch, H, W] -> 4 maps [B, C_i, H / 2^(i+2), W / 2^(i+2)]."""

    def __init__(self, cfg: ModelConfig, in_ch: int) -> None:
        super().__init__()
        swin = SwinTransformer(
            patch_size=[4, 4],
            embed_dim=cfg.embed_dim,
            depths=list(cfg.depths),
            num_heads=list(cfg.heads),
            window_size=[cfg.window, cfg.window],
            stochastic_depth_prob=cfg.stochastic_depth,
            block=SwinTransformerBlockV2,
            downsample_layer=PatchMergingV2,
        )
        swin.features[0][0] = nn.Conv2d(in_ch, cfg.embed_dim, kernel_size=4, stride=4)
        self.in_ch = in_ch
        # features = [patch embed, stage 1, merge, stage 2, merge, stage 3, merge, stage 4]
        self.features = swin.features

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise InputError(
                f"crop of {tuple(x.shape[-2:])} px is not a multiple of 32 px; "
                "set the crop size to a multiple of 32"
            )
        stages = []
        for i, layer in enumerate(self.features):
            x = layer(x)  # [B, h, w, C] (torchvision works channels-last)
            if i % 2 == 1:
                stages.append(x.permute(0, 3, 1, 2))  # [B, h, w, C] -> [B, C, h, w]
        return stages


def _read_satlas_backbone(path: Path) -> dict[str, Tensor]:
    """The ``features.*`` tensors of a SatlasPretrain checkpoint, prefix stripped."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged or foreign file
        raise CheckpointError(
            f"{path}: cannot read as a torch checkpoint ({type(exc).__name__}); "
            "download the SatlasPretrain file again"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a state dict; give a SatlasPretrain .pth file")
    head = SATLAS_PREFIX + "features."
    backbone = {k[len(SATLAS_PREFIX):]: v for k, v in state.items() if k.startswith(head)}
    if not backbone:
        raise CheckpointError(
            f"{path}: no '{head}*' keys, so not a SatlasPretrain single-image Swin checkpoint; "
            "use sentinel2_swint_si_ms.pth or sentinel2_swinb_si_ms.pth"
        )
    return backbone


SwinShape = tuple[int, int, tuple[int, ...], tuple[int, ...], int]


def _describe(backbone: dict[str, Tensor]) -> SwinShape:
    """(in_ch, embed_dim, depths, heads, window) of a torchvision Swin-V2 ``features`` dict."""
    conv = backbone.get("features.0.0.weight")
    if conv is None or conv.ndim != 4:
        raise KeyError("features.0.0.weight")
    depths, heads, window = [], [], 0
    for stage in (1, 3, 5, 7):
        blocks = {
            int(m.group(1))
            for k in backbone
            if (m := re.match(rf"features\.{stage}\.(\d+)\.", k))
        }
        depths.append(len(blocks))
        heads.append(int(backbone[f"features.{stage}.0.attn.logit_scale"].shape[0]))
        table = backbone.get(f"features.{stage}.0.attn.relative_coords_table")
        if table is not None:
            window = (int(table.shape[1]) + 1) // 2
    return int(conv.shape[1]), int(conv.shape[0]), tuple(depths), tuple(heads), window


def _shape_of(backbone: dict[str, Tensor], path: Path) -> SwinShape:
    try:
        return _describe(backbone)
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: Swin backbone lacks {exc.args[0]}; not a torchvision Swin-V2 checkpoint, "
            "use a SatlasPretrain Sentinel-2 Swin file"
        ) from exc


def _check(shape: SwinShape, cfg: ModelConfig, path: Path) -> None:
    """CheckpointError unless the checkpoint's bands and sizes are the config's."""
    in_ch, embed, depths, heads, window = shape
    want = (cfg.n_s2_bands, cfg.embed_dim, cfg.depths, cfg.heads)
    if want != (in_ch, embed, depths, heads) or (window and window != cfg.window):
        raise CheckpointError(
            f"{path}: checkpoint is a Swin-V2 with {in_ch} input bands, embed {embed}, depths "
            f"{list(depths)}, heads {list(heads)}, window {window}, but model size "
            f"{cfg.name!r} needs {cfg.n_s2_bands} bands, embed {cfg.embed_dim}, depths "
            f"{list(cfg.depths)}, heads {list(cfg.heads)}, window {cfg.window}; use the "
            "Sentinel-2 multispectral (9-band) file of the model size (swint -> swinv2_t, "
            "swinb -> swinv2_b)"
        )


def load_satlas(encoder: SwinEncoder, path: str | Path, cfg: ModelConfig) -> None:
    """Set the satellite ``encoder`` (built from ``cfg``) to the weights of a SatlasPretrain
    checkpoint, strictly: every tensor of the encoder is set, no other tensor is taken.

    Takes the ``backbone.backbone.features.*`` tensors (first conv included: SatlasPretrain's
    multispectral band order R, G, B, B05, B06, B07, B08, B11, B12 is the stack's order) and
    ignores the FPN (``intermediates.0.fpn.*``), heads (``heads.0.*``) and torchvision's unused
    final norm/classifier. The checkpoint's input bands and size (embed width, depths, heads,
    window) must equal the config's; every mismatch is a one-line CheckpointError naming the file.
    """
    path = Path(path)
    backbone = _read_satlas_backbone(path)
    _check(_shape_of(backbone, path), cfg, path)
    try:
        encoder.load_state_dict(backbone, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise CheckpointError(
            f"{path}: backbone does not fit the encoder ({first[0].strip()}); "
            "pick the model size that matches the file"
        ) from exc
    logger.info("satellite encoder initialised from %s (%d tensors)", path, len(backbone))
