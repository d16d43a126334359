"""The device a job computes on: the default, a CUDA device asked for where there is none, and
the deterministic settings per device."""

from __future__ import annotations

import os

import pytest
import torch

from mapper.devices import (
    CUBLAS_WORKSPACE,
    GPU_ALLOCATION,
    choose_device,
    ieee_float32,
    prepare_deterministic,
)
from mapper.errors import ConfigError
from mapper.training_loop import deterministic


def test_the_default_is_cuda_when_present_else_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in GPU_ALLOCATION:
        monkeypatch.delenv(name, raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device().type == expected
    assert choose_device(None).type == expected
    assert choose_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_asked_for_without_a_gpu_is_one_error_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"--device cuda:0: this machine has no CUDA device"):
        choose_device("cuda:0")


def test_an_unknown_device_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--device gpu0: not a torch device"):
        choose_device("gpu0")


def test_deterministic_is_strict_on_the_cpu_and_restored_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert prepare_deterministic(torch.device("cpu")) is False
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic(torch.device("cpu")):
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_on_cuda_cublas_is_made_deterministic_unless_the_job_set_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert prepare_deterministic(torch.device("cuda")) is True  # warn_only on CUDA
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    prepare_deterministic(torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"



@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_a_job_given_gpus_that_torch_cannot_see_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """A SLURM job given a GPU on a node whose driver torch cannot use would otherwise train and
    predict on the CPU, for days, past its time limit."""
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    with pytest.raises(ConfigError, match=r"given GPUs \(SLURM_JOB_GPUS=0\) but torch .* sees no "
                                          r"CUDA device; .*--device cpu"):
        choose_device()
    assert choose_device("cpu") == torch.device("cpu")  # on purpose


def test_ieee_float32_turns_tf32_off_and_restores_the_flags_even_on_error() -> None:
    """cuDNN's TF32 convolutions (on by default) and cuBLAS's products are IEEE float32 inside,
    and each flag is back to exactly what it was after, an exception included: torch's legacy
    getters still read, and a job's own TF32 setting is kept."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    flags = (cudnn.conv, cudnn.rnn, matmul)
    before = [f.fp32_precision for f in flags]
    assert cudnn.allow_tf32 and cudnn.conv.fp32_precision == "tf32"  # torch's default
    with pytest.raises(RuntimeError, match="inside"), ieee_float32():
        assert [f.fp32_precision for f in flags] == ["ieee"] * 3
        raise RuntimeError("inside")
    assert [f.fp32_precision for f in flags] == before
    assert cudnn.allow_tf32 and not matmul.allow_tf32  # the legacy getters read as before
    matmul.fp32_precision = "tf32"  # a job that asked for TF32 products gets them back
    try:
        with ieee_float32():
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "tf32"
    finally:
        matmul.fp32_precision = before[2]
