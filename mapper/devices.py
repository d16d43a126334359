"""The torch device a job computes on: CUDA when present, else the CPU, or the one asked for.

Training and prediction take the same choice (``--device`` on their commands; default: CUDA when
``torch.cuda.is_available()``), so a cluster job given a GPU by the SLURM profile uses it with no
setting, and the same command runs on a laptop's CPU.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from mapper.errors import ConfigError

CUBLAS_WORKSPACE = ":4096:8"
"""cuBLAS's workspace setting under which its matrix products are deterministic (CUDA >= 10.2);
without it, ``torch.use_deterministic_algorithms(True)`` stops at the first one."""


GPU_ALLOCATION = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS")
"""Variables SLURM sets in a job given GPUs (``--gpus``, ``--gres=gpu``)."""


def choose_device(device: str | None = None) -> torch.device:
    """``device`` if given, else CUDA when present, else the CPU. A CUDA device asked for on a
    machine without one is one error, naming the option; so is a job that SLURM gave GPUs to
    when torch sees none (an old driver, say), which would otherwise run for days on the CPU
    past its time limit."""
    if not device:
        if torch.cuda.is_available():
            return torch.device("cuda")
        given = [f"{v}={os.environ[v]}" for v in GPU_ALLOCATION if os.environ.get(v)]
        if given:
            raise ConfigError(
                f"this job was given GPUs ({', '.join(given)}) but torch {torch.__version__} "
                f"(CUDA {torch.version.cuda or 'none'}) sees no CUDA device; check the node's "
                "NVIDIA driver against it, or pass --device cpu to compute on the CPU on purpose"
            )
        return torch.device("cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(
            f"--device {device}: not a torch device ({exc}); use cpu or cuda"
        ) from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA device torch can use; "
                          "leave --device out to compute on the CPU")
    return chosen


def prepare_deterministic(device: torch.device) -> bool:
    """Set up deterministic algorithms for ``device``; returns ``warn_only`` for
    ``torch.use_deterministic_algorithms``.

    On the CPU every operation used has a deterministic implementation (strict: a new one without
    would fail loudly). On CUDA, cuBLAS is told to use its deterministic workspace (before CUDA
    starts, if the job's environment did not set it), and an operation without a deterministic
    CUDA kernel warns instead of stopping the job: a GPU run is repeatable where CUDA allows.
    """
    if device.type != "cuda":
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    return True


@contextlib.contextmanager
def ieee_float32() -> Iterator[None]:
    """Float32 products in IEEE float32 on CUDA as on the CPU, each flag restored after.

    cuDNN's convolutions default to TF32 on Ampere and later GPUs (a 10-bit mantissa: relative
    errors near 1e-3, as in the Swin V2 patch embedding), so float32 prediction on a GPU would
    differ from the CPU's by far more than the last bit of a float; cuBLAS's matrix products
    default to IEEE, unless the job asked otherwise. Set per operator with torch's
    ``fp32_precision`` (cuDNN convolutions and RNNs, cuBLAS products) and restored to the exact
    values found, so that torch's other settings (the legacy ``allow_tf32`` flags, a global
    ``torch.backends.fp32_precision``) read as before; no effect on the CPU.
    """
    flags = (torch.backends.cudnn.conv, torch.backends.cudnn.rnn, torch.backends.cuda.matmul)
    before = [flag.fp32_precision for flag in flags]
    for flag in flags:
        flag.fp32_precision = "ieee"
    try:
        yield
    finally:
        for flag, value in zip(flags, before, strict=True):
            flag.fp32_precision = value
