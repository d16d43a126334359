"""Swin-V2 encoder shapes and SatlasPretrain checkpoint loading (synthetic checkpoints)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from satlas_layout import satlas_layout
from torch import nn
from torchvision.models import swin_v2_b, swin_v2_t

from mapper.errors import CheckpointError, InputError
from mapper.models import miso
from mapper.models.config import ModelConfig
from mapper.models.swin import SwinEncoder, load_satlas


@pytest.fixture(scope="module")
def satlas_t(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic SatlasPretrain Swin-V2-T multispectral file (random weights, real layout)."""
    return satlas_layout(swin_v2_t(), tmp_path_factory.mktemp("satlas") / "swint_si_ms.pth")


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> bool:
    message = str(exc.value)
    return "\n" not in message and str(path) in message


@pytest.mark.parametrize("size", [(64, 64), (96, 64), (96, 96)])
def test_stage_shapes(size: tuple[int, int]) -> None:
    cfg = ModelConfig.named("demo")
    encoder = SwinEncoder(cfg, 10)
    stages = encoder(torch.rand(2, 10, *size))
    assert [tuple(s.shape) for s in stages] == [
        (2, c, size[0] // 2 ** (i + 2), size[1] // 2 ** (i + 2))
        for i, c in enumerate(cfg.stage_channels)
    ]


def test_crop_not_multiple_of_32() -> None:
    with pytest.raises(InputError, match="multiple of 32"):
        SwinEncoder(ModelConfig.named("demo"), 9)(torch.rand(1, 9, 48, 64))


def test_state_keys_are_torchvisions() -> None:
    ours = set(SwinEncoder(ModelConfig.named("swinv2_t"), 9).state_dict())
    theirs = {k for k in swin_v2_t().state_dict() if k.startswith("features.")}
    assert ours == theirs


def swin_t() -> tuple[SwinEncoder, ModelConfig]:
    """A fresh Swin-V2-T satellite encoder and its config."""
    cfg = ModelConfig.named("swinv2_t")
    return SwinEncoder(cfg, cfg.n_s2_bands), cfg


def test_satlas_loads_strictly_and_sets_every_weight(satlas_t: Path) -> None:
    stored = torch.load(satlas_t, weights_only=True)
    encoder, cfg = swin_t()
    fresh = [p.detach().clone() for p in encoder.parameters()]
    load_satlas(encoder, satlas_t, cfg)
    assert encoder.features[0][0].in_channels == 9
    assert encoder.features[0][0].out_channels == 96
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, stored["backbone.backbone." + key], atol=0, rtol=0)
    for (key, new), old in zip(encoder.named_parameters(), fresh, strict=True):
        assert not torch.equal(new, old), f"{key} kept its random initialisation"


def test_b_layout_loaded_as_t_fails(tmp_path: Path) -> None:
    # a swin_v2_b layout with zero-cost tensors (expanded scalars keep the file tiny)
    with torch.device("meta"):
        b = swin_v2_b()
    b.features[0][0] = nn.Conv2d(9, 128, kernel_size=4, stride=4, device="meta")
    state = {"backbone.backbone." + k: torch.zeros(()).expand(v.shape)
             for k, v in b.state_dict().items()}
    path = tmp_path / "swinb_si_ms.pth"
    torch.save(state, path)
    encoder, cfg = swin_t()
    with pytest.raises(CheckpointError) as exc:
        load_satlas(encoder, path, cfg)
    assert one_line_naming(exc, path) and "embed 128" in str(exc.value)


def test_three_band_first_conv_fails(tmp_path: Path) -> None:
    path = satlas_layout(swin_v2_t(), tmp_path / "swint_si_rgb.pth", in_ch=3, noise=False)
    encoder, cfg = swin_t()
    with pytest.raises(CheckpointError) as exc:
        load_satlas(encoder, path, cfg)
    assert one_line_naming(exc, path) and "3 input bands" in str(exc.value)


def test_other_models_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, path)
    encoder, cfg = swin_t()
    with pytest.raises(CheckpointError) as exc:
        load_satlas(encoder, path, cfg)
    assert one_line_naming(exc, path)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(CheckpointError) as exc:
        load_satlas(encoder, text, cfg)
    assert one_line_naming(exc, text)


def demo_satlas(path: Path) -> Path:
    """A demo-size Swin in SatlasPretrain's layout (cheap stand-in for build_model tests)."""
    cfg = ModelConfig.named("demo")
    encoder = SwinEncoder(cfg, 9)
    state = {"backbone.backbone." + k: v + 0.5 for k, v in encoder.state_dict().items()}
    torch.save(state, path)
    return path


def test_build_model_uses_satlas_weights(tmp_path: Path) -> None:
    path = demo_satlas(tmp_path / "demo_si_ms.pth")
    model = miso.build_model(ModelConfig.named("demo", satlas_weights=str(path)), n_out=1)
    stored = torch.load(path, weights_only=True)
    torch.testing.assert_close(model.sat_encoder.features[0][0].weight,
                               stored["backbone.backbone.features.0.0.weight"])


def test_build_model_warns_once_without_weights(caplog: pytest.LogCaptureFixture) -> None:
    miso._warn_random_satellite_encoder.cache_clear()
    with caplog.at_level(logging.WARNING, logger="mapper.models.miso"):
        miso.build_model(ModelConfig.named("demo"), n_out=1)
        miso.build_model(ModelConfig.named("demo"), n_out=7)
    warnings = [r for r in caplog.records if "random weights" in r.getMessage()]
    assert len(warnings) == 1
