"""A one-node SLURM cluster on localhost for tests: configure, start, list jobs, stop.

It runs the programs of Debian's ``slurm-wlm`` and ``munge`` (SLURM 22.05), which ``make test``
installs when it runs as root (scripts/system-packages.sh); :func:`cluster_unavailable` says
which are missing, for the tests to skip with that reason.

Everything the cluster writes lives in one folder: ``slurm.conf``, the controller's state, the
node's spool, the daemons' logs, and a private munge socket and key, so the test's cluster does
not touch ``/etc/slurm`` and does not meet another cluster running on the same machine (its two
TCP ports are picked free at start). ``SLURM_CONF`` points every SLURM command at the
folder's ``slurm.conf``: the daemons, and Snakemake with the ``sbatch``/``squeue``/``srun`` it
runs (:attr:`SlurmCluster.env`). Snakemake's job step executor (plugin 0.6) removes every
``SLURM_*`` variable, ``SLURM_CONF`` included, before the ``srun`` it runs inside a job (as in
snakemake-executor-plugin-slurm issue #164); a one-line ``srun`` wrapper first on the jobs' PATH
(``<folder>/bin/srun``) sets it back. A site keeps its ``slurm.conf`` where SLURM looks by default
(or runs configless), so it does not meet this.

The daemons run in the foreground (``-D``/``-F``) as children of the test, so they are stopped by
their own pids, the node daemon first (:func:`local_slurm` does this in ``finally``).
There is no accounting database: ``sacct`` fails, job status comes from ``squeue``, and finished
jobs stay visible to ``scontrol show job`` for ``MinJobAge`` seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/sbin/munged")
MIN_JOB_AGE_S = 3600  # finished jobs stay listed by scontrol for an hour

SLURM_CONF = """\
# A one-node test cluster (written by tests/slurm_cluster.py)
ClusterName=testcluster
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge={min_job_age}
DefMemPerCPU=1000
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailableError(RuntimeError):
    """SLURM cannot be installed or started here (not root, no apt, no packages)."""


@dataclass
class SlurmCluster:
    """A running one-node cluster: its folder, the environment for SLURM clients, daemon pids."""

    root: Path
    env: dict[str, str]
    cpus: int
    memory_mb: int
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command against this cluster (text output, not checked)."""
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def node_state(self) -> str:
        out = self.run("sinfo", "-h", "-o", "%T")
        return out.stdout.strip() if out.returncode == 0 else ""

    def show_job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict (empty once the job is older than MinJobAge)."""
        out = self.run("scontrol", "-o", "show", "job", job_id)
        if out.returncode != 0:
            return {}
        return parse_scontrol(out.stdout)

    def log(self, daemon: str) -> str:
        path = self.root / "log" / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def parse_scontrol(text: str) -> dict[str, str]:
    """Parse one-line ``scontrol -o show job`` output (``Key=Value`` pairs) into a dict."""
    fields: dict[str, str] = {}
    for m in re.finditer(r"(\w[\w:/]*)=(\S*)", text):
        fields.setdefault(m.group(1), m.group(2))
    return fields


def job_listing(
    cluster: SlurmCluster, job_ids: list[str], labels: dict[str, str] | None = None
) -> list[dict[str, str]]:
    """One row per job as SLURM saw it: id, what it ran (``labels``), the executor's --comment,
    partition, state, exit code, CPUs, memory, time limit, run time, start and end."""
    rows = []
    labels = labels or {}
    for job_id in job_ids:
        f = cluster.show_job(job_id)
        if not f:
            rows.append({"JobId": job_id, "What": labels.get(job_id, ""), "JobState": "(gone)"})
            continue
        rows.append(
            {
                "JobId": f.get("JobId", job_id),
                "What": labels.get(job_id, ""),
                "Comment": f.get("Comment", ""),
                "Partition": f.get("Partition", ""),
                "JobState": f.get("JobState", ""),
                "ExitCode": f.get("ExitCode", ""),
                "NumCPUs": f.get("NumCPUs", ""),
                "MinMemoryNode": f.get("MinMemoryNode", f.get("MinMemoryCPU", "")),
                "TimeLimit": f.get("TimeLimit", ""),
                "RunTime": f.get("RunTime", ""),
                "SubmitTime": f.get("SubmitTime", ""),
                "StartTime": f.get("StartTime", ""),
                "EndTime": f.get("EndTime", ""),
                "TRES": f.get("TRES", ""),
            }
        )
    return rows


def format_listing(rows: list[dict[str, str]]) -> str:
    """The rows as an aligned text table (squeue/sacct-like), for logs and reports."""
    if not rows:
        return "(no jobs)"
    cols = [
        "JobId", "What", "Partition", "JobState", "ExitCode", "NumCPUs", "MinMemoryNode",
        "TimeLimit", "RunTime", "StartTime", "EndTime",
    ]  # fmt: skip
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in cols}
    lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
    lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(lines)


def cluster_env(cluster: SlurmCluster, base: dict[str, str]) -> dict[str, str]:
    """``base`` with the cluster's SLURM_CONF and its srun wrapper, then this Python, on PATH."""
    bindir = str(Path(sys.executable).parent)
    path = os.pathsep.join([str(cluster.root / "bin"), bindir, os.environ.get("PATH", "")])
    return {**base, "SLURM_CONF": cluster.env["SLURM_CONF"], "PATH": path}


def list_jobs(cluster: SlurmCluster, snakemake_log: str, out: Path) -> list[dict[str, str]]:
    """The jobs a Snakemake run submitted, as SLURM saw them: written to ``out`` as a table and
    printed (``pytest -s``); call it right after the run (finished jobs stay listed for
    ``MinJobAge`` seconds)."""
    jobs = submitted_jobs(snakemake_log)
    rows = job_listing(cluster, sorted(jobs, key=int), jobs)
    text = format_listing(rows)
    out.write_text(text + "\n")
    print(f"\nSLURM jobs ({out}):\n{text}")
    return rows


def submitted_job_ids(snakemake_log: str) -> list[str]:
    """SLURM job ids the executor plugin logged ("... has been submitted with SLURM jobid N")."""
    return list(submitted_jobs(snakemake_log))


def submitted_jobs(snakemake_log: str) -> dict[str, str]:
    """SLURM job id -> what it ran, from the plugin's log lines ("... SLURM jobid N (log:
    .../slurm_logs/<rule_R[/wildcards] or group_G>/N.log)"), in submission order."""
    jobs: dict[str, str] = {}
    for m in re.finditer(r"SLURM jobid (\d+)(?: \(log: (\S+)\))?", snakemake_log):
        label = ""
        if m.group(2):
            parts = Path(m.group(2)).parts
            if "slurm_logs" in parts:
                label = "/".join(parts[parts.index("slurm_logs") + 1 : -1])
        jobs.setdefault(m.group(1), label)
    return jobs


def cluster_unavailable() -> str | None:
    """Why no cluster can be started here (the SLURM or munge programs that are missing, and the
    Debian packages that provide them), or None when they are all installed."""
    missing = [Path(d).name for d in DAEMONS if not os.path.exists(d)]
    missing += [c for c in ("sbatch", "squeue", "srun", "scontrol", "sinfo") if not shutil.which(c)]
    if not missing:
        return None
    return f"{', '.join(missing)} not found: install Debian's {' and '.join(PACKAGES)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_memory_mb() -> int:
    """Memory to declare for the node: what the machine has, less 1 GB, at most 16 GB."""
    with open("/proc/meminfo") as f:
        total_kb = int(next(line for line in f if line.startswith("MemTotal")).split()[1])
    return max(1000, min(16000, total_kb // 1024 - 1024))


def _wait(predicate, timeout: float, what: str, cluster: SlurmCluster) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for name, proc in cluster.procs.items():
            if proc.poll() is not None:
                raise ClusterUnavailableError(
                    f"{name} exited with {proc.returncode} while waiting for {what}; "
                    f"log tail: {cluster.log(name)[-800:]!r}"
                )
        time.sleep(0.5)
    raise ClusterUnavailableError(
        f"timed out after {timeout:.0f} s waiting for {what}; "
        f"slurmctld log tail: {cluster.log('slurmctld')[-800:]!r}"
    )


def _start_munge(root: Path, cluster: SlurmCluster) -> Path:
    """A private munged: its own key, socket, pid, seed and log in ``root/munge``.

    It runs as root (``--force``), like the SLURM daemons here: as user ``munge`` it could not
    reach a socket inside a test's private (0700) temporary folder.
    """
    mdir = root / "munge"
    mdir.mkdir(mode=0o700)
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = mdir / "munge.socket"
    cmd = [
        "/usr/sbin/munged", "--foreground", "--force", f"--key-file={key}", f"--socket={sock}",
        f"--pid-file={mdir}/munged.pid", f"--log-file={root}/log/munged.log",
        f"--seed-file={mdir}/munged.seed",
    ]  # fmt: skip
    cluster.procs["munged"] = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    _wait(sock.exists, 20, "the munge socket", cluster)
    return sock


def start_cluster(root: Path, timeout: float = 60) -> SlurmCluster:
    """Write ``root/slurm.conf`` and start munged, slurmctld and slurmd; return once the node
    is idle. On failure the daemons already started are stopped before raising."""
    root = Path(root).resolve()
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cpus = os.cpu_count() or 1
    memory_mb = node_memory_mb()
    conf = root / "slurm.conf"
    bindir = root / "bin"
    bindir.mkdir(exist_ok=True)
    srun = shutil.which("srun") or "/usr/bin/srun"
    wrapper = bindir / "srun"
    wrapper.write_text(f'#!/bin/sh\nexport SLURM_CONF="{conf}"\nexec "{srun}" "$@"\n')
    wrapper.chmod(0o755)
    path = os.pathsep.join([str(bindir), os.environ.get("PATH", os.defpath)])
    env = dict(os.environ, SLURM_CONF=str(conf), PATH=path)
    for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SBATCH_ACCOUNT", "SBATCH_PARTITION"):
        env.pop(var, None)
    cluster = SlurmCluster(root=root, env=env, cpus=cpus, memory_mb=memory_mb)
    try:
        sock = _start_munge(root, cluster)
        cluster.conf.write_text(
            SLURM_CONF.format(
                root=root,
                munge_socket=sock,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                cpus=cpus,
                memory_mb=memory_mb,
                min_job_age=MIN_JOB_AGE_S,
            )  # fmt: skip
        )
        for name, cmd in (
            ("slurmctld", ["/usr/sbin/slurmctld", "-D", "-i"]),
            ("slurmd", ["/usr/sbin/slurmd", "-D", "-N", "localhost"]),
        ):
            cluster.procs[name] = subprocess.Popen(
                cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
            )
            if name == "slurmctld":
                _wait(lambda: cluster.run("sinfo", "-h").returncode == 0, timeout,
                      "slurmctld to answer", cluster)  # fmt: skip
        _wait(lambda: cluster.node_state() == "idle", timeout, "the node to be idle", cluster)
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: SlurmCluster, timeout: float = 20) -> None:
    """Cancel the cluster's jobs, then stop the daemons this module started, by pid: slurmd,
    slurmctld, munged. Job processes that outlive them (a job step survives its slurmd) are
    found by the ``SLURM_CONF`` of this cluster in their environment and killed."""
    if cluster.procs.get("slurmctld") and cluster.procs["slurmctld"].poll() is None:
        jobs = cluster.run("squeue", "-h", "-o", "%i").stdout.split()
        if jobs:
            cluster.run("scancel", *jobs)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and cluster.run("squeue", "-h").stdout.strip():
                time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        proc = cluster.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            continue
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    for pid in job_processes(cluster.conf):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def job_processes(conf: Path) -> list[int]:
    """Pids of processes whose environment has ``SLURM_CONF=<conf>`` (this cluster's jobs)."""
    marker = f"SLURM_CONF={conf}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


@contextmanager
def local_slurm(root: Path) -> Iterator[SlurmCluster]:
    """Start a one-node cluster in ``root``, yield it, always stop it."""
    reason = cluster_unavailable()
    if reason:
        raise ClusterUnavailableError(reason)
    cluster = start_cluster(root)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)
