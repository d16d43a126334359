"""Checkpoints rebuild the model from the file alone and refuse files of another kind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from affine import Affine

from mapper.errors import CheckpointError
from mapper.files import file_sha256
from mapper.models.checkpoint import (
    describe_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_torch,
)
from mapper.models.config import ModelConfig
from mapper.models.miso import MiSo

BANDS = [f"band{i}" for i in range(19)]
NORMALISATION = {"s2_red": {"lo": 0.0, "hi": 0.3}, "elevation": {"mean": 300.0, "std": 250.0}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[MiSo, Path, dict]:
    """A demo model after one optimiser step, saved with its optimiser state."""
    torch.manual_seed(0)
    model = MiSo(ModelConfig.named("demo"), n_out=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    out = model(torch.rand(2, 9, 64, 64), torch.rand(2, 10, 64, 64), torch.zeros(2, 3, 2),
                torch.zeros(2, 3, 2))
    out.logits.sum().backward()
    opt.step()
    extra = {"epoch": 3, "optimiser": opt.state_dict(), "metrics": {"auc": 0.81}}
    path = tmp_path_factory.mktemp("ckpt") / "nsp.pt"
    save_checkpoint(path, model, task="nsp", bands=BANDS, normalisation=NORMALISATION,
                    classes=["nsp"], extra=extra)
    return model.eval(), path, extra


def one_line_naming(exc: pytest.ExceptionInfo, path: Path) -> bool:
    message = str(exc.value)
    return "\n" not in message and str(path) in message


def test_round_trip_same_outputs(trained: tuple[MiSo, Path, dict]) -> None:
    model, path, extra = trained
    loaded, meta = load_checkpoint(path, expect_task="nsp", expect_size="demo")
    assert not loaded.training
    assert meta.config == model.cfg and meta.n_out == 1 and meta.task == "nsp"
    assert meta.bands == BANDS and meta.normalisation == NORMALISATION
    assert meta.classes == ["nsp"] and meta.extra["epoch"] == 3
    opt = torch.optim.AdamW(loaded.parameters())
    opt.load_state_dict(meta.extra["optimiser"])  # resume works from the file alone
    g = torch.Generator().manual_seed(4)
    s2, cov = torch.rand(1, 9, 64, 64, generator=g), torch.rand(1, 10, 64, 64, generator=g)
    coords, xy = torch.rand(1, 20, 2, generator=g) * 2 - 1, torch.rand(1, 20, 2) * 1e6
    with torch.no_grad():
        a, b = model(s2, cov, coords, xy), loaded(s2, cov, coords, xy)
    torch.testing.assert_close(a.logits, b.logits, atol=0, rtol=0)
    torch.testing.assert_close(a.geo, b.geo, atol=0, rtol=0)


def test_describe_without_building(trained: tuple[MiSo, Path, dict]) -> None:
    model, path, _ = trained
    info = describe_checkpoint(path)
    assert info["size"] == "demo" and info["task"] == "nsp" and info["n_out"] == 1
    assert info["sha256"] == file_sha256(path)
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["extra"] == ["epoch", "metrics", "optimiser"]


def test_no_temporary_left(trained: tuple[MiSo, Path, dict]) -> None:
    _, path, _ = trained
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_wrong_task_or_size(trained: tuple[MiSo, Path, dict]) -> None:
    _, path, _ = trained
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, expect_task="soilorder")
    assert one_line_naming(exc, path) and "'nsp'" in str(exc.value)
    with pytest.raises(CheckpointError) as exc:
        load_checkpoint(path, expect_size="swinv2_b")
    assert one_line_naming(exc, path) and "'demo'" in str(exc.value)


def test_corrupt_foreign_and_incomplete_files(trained: tuple[MiSo, Path, dict],
                                              tmp_path: Path) -> None:
    _, path, _ = trained
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    foreign = tmp_path / "foreign.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["head.4.weight"]
    incomplete = tmp_path / "incomplete.pt"
    torch.save(payload, incomplete)
    missing = tmp_path / "missing.pt"
    for bad in (truncated, foreign, incomplete, missing):
        with pytest.raises(CheckpointError) as exc:
            load_checkpoint(bad)
        assert one_line_naming(exc, bad)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_checkpoints_get_the_permissions_of_every_other_output(
    trained: tuple[MiSo, Path, dict], tmp_path: Path, umask: int
) -> None:
    """A model, a resumable partial and a GeoTIFF written under one umask share one mode (a
    group-shared project reads them all), the mode of any new file: 0o666 less the umask."""
    from mapper.raster import write_geotiff

    model = trained[0]
    before = os.umask(umask)
    try:
        save_checkpoint(tmp_path / "nsp.pt", model, task="nsp", bands=BANDS,
                        normalisation=NORMALISATION, classes=["nsp"])
        save_torch(tmp_path / "nsp.pt.partial", {"epoch": 1, "model": model.state_dict()})
        write_geotiff(tmp_path / "map.tif", np.zeros((1, 8, 8), "float32"),
                      Affine(10, 0, 0, 0, -10, 0), "EPSG:3338")
        (tmp_path / "plain.txt").touch()  # what any program makes under this umask
    finally:
        os.umask(before)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["nsp.pt", "nsp.pt.partial", "map.tif", "plain.txt"],
                                  0o666 & ~umask)


def test_equal_models_save_to_equal_files(trained: tuple[MiSo, Path, dict],
                                          tmp_path: Path) -> None:
    """The file does not depend on its name or the temporary name it was written under."""
    model = trained[0]
    for name in ("a.pt", "b.pt"):
        save_checkpoint(tmp_path / name, model, task="nsp", bands=BANDS,
                        normalisation=NORMALISATION, classes=["nsp"])
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "b.pt")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_check_reads_either_torch_format_and_refuses_what_load_refuses(
    trained: tuple[MiSo, Path, dict], tmp_path: Path
) -> None:
    """check_checkpoint (an empty tile's check) maps torch's zip format and reads its older
    format whole: a checkpoint load_checkpoint takes is never refused by it."""
    from mapper.models.checkpoint import check_checkpoint

    _, path, _ = trained
    payload = torch.load(path, map_location="cpu", weights_only=True)
    legacy = tmp_path / "legacy.pt"
    torch.save(payload, legacy, _use_new_zipfile_serialization=False)
    for p in (path, legacy):
        meta = check_checkpoint(p, expect_task="nsp", expect_size="demo")
        assert meta.task == "nsp" and meta.bands == load_checkpoint(p)[1].bands
    with pytest.raises(CheckpointError, match="checkpoint is for task 'nsp', expected 'soilorder'"):
        check_checkpoint(legacy, expect_task="soilorder")
