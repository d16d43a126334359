"""The threads a job was given: ``OMP_NUM_THREADS``, which Snakemake sets to the rule's threads
(the CPUs SLURM gave the job, on a cluster); None for a command run by hand."""

from __future__ import annotations

import os


def job_threads() -> int | None:
    """The job's threads (a positive ``OMP_NUM_THREADS``), else None."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None
