"""Time per stage of a Snakemake run, read from its log.

    python scripts/stage_times.py [LOG]     # default: the newest .snakemake/log/*.snakemake.log

For each rule: the number of jobs, the wall-clock span from its first job's start to its last
job's end, and the summed job time (greater than the span when jobs ran side by side). Snakemake
stamps each job's start (``[date]`` then ``rule <name>:``) and end (``[date]`` then ``Finished
jobid: N (Rule: <name>)``) with one-second resolution.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?(?:checkpoint|rule) (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
END = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def stage_times(lines: list[str]) -> tuple[dict[str, dict], float]:
    starts: dict[str, datetime] = {}
    rules: dict[str, dict] = {}
    stamp: datetime | None = None
    pending: str | None = None  # rule of a start whose jobid is not read yet
    first = last = None
    for line in lines:
        line = line.rstrip("\n")
        if m := STAMP.match(line):
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
        elif (m := START.match(line)) and stamp is not None:
            pending = m.group(1)
        elif (m := JOBID.match(line)) and pending is not None:
            starts[m.group(1)] = stamp
            r = rules.setdefault(pending, {"jobs": 0, "start": stamp, "end": stamp, "job_s": 0.0})
            r["start"] = min(r["start"], stamp)
            pending = None
        elif (m := END.match(line)) and stamp is not None:
            jobid, rule = m.groups()
            r = rules.setdefault(rule, {"jobs": 0, "start": stamp, "end": stamp, "job_s": 0.0})
            r["jobs"] += 1
            r["end"] = max(r["end"], stamp)
            if jobid in starts:
                r["job_s"] += (stamp - starts[jobid]).total_seconds()
    total = (last - first).total_seconds() if first and last else 0.0
    return rules, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("log", type=Path, nargs="?",
                    help="a Snakemake log (default: the newest .snakemake/log/*.snakemake.log)")
    log = ap.parse_args().log
    if log is None:
        logs = sorted(Path(".snakemake/log").glob("*.snakemake.log"))
        if not logs:
            sys.exit("error: no Snakemake log under .snakemake/log; give the log's path")
        log = logs[-1]
    if not log.is_file():
        sys.exit(f"error: {log}: no such Snakemake log (they are .snakemake/log/*.snakemake.log)")
    rules, total = stage_times(log.read_text(errors="replace").splitlines())
    print(f"{log}: {total:.0f} s from the first to the last stamp")
    print(f"{'rule':<18} {'jobs':>5} {'span s':>8} {'job s':>8}")
    for name, r in sorted(rules.items(), key=lambda kv: kv[1]["start"]):
        span = (r["end"] - r["start"]).total_seconds()
        print(f"{name:<18} {r['jobs']:>5} {span:>8.0f} {r['job_s']:>8.0f}")


if __name__ == "__main__":
    main()
