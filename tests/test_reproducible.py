"""Reproducibility: the tiny demo run twice from nothing, in two folders, on the CPU, gives
byte-identical maps (sha256 of every ``maps/*.tif``), and the same quick-looks, styles and STAC
Items (but for the time an Item was written).

The first run is the session's completed tiny project (shared with the workflow tests); the
second is a new project with the same settings run to the maps only (conftest's
``second_tiny``: through the workflow's SLURM profile where a local cluster can start, as under
``make test`` as root, so the maps are also the same whether the jobs ran locally or as SLURM
jobs; else locally). When the maps differ, the
message says where: which intermediate files differ (sources, stacks, samples, checkpoints,
predicted tiles) and, for the maps, which metadata tags or pixels.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from workflow_project import SecondRun, WorkflowProject, copy_project, make_project

from mapper.config import load_config, load_region
from mapper.products import provenance_tags

STAGES = ("resources", "results", "maps")


def test_provenance_does_not_depend_on_the_project_folder(tmp_path: Path) -> None:
    """The same region in two folders: the same product metadata (the boundary is recorded by
    name and content, not by its absolute path)."""
    first = make_project(tmp_path / "a" / "project")
    second = copy_project(first, tmp_path / "b" / "elsewhere").root
    tags = []
    for root in (first.root, second):
        region = load_region(load_config(root / "config/config.yaml"), "tiny")
        assert str(root) in region.settings["boundary"]
        tags.append(provenance_tags(region, "nsp", "0" * 64, "probability",
                                    root / "resources/tiny/sources"))
    assert tags[0] == tags[1]
    boundary = json.loads(tags[0]["MAPPER_CONFIG"])["boundary"]
    digest = sha256(first.root / "config/regions/tiny.geojson")
    assert boundary == {"file": "tiny.geojson", "sha256": digest}


def test_a_maps_provenance_records_its_own_tasks_epochs_only(tmp_path: Path) -> None:
    """Another task's fine-tuning epochs retrain and remake that task's map alone, so this map's
    MAPPER_CONFIG holds this task's number: an edit of the other's leaves it true."""
    region = load_region(load_config(), "demo")
    epochs = region.settings["training"]["finetune_epochs"]
    assert isinstance(epochs, dict) and epochs["nsp"] != epochs["soilorder"]

    def recorded(task: str) -> dict:
        tags = provenance_tags(region, task, "0" * 64, "x", tmp_path / "no-sources")
        return json.loads(tags["MAPPER_CONFIG"])

    before = recorded("soilorder")
    assert before["training"]["finetune_epochs"] == epochs["soilorder"]
    assert recorded("nsp")["training"]["finetune_epochs"] == epochs["nsp"]
    region.settings["training"]["finetune_epochs"] = {**epochs, "nsp": epochs["nsp"] + 1}
    assert recorded("soilorder") == before


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digests(root: Path, pattern: str) -> dict[str, str]:
    return {str(p.relative_to(root)): sha256(p) for p in sorted(root.glob(pattern))
            if p.is_file()}


def stac_without_times(path: Path) -> str:
    item = json.loads(path.read_text())
    for key in ("created", "datetime", "updated"):
        item.get("properties", {}).pop(key, None)
    return json.dumps(item, sort_keys=True)


def raster_differences(a: Path, b: Path) -> list[str]:
    """What differs between two rasters: dataset/band tags, then pixels."""
    out = []
    with rasterio.open(a) as da, rasterio.open(b) as db:
        ta, tb = da.tags(), db.tags()
        for key in sorted(set(ta) | set(tb)):
            if ta.get(key) != tb.get(key):
                out.append(f"tag {key}: {str(ta.get(key))[:120]!r} vs {str(tb.get(key))[:120]!r}")
        for i in range(1, da.count + 1):
            if da.tags(i) != db.tags(i):
                out.append(f"band {i} tags differ")
        if da.shape != db.shape or da.count != db.count:
            out.append(f"shape {da.count}x{da.shape} vs {db.count}x{db.shape}")
        elif not np.array_equal(da.read(), db.read(), equal_nan=True):
            diff = np.abs(da.read().astype(np.float64) - db.read().astype(np.float64))
            out.append(f"pixels differ (max |diff| {np.nanmax(diff):g}, "
                       f"{int((diff > 0).sum())} values)")
    return out or ["same tags and pixels; the file layout differs"]


@pytest.mark.slow
def test_two_runs_from_nothing_give_identical_maps(completed_tiny: WorkflowProject,
                                                   second_tiny: SecondRun) -> None:
    second = second_tiny.project
    print(f"\nsecond run ({second_tiny.via}): {second_tiny.run.seconds:.0f} s")
    second_tiny.run.check()

    first_maps = digests(completed_tiny.root, "maps/*.tif")
    second_maps = digests(second.root, "maps/*.tif")
    assert set(first_maps) == set(second_maps) and len(first_maps) >= 3
    different = sorted(k for k in first_maps if first_maps[k] != second_maps[k])
    if different:
        report = [f"{m}: {'; '.join(raster_differences(completed_tiny.path(m), second.path(m)))}"
                  for m in different]
        upstream = []
        for pattern in ("resources/*/sources/*", "resources/*/truth/*", "results/*/stack/*.tif",
                        "results/*/samples/*", "results/*/models/*.pt",
                        "results/*/predict/*/*.tif"):
            a, b = digests(completed_tiny.root, pattern), digests(second.root, pattern)
            upstream += sorted(k for k in b if a.get(k) != b[k])
        pytest.fail("maps differ between two runs from nothing:\n" + "\n".join(report)
                    + "\nfirst differing intermediate files: "
                    + (", ".join(upstream[:8]) or "none"))

    # The other product files too (quick-looks, styles, class names); STAC Items but for the
    # time they were written.
    others = {}
    for root in (completed_tiny.root, second.root):
        files = {}
        for p in sorted(root.glob("maps/*")):
            if p.suffix != ".tif":
                text = stac_without_times(p) if p.name.endswith(".stac.json") else sha256(p)
                files[str(p.relative_to(root))] = text
        others[root] = files
    assert others[completed_tiny.root] == others[second.root]
