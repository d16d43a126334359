"""What a job shows while it runs: one-line summaries on the console, everything in its log.

The console lines are what a Snakemake user watches (led by the job's label); the log file holds
what the command wrote before (log records, bars, the result line, the error line).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import training_data as T

from mapper.cli import build_parser, job_label
from mapper.errors import ConfigError
from mapper.progress import JobConsole, bar, bar_summary, duration, progress_seconds


def test_durations_read_as_a_person_reads_them() -> None:
    assert [duration(s) for s in (0, 45.4, 60, 90, 3599, 3600, 7500)] == [
        "0s", "45s", "1m00s", "1m30s", "59m59s", "1h00m", "2h05m"]


def test_a_bar_summary_counts_times_and_estimates() -> None:
    state = {"n": 120, "total": 400, "unit": "crop", "elapsed": 84.0, "initial": 0,
             "postfix": None}
    # 120 crops in 84 s: the other 280 take 196 s
    assert bar_summary(state, 90.0) == "120/400 crops, 1m30s, eta 3m"
    resumed = {**state, "initial": 100, "elapsed": 10.0, "postfix": "loss=0.412, lr=9.6e-05"}
    # a resumed bar counts its rate from where it started (20 steps in 10 s: 280 left, 140 s)
    assert bar_summary({**resumed, "unit": "step"}, 75.0) == (
        "120/400 steps, 1m15s, eta 2m; loss=0.412, lr=9.6e-05")
    assert bar_summary({**state, "n": 0, "elapsed": 5.0}, 5.0) == "0/400 crops, 5s"
    assert bar_summary({**state, "n": 400}, 200.0) == "400/400 crops, 3m20s"
    download = {"n": 12_300_000, "total": 45_000_000, "unit": "B", "unit_scale": True,
                "elapsed": 12.3, "initial": 0, "postfix": None}
    assert bar_summary(download, 13.0) == "12.3MB/45.0MB, 13s, eta 33s"


def test_a_job_is_labelled_by_its_command_and_wildcards() -> None:
    parse = build_parser().parse_args
    args = parse(["predict", "--region", "demo", "--task", "nsp", "--tile", "R0187C0556",
                  "--model", "results/demo/models/nsp.pt", "--out", "x.tif", "s.tif"])
    assert job_label(args) == "predict demo nsp R0187C0556"  # the checkpoint path is left out
    args = parse(["cv-fold", "--region", "demo", "--task", "soilorder", "--model", "miso",
                  "--split", "sh1km", "--fold", "3", "--samples", "p.parquet", "--folds",
                  "f.parquet", "--out", "o", "s.tif"])
    assert job_label(args) == "cv-fold demo soilorder miso sh1km f3"


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("mapper.train", level, __file__, 1, message, None, None)


def wait_for(predicate: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_the_console_summarises_the_open_bar_then_the_last_message(monkeypatch) -> None:
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # where bars draw (the log, in a job)
    screen = io.StringIO()
    console = JobConsole("finetune demo nsp", screen, every=0.02)
    console.start()
    with bar(10, "finetune nsp", "step") as b:
        b.update(3)
        b.set_postfix(loss="0.412", refresh=False)
        assert wait_for(lambda: "3/10 steps" in screen.getvalue())
    console.emit(record("fitting the normalisation"))
    assert wait_for(lambda: "fitting the normalisation" in screen.getvalue())
    console.stop(ok=True)
    lines = screen.getvalue().splitlines()
    assert all(line.startswith("finetune demo nsp: ") for line in lines)
    assert any(line.startswith("finetune demo nsp: 3/10 steps, ") and line.endswith("; loss=0.412")
               for line in lines)
    assert any(line.startswith("finetune demo nsp: running, ") and
               line.endswith("; fitting the normalisation") for line in lines)
    assert lines[-1].startswith("finetune demo nsp: done, ")
    assert "finetune nsp:" in sys.stderr.getvalue()  # the bar itself went to the other stream


def test_a_short_job_prints_nothing_and_warnings_always() -> None:
    screen = io.StringIO()
    console = JobConsole("stack demo R0187C0556", screen, every=60.0)
    console.start()
    console.emit(record("DEM has no value on 3 pixels", level=logging.WARNING))
    console.stop(ok=True)
    assert screen.getvalue() == "stack demo R0187C0556: warning: DEM has no value on 3 pixels\n"


def test_the_period_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv("MAPPER_PROGRESS_SECONDS", raising=False)
    assert progress_seconds() == 60.0
    monkeypatch.setenv("MAPPER_PROGRESS_SECONDS", "2.5")
    assert progress_seconds() == 2.5
    monkeypatch.setenv("MAPPER_PROGRESS_SECONDS", "soon")
    with pytest.raises(ConfigError, match="MAPPER_PROGRESS_SECONDS='soon': not a positive"):
        progress_seconds()


# -- the real process, as a workflow job runs it -------------------------------------------------


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return T.write_region(tmp_path_factory.mktemp("region"))


def run_samples(region: dict, tmp: Path, stacks: list[Path]) -> subprocess.CompletedProcess:
    env = {**os.environ, "MAPPER_PROGRESS_SECONDS": "0.05"}
    return subprocess.run(
        [sys.executable, "-m", "mapper", "samples", "--config", str(region["config"]),
         "--region", "tiny", "--observations", str(region["observations"]),
         "--out", str(tmp / "points.parquet"), *map(str, stacks),
         "--log", str(tmp / "logs" / "samples.log")],
        capture_output=True, text=True, timeout=300, cwd=tmp, env=env,
    )  # fmt: skip


def test_a_job_writes_its_log_and_shows_labelled_lines(region: dict, tmp_path: Path) -> None:
    run = run_samples(region, tmp_path, region["stacks"])
    assert run.returncode == 0, run.stderr
    assert run.stdout == ""
    console = run.stderr.splitlines()
    assert console and all(line.startswith("samples tiny: ") for line in console), run.stderr
    assert any(line.startswith("samples tiny: running, ") for line in console)
    assert console[-1].startswith("samples tiny: done, ")
    log = (tmp_path / "logs" / "samples.log").read_text()
    assert "INFO mapper.samples: " in log  # the log records
    assert log.splitlines()[-1] == f"{tmp_path / 'points.parquet'}: 140 points"  # the result


def test_a_failed_job_says_its_error_in_the_log_and_on_the_console(region: dict,
                                                                   tmp_path: Path) -> None:
    clustered = T.lattice().tile_of_xy(T.LEFT + 600, T.TOP - 700)  # a cluster of points
    good = next(p for p in region["stacks"] if p.stem == clustered)
    bad = tmp_path / "stack" / good.name
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes()[:3000])  # cut short
    run = run_samples(region, tmp_path, [bad, *(p for p in region["stacks"] if p != good)])
    assert run.returncode == 1
    log = (tmp_path / "logs" / "samples.log").read_text().splitlines()
    errors = [line for line in log if line.startswith("error:")]
    assert len(errors) == 1 and log[-1] == errors[0] and errors[0].startswith(f"error: {bad}: ")
    assert "Traceback" not in "\n".join(log)
    console = run.stderr.splitlines()
    assert console[-1] == f"samples tiny: {errors[0]}"
    assert not any("done" in line for line in console)
    assert not (tmp_path / "points.parquet").exists()


# -- the long loops a console summary counts ------------------------------------------------------


def recorded_bars(monkeypatch: pytest.MonkeyPatch, module: object) -> list:
    """The bars ``module`` opens through :func:`mapper.progress.bar` (kept after they close)."""
    opened: list = []

    def recording(*args: object, **kwargs: object):
        opened.append(bar(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(module, "progress_bar", recording)
    return opened


@pytest.mark.parametrize(("strip_px", "where"), [(16, "land"), (512, "land"), (16, "sea")])
def test_a_stack_counts_its_strips_and_hydrology_blocks(
        stack_sources: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        strip_px: int, where: str) -> None:
    """A statewide stack runs for minutes: the console counts its parts, and the count ends at
    the total (every strip and hydrology block, whatever the strip height; a tile without
    elevation has no hydrology to compute)."""
    import stack_sources as S

    import mapper.stack
    from mapper.dem import hydro_blocks
    from mapper.stack import build_stack, stack_settings

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    opened = recorded_bars(monkeypatch, mapper.stack)
    s = stack_sources
    tile = S.SMALL_TILES[0] if where == "land" else S.OCEAN_TILE_64
    build_stack(s["r64"], tile, [s["s2"]], s["dem"], s["climate"], tmp_path / f"{tile}.tif",
                strip_px=strip_px)
    lattice = s["r64"].lattice
    blocks = hydro_blocks(lattice, lattice.tile_window(tile),
                          stack_settings(s["r64"]).hydro_block_px)
    total = -(-lattice.tile_px // strip_px) + len(blocks)
    assert [(b.desc, b.total, b.n) for b in opened] == [(f"stack {tile}", total, total)]


def test_samples_count_their_points(region: dict, monkeypatch: pytest.MonkeyPatch,
                                    tmp_path: Path) -> None:
    import mapper.samples
    from mapper.config import load_config, load_region
    from mapper.samples import build_samples

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    opened = recorded_bars(monkeypatch, mapper.samples)
    tiny = load_region(load_config(region["config"]), "tiny")
    table = build_samples(tiny, region["observations"], region["stacks"],
                          tmp_path / "points.parquet")
    assert len(opened) == 1 and opened[0].desc == "samples"
    assert opened[0].n == opened[0].total >= len(table) == 140
