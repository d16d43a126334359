"""A changed setting of a fetched source fetches again what it touches, and only that.

The fetch jobs list their source's section of the region file among their params (an ``http``
or zone file its own entry, the weights their URL), so Snakemake compares them with those of
the last run: a new search period or cloud limit fetches every composite, a new URL template
every elevation cell, a new URL or checksum under the same file name that file. The run config
itself is a params function of the input, which Snakemake does not compare.

A finished run is recorded without running anything: empty placeholders at every output of the
plan, then ``snakemake --touch --forceall`` (which records each job's params as a run does).
Dry runs only: nothing is fetched (the URLs name no reachable host).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from workflow_project import (
    WorkflowProject,
    make_statewide_project,
    planned_jobs,
    rewrite_yaml,
    run_snakemake,
)

from mapper.config import load_config, load_region, read_yaml
from mapper.sources.cells import CELL_PATTERN, tile_dem_bounds
from mapper.sources.exclusions import tiles_over
from mapper.vrt import vrt_members_over

OBSERVATIONS_URL = "http://127.0.0.1:9/survey/v1/observations.csv"
ZONE_URL = "http://127.0.0.1:9/zones/v1/units.geojson"
WEIGHTS_URL = "http://127.0.0.1:9/weights/v1/sentinel2_swinb_si_ms.pth"
HERE = "S2B_6WVC_20220714_0_L2A"
"""A Sentinel-2 item the recorded run leaves out of the first tile's composite and another's."""
ELSEWHERE = "S2A_6WVD_20210711_0_L2A"
"""An item the recorded run leaves out of another tile's composite only."""


def planned_output_files(project: WorkflowProject, *targets: str) -> list[str]:
    """Every output of every job a forced dry run of ``targets`` plans."""
    run = run_snakemake(project, *targets,
                        extra_args=["--dry-run", "--forceall", "--cores", "1"])
    files = []
    for block in re.findall(r"^\s+output: (.+)$", run.log, flags=re.MULTILINE):
        files += [f.strip() for f in block.split(",")]
    return files


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[WorkflowProject, list[str]]:
    """The fairbanks region file, its observations and a zone layer given by URL, two
    Sentinel-2 items left out (:data:`HERE` of the first tile), recorded as run for the first
    tile's stack, the observation file and the prepared zone layer."""
    project = make_statewide_project(tmp_path_factory.mktemp("settings"), "fairbanks")
    settings = read_yaml(project.region_file)
    settings["sources"]["observations"] = {
        "kind": "http", "files": [{"url": OBSERVATIONS_URL, "sha256": "a" * 64}]}
    settings["zones"] = [{"name": "units", "kind": "http", "field": "unit",
                          "files": [{"url": ZONE_URL, "sha256": "b" * 64}]}]
    settings["model"].update(size="swinv2_b", satlas_weights=WEIGHTS_URL)
    settings["sources"]["sentinel2"]["exclude"] = {
        ELSEWHERE: [project.tiles[1]], HERE: [project.tiles[1], project.tiles[0]]}
    settings["sources"]["sentinel2"]["exclude_tile_px"] = settings["tile_px"]
    rewrite_yaml(project.region_file, settings)
    targets = [project.stack(project.tiles[0]),
               "resources/fairbanks/sources/observations/observations.csv",
               "resources/fairbanks/zones/units.geojson",
               "resources/weights/sentinel2_swinb_si_ms.pth"]
    for f in planned_output_files(project, *targets):
        project.path(f).parent.mkdir(parents=True, exist_ok=True)
        project.path(f).touch()
    run_snakemake(project, *targets, extra_args=["--touch", "--forceall", "--cores", "1"])
    return project, targets


def plan_with(recorded: tuple[WorkflowProject, list[str]], change) -> dict[str, int]:  # noqa: ANN001
    """Jobs planned after ``change(settings)`` edits the region file (restored afterwards)."""
    project, targets = recorded
    original = read_yaml(project.region_file)
    settings = copy.deepcopy(original)
    change(settings)
    rewrite_yaml(project.region_file, settings)
    try:
        return planned_jobs(project, *targets)
    finally:
        rewrite_yaml(project.region_file, original)


def test_the_recorded_run_plans_nothing(recorded: tuple[WorkflowProject, list[str]]) -> None:
    assert plan_with(recorded, lambda s: None) == {}


def test_the_same_settings_in_another_order_plan_nothing(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    """Snakemake compares params by their repr, in which a dict's key order counts: the rules
    give their sections as JSON with sorted keys."""
    def change(s: dict) -> None:
        exclude = s["sources"]["sentinel2"]["exclude"]
        for section in (s["sources"]["sentinel2"], s["sources"]["dem"], s["stack"], exclude):
            items = list(section.items())
            section.clear()
            section.update(reversed(items))
        exclude[HERE].reverse()

    assert plan_with(recorded, change) == {}


def test_the_same_numbers_written_as_ints_or_floats_plan_nothing(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    """``max_cloud: 40`` restated as ``40.0`` must not fetch every composite again (statewide,
    terabytes), nor ``tpi_radius_m: 100`` remake every stack: each number takes its schema
    type before it becomes a param."""
    def change(s: dict) -> None:
        s2 = s["sources"]["sentinel2"]
        s2["max_cloud"] = float(s2["max_cloud"]) if isinstance(s2["max_cloud"], int) else int(
            s2["max_cloud"])
        s["stack"]["tpi_radius_m"] = 100
        s["tile_px"] = float(s["tile_px"])

    assert plan_with(recorded, change) == {}


def test_a_changed_scene_search_fetches_the_composite_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["sources"]["sentinel2"]["max_cloud"] = 20

    assert plan_with(recorded, change) == {"fetch_stac": 1, "stack": 1}


def test_an_exclusion_fetches_again_only_the_composites_of_the_tiles_it_names(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    """The composite's params hold the ``exclude`` entries that name its tile: a new entry, or
    one no longer naming it, fetches it again; an entry of other tiles only, nothing."""
    project, _ = recorded
    here, other = project.tiles[0], project.tiles[1]

    def exclude(entries: dict) -> Callable[[dict], None]:
        return lambda s: s["sources"]["sentinel2"].update(exclude=entries)

    again = {"fetch_stac": 1, "stack": 1}
    assert plan_with(recorded, exclude({HERE: [here, other]})) == {}  # ELSEWHERE: not here
    assert plan_with(recorded, exclude({HERE: [here], "S2A_NEW": [other]})) == {}
    assert plan_with(recorded, exclude({HERE: [other], ELSEWHERE: [other]})) == again
    assert plan_with(recorded, exclude({HERE: [here], "S2A_NEW": [here]})) == again
    assert plan_with(recorded, exclude({HERE: "all"})) == {}
    assert plan_with(recorded, exclude({HERE: [here], "S2A_NEW": "all"})) == again
    assert plan_with(recorded, lambda s: s["sources"]["sentinel2"].pop("exclude")) == again


def test_the_same_exclusions_listed_at_another_tile_size_plan_nothing(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    """``exclude_tile_px`` says what area a listed id names: the recorded entries restated as
    tiles half the size (one sub-tile is enough to name a tile) leave the same items out of the
    same composites."""
    project, _ = recorded
    here, other = project.tiles[0], project.tiles[1]
    half = project.tile_px // 2

    def restated(s: dict) -> None:
        s["sources"]["sentinel2"].update(exclude_tile_px=half, exclude={
            ELSEWHERE: tiles_over(other, project.tile_px, half),
            HERE: [*tiles_over(other, project.tile_px, half)[-1:],
                   tiles_over(here, project.tile_px, half)[0]]})

    assert plan_with(recorded, restated) == {}


def test_an_exclusion_naming_no_tile_of_the_region_is_an_error(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    project, targets = recorded
    original = read_yaml(project.region_file)
    settings = copy.deepcopy(original)
    settings["sources"]["sentinel2"]["exclude"][HERE].append("R0000C0000")
    rewrite_yaml(project.region_file, settings)
    try:
        run = run_snakemake(project, *targets, extra_args=["--dry-run"], check=False)
    finally:
        rewrite_yaml(project.region_file, original)
    assert run.returncode != 0
    assert (f"{project.region_file}: key 'sources.sentinel2.exclude.{HERE}': R0000C0000 "
            f"(tile_px {settings['tile_px']}) is not in region 'fairbanks'") in run.log
    assert f"python -m mapper scenes --region fairbanks --item {HERE}" in run.log


def test_a_changed_cell_template_fetches_the_cells_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    project, _ = recorded
    cells = len(list(project.path("resources/fairbanks/sources/dem").glob("*.json")))

    def change(s: dict) -> None:
        dem = s["sources"]["dem"]
        dem["url_template"] = dem["url_template"].replace("/current/", "/historical/")

    assert cells > 1
    assert plan_with(recorded, change) == {"fetch_dem_cell": cells, "stack": 1}


def test_a_new_url_under_the_same_file_name_downloads_it_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["sources"]["observations"]["files"][0] = {
            "url": OBSERVATIONS_URL.replace("/v1/", "/v2/"), "sha256": "c" * 64}

    assert plan_with(recorded, change) == {"fetch_http": 1}


def test_a_new_zone_file_url_downloads_it_again_and_prepares_the_layer(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["zones"][0]["files"][0]["url"] = ZONE_URL.replace("/v1/", "/v2/")

    assert plan_with(recorded, change) == {"fetch_zone_file": 1, "zone_layer": 1}


def test_a_new_weights_url_under_the_same_file_name_downloads_it_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["model"]["satlas_weights"] = WEIGHTS_URL.replace("/v1/", "/v2/")

    assert plan_with(recorded, change) == {"fetch_weights": 1}


def test_a_changed_stack_setting_remakes_the_stack(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["stack"]["dem_resampling"] = "bilinear"

    assert plan_with(recorded, change) == {"stack": 1}


def test_a_changed_climate_period_derives_the_normals_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        s["sources"]["climate"]["first_year"] = 1982

    assert plan_with(recorded, change) == {"snap_climate_normals": 1, "stack": 1}


def test_a_corrected_archive_prefix_derives_the_normals_again_from_the_same_archive(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    def change(s: dict) -> None:
        archive = s["sources"]["climate"]["archives"]["tasmin"]
        archive["prefix"] = "tasmin_mean_C_CRU_TS41_historical"

    assert plan_with(recorded, change) == {"snap_climate_normals": 1, "stack": 1}


def test_a_tile_id_naming_another_area_fetches_and_stacks_it_again(
        recorded: tuple[WorkflowProject, list[str]]) -> None:
    """Tile ids count tiles from the grid's origin in ``tile_px`` steps: with another grid (or
    tile size) the recorded tile's id names another area, so its composite and its stack, whose
    files the id names, are made again rather than kept as up to date."""
    project, targets = recorded
    original = read_yaml(project.config)
    config = copy.deepcopy(original)
    config["grid"]["origin"][1] -= project.tile_px * config["grid"]["res"]  # one tile south
    rewrite_yaml(project.config, config)
    try:
        plan = planned_jobs(project, *targets)
    finally:
        rewrite_yaml(project.config, original)
    assert plan.get("fetch_stac") == 1 and plan.get("stack") == 1


def test_the_maps_out_res_reruns_no_prediction_at_another_res(
        tmp_path: Path) -> None:
    """A tile predicted for the resolution report at 50 m is computed at 50 m whatever the map's
    own out_res: a change of that reruns none of them (each was a GPU job)."""
    project = make_statewide_project(tmp_path, "fairbanks")
    target = f"results/fairbanks/predict_50m/nsp/{project.tiles[0]}.tif"
    for f in planned_output_files(project, target):
        project.path(f).parent.mkdir(parents=True, exist_ok=True)
        project.path(f).touch()
    run_snakemake(project, target, extra_args=["--touch", "--forceall", "--cores", "1"])
    settings = read_yaml(project.region_file)
    assert settings["prediction"].get("out_res", 10.0) != 20.0
    settings["prediction"]["out_res"] = 20.0
    rewrite_yaml(project.region_file, settings)
    assert planned_jobs(project, target) == {}
    settings["prediction"]["sigma_scale"] = 0.3
    rewrite_yaml(project.region_file, settings)  # the control: a setting it reads reruns it
    assert planned_jobs(project, target) == {"region_settings": 1, "predict_at_res": 1}


def test_the_placeholders_are_the_plan(recorded: tuple[WorkflowProject, list[str]]) -> None:
    """The fixture's record covers the jobs the tests count (else a test could pass on a plan
    that never had those jobs)."""
    project, _ = recorded
    names = {p.name for p in Path(project.path("resources/fairbanks/sources")).rglob("*")}
    assert {"observations.csv", "snap_normals.tif"} <= names
    assert any(re.fullmatch(CELL_PATTERN, n.removesuffix(".json")) for n in names)  # cells


def write_dem_vrt(root: Path, extents: list[tuple[float, float, float, float]]) -> Path:
    """A DEM given as a VRT over one small EPSG:3338 GeoTIFF per extent (1 km pixels,
    members/dem_<i>.tif, placed relative to the VRT); returns the VRT."""
    members = root / "members"
    members.mkdir(parents=True, exist_ok=True)
    left = min(e[0] for e in extents)
    top = max(e[3] for e in extents)
    right = max(e[2] for e in extents)
    bottom = min(e[1] for e in extents)
    width, height = int((right - left) // 1000), int((top - bottom) // 1000)
    sources = []
    for i, (x0, y0, x1, y1) in enumerate(extents):
        w, h = int((x1 - x0) // 1000), int((y1 - y0) // 1000)
        path = members / f"dem_{i}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=1,
                           dtype="float32", crs="EPSG:3338", nodata=-9999.0,
                           transform=from_origin(x0, y1, 1000.0, 1000.0)) as dst:
            dst.write(np.full((1, h, w), 150.0, dtype=np.float32))
        sources.append(
            f'<SimpleSource><SourceFilename relativeToVRT="1">members/{path.name}'
            f'</SourceFilename><SourceBand>1</SourceBand><SrcRect xOff="0" yOff="0" '
            f'xSize="{w}" ySize="{h}"/><DstRect xOff="{int((x0 - left) // 1000)}" '
            f'yOff="{int((top - y1) // 1000)}" xSize="{w}" ySize="{h}"/></SimpleSource>')
    vrt = root / "dem.vrt"
    vrt.write_text(
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}"><SRS>EPSG:3338</SRS>'
        f"<GeoTransform>{left}, 1000, 0, {top}, 0, -1000</GeoTransform>"
        '<VRTRasterBand dataType="Float32" band="1"><NoDataValue>-9999</NoDataValue>'
        + "".join(sources) + "</VRTRasterBand></VRTDataset>\n")
    return vrt


def test_a_file_corrected_behind_a_dem_vrt_remakes_the_stacks_within_its_reach(
        tmp_path: Path) -> None:
    """A DEM given as a VRT of two files (west and east halves): Snakemake sees the VRT, whose
    text does not change when a file behind it is corrected, so each stack lists the files its
    DEM window meets among its inputs. Correcting the west file remakes the stacks that read
    it, and no other; the VRT itself stays as it was."""
    project = make_statewide_project(tmp_path, "fairbanks")
    region = load_region(load_config(project.config), "fairbanks")
    windows = tile_dem_bounds(region, project.stacked)
    left, bottom = min(w[0] for w in windows) - 5000, min(w[1] for w in windows) - 5000
    right, top = max(w[2] for w in windows) + 5000, max(w[3] for w in windows) + 5000
    middle = left + ((right - left) // 2000) * 1000
    vrt = write_dem_vrt(project.root / "dem", [(left, bottom, middle, top),
                                               (middle, bottom, right, top)])
    settings = read_yaml(project.region_file)
    settings["sources"]["dem"] = {"kind": "file", "path": str(vrt)}
    rewrite_yaml(project.region_file, settings)
    stacks = [project.stack(t) for t in project.stacked]
    for f in planned_output_files(project, *stacks):
        project.path(f).parent.mkdir(parents=True, exist_ok=True)
        project.path(f).touch()
    run_snakemake(project, *stacks, extra_args=["--touch", "--forceall", "--cores", "1"])
    assert planned_jobs(project, *stacks) == {}

    west = project.root / "dem" / "members" / "dem_0.tif"
    with rasterio.open(west, "r+") as dst:  # a corrected file: other heights, same name
        dst.write(dst.read(1) + 2.5, 1)
    reach = {t for t, w in zip(project.stacked, windows, strict=True)
             if w[0] < middle + 2000}  # the file's extent grown by two of its pixels
    assert 0 < len(reach) < len(project.stacked)
    run = run_snakemake(project, *stacks, extra_args=["--dry-run", "--cores", "1"])
    planned = set(re.findall(r"output: results/fairbanks/stack/(R\d{4}C\d{4})\.tif", run.log))
    assert planned == reach, run.log


def test_the_files_behind_a_vrt_of_vrts_are_found_within_reach(tmp_path: Path) -> None:
    """A VRT that names a VRT: the inner VRT and the files behind it whose extent meets the
    window are members (a file corrected two levels down is seen); files out of reach are not;
    a VRT that names the VRT it is read from is left out (GDAL refuses such a loop)."""
    inner = write_dem_vrt(tmp_path / "inner", [(0, 0, 10_000, 10_000),
                                               (50_000, 0, 60_000, 10_000)])
    outer_file = write_dem_vrt(tmp_path / "outer", [(20_000, 0, 30_000, 10_000)])
    outer = tmp_path / "outer" / "all.vrt"
    text = outer_file.read_text()
    inner_ref = (f'<SimpleSource><SourceFilename relativeToVRT="0">{inner}</SourceFilename>'
                 '<SourceBand>1</SourceBand></SimpleSource>')
    loop_ref = ('<SimpleSource><SourceFilename relativeToVRT="1">all.vrt</SourceFilename>'
                '<SourceBand>1</SourceBand></SimpleSource>')
    outer.write_text(text.replace("</VRTRasterBand>", inner_ref + loop_ref + "</VRTRasterBand>"))

    west = str(tmp_path / "inner" / "members" / "dem_0.tif")
    far_east = str(tmp_path / "inner" / "members" / "dem_1.tif")
    middle = str(tmp_path / "outer" / "members" / "dem_0.tif")
    found = vrt_members_over(outer, (0, 0, 25_000, 10_000))
    assert west in found and middle in found and str(inner) in found
    assert far_east not in found and str(outer) not in found
    assert len(found) == len(set(found))
    assert vrt_members_over(outer, (52_000, 0, 58_000, 10_000)) == [str(inner), far_east]
