"""The real-source path end to end: the ``fairbanks`` region (config/regions/fairbanks.yaml, the
statewide sources) run to its maps against loopback replicas of the services it reads.

One server on 127.0.0.1 answers as the real services do (layouts in the helper modules):

- Earth Search v1 (tests/earth_search.py): STAC search with POST paging, ``sentinel-2-l2a`` items
  with their properties, and their band and SCL COGs in UTM 6N read by range requests;
- USGS 3DEP 1 arc-second cells (tests/dem_cells.py): real names, sizes, spacing, CRS, nodata;
  a cell the region does not read is absent (404);
- SNAP's monthly climate archives (tests/snap_archives.py): zips of monthly GeoTIFFs;
- SatlasPretrain's weights file (tests/satlas_layout.py), for the demo-size encoder.

Every value served is SYNTHETIC. The region is shrunk to fit CI (2 x 2 tiles of 128 px near
Fairbanks, the tiny training of tests/workflow_project.py); its settings and the layouts are
otherwise the region file's. The user places only the observation table (SYNTHETIC points here).
"""

from __future__ import annotations

import csv
import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from affine import Affine
from dem_cells import THREEDEP2_TEMPLATE, THREEDEP_TEMPLATE, serve, write_3dep
from earth_search import BANDS, EarthSearch, Scene
from httpserver import LoopbackServer
from pyproj import Transformer
from rio_cogeo.cogeo import cog_validate
from satlas_layout import satlas_layout
from snap_archives import PERIOD, PREFIXES, archive_bytes
from tiny_region import square_boundary, write_config
from workflow_project import (
    EVALUATION,
    REPO,
    TRAINING,
    WorkflowProject,
    project_env,
    run_snakemake,
    tiny_local_args,
)

from mapper.bands import STACK_BANDS
from mapper.config import load_config, load_region, read_yaml
from mapper.models.config import ModelConfig
from mapper.models.swin import SwinEncoder
from mapper.sources.cells import Cell, region_cells

FAIRBANKS = (-147.7164, 64.8378)
REGION = "fairbanks"
ARCHIVES = {
    "pr": "pr_AK_CAN_2km_CRU_TS40_historical.zip",
    "tas": "tas_AK_CAN_2km_CRU_TS40_historical.zip",
    "tasmin": "tasmin_AK_CAN_2km_CRU_TS40_historical.zip",
}
WEIGHTS = "/allenai/satlas-pretrain/resolve/main/sentinel2_swinb_si_ms.pth"


def area(tile_px: int = 128, tiles: int = 2) -> tuple[float, float, float, float]:
    """A square of ``tiles`` x ``tiles`` lattice tiles of ``tile_px`` whose corner is the lattice
    corner nearest Fairbanks (so that it is whole tiles at tile_px and at tile_px / 2)."""
    x, y = Transformer.from_crs(4326, 3338, always_xy=True).transform(*FAIRBANKS)
    size = tile_px * 10.0
    cx = -2_600_000.0 + round((x + 2_600_000.0) / size) * size
    cy = 2_600_000.0 - round((2_600_000.0 - y) / size) * size
    half = tiles / 2 * size
    return (cx - half, cy - half, cx + half, cy + half)


def serve_scenes(server: LoopbackServer, bounds: tuple) -> EarthSearch:
    """Three SYNTHETIC summer scenes over the area (UTM 6N), one half cloudy, baselines before
    and after 04.00 (their DNs harmonised, as the sentinel-2-l2a COGs hold them, a lake in the
    southern margin their darkest pixels), plus a winter scene that must never be read."""
    api = EarthSearch(server)
    left, bottom, right, top = bounds
    to_utm = Transformer.from_crs(3338, 32606, always_xy=True)
    xs, ys = to_utm.transform([left, right, left, right], [bottom, bottom, top, top])
    x0 = np.floor(min(xs) / 20) * 20 - 4000
    y0 = np.ceil(max(ys) / 20) * 20 + 4000
    size = float(np.ceil((max(max(xs) - x0, y0 - min(ys)) + 4000) / 20) * 20)

    lake = y0 - size + 1500.0  # south of it a lake (DN 100, SCL 6), beyond the area's reach

    def band(k: int, gain: float):
        def dn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            wave = np.sin(x / 700.0 + k) * np.cos(y / 900.0 - k)
            return np.where(y < lake, 100, 1200 + 250 * k + gain * 600 * wave)

        return dn

    scenes = [  # id, when, cloud cover, baseline, gain, cloud rule
        ("S2B_6WVC_20210704_0_L2A", datetime(2021, 7, 4, 21, 30, tzinfo=UTC), 3.0, "03.01", 1.0,
         None),
        ("S2A_6WVC_20220712_0_L2A", datetime(2022, 7, 12, 21, 30, tzinfo=UTC), 12.0, "04.00",
         1.1, "west"),
        ("S2B_6WVC_20230801_0_L2A", datetime(2023, 8, 1, 21, 30, tzinfo=UTC), 25.0, "05.09", 0.9,
         None),
        ("S2A_6WVC_20230115_0_L2A", datetime(2023, 1, 15, 21, 30, tzinfo=UTC), 1.0, "05.09", 3.0,
         None),
    ]  # fmt: skip
    mid = x0 + size / 2
    for item_id, when, cloud, baseline, gain, rule in scenes:
        dn = {key: band(k, gain) for k, key in enumerate(BANDS)}

        def scl(x: np.ndarray, y: np.ndarray, rule: str | None = rule) -> np.ndarray:
            clear = np.where(y < lake, 6, 4)
            return np.where((x < mid) if rule == "west" else np.zeros_like(x, bool), 9, clear)

        api.add_scene(Scene(item_id, when, cloud, baseline, 32606, x0, y0, size), dn, scl)
    return api


def serve_archives(server: LoopbackServer, bounds: tuple) -> dict[str, str]:
    """SNAP's three archives on a 2 km grid over the area (4 x 5 px, SYNTHETIC values)."""
    left, _, _, top = bounds
    transform = Affine(2000.0, 0.0, left - 3000.0, 0.0, -2000.0, top + 3000.0)
    folder = ("/data/Base/AK_CAN_2km/historical/CRU_TS/"
              "Historical_Monthly_and_Derived_{}_Products_2km_CRU_TS/")  # fmt: skip
    urls = {}
    for variable in PREFIXES:
        kind = "Precipitation" if variable == "pr" else "Temperature"
        path = folder.format(kind) + ARCHIVES[variable]
        urls[variable] = server.add_file(path, archive_bytes(variable, transform=transform))
    return urls


def write_observations(path: Path, bounds: tuple, n: int = 160) -> None:
    """SYNTHETIC observations: NSP where the synthetic imagery's wave is high, three orders."""
    rng = np.random.default_rng(5)
    left, bottom, right, top = bounds
    x = rng.uniform(left + 50, right - 50, n)
    y = rng.uniform(bottom + 50, top - 50, n)
    lon, lat = Transformer.from_crs(3338, 4326, always_xy=True).transform(x, y)
    orders = ["Gelisols", "Inceptisols", "Histosols"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["obs_id", "lon", "lat", "date", "nsp", "soil_order"])
        for i in range(n):
            nsp = int(np.sin(x[i] / 700.0) > 0)
            out.writerow([f"syn{i:03d}", f"{lon[i]:.6f}", f"{lat[i]:.6f}", "2015-07-01", nsp,
                          orders[(i + nsp) % 3]])  # fmt: skip


def make_real_project(root: Path, server: LoopbackServer, tile_px: int, urls: dict) -> (
    WorkflowProject
):
    """The fairbanks region file with the services' URLs on the loopback server, shrunk."""
    bounds = area()
    regions = root / "config" / "regions"
    regions.mkdir(parents=True, exist_ok=True)
    settings = read_yaml(REPO / "config" / "regions" / f"{REGION}.yaml")
    boundary = regions / f"{REGION}.geojson"
    boundary.write_text(json.dumps(square_boundary(*bounds)))
    sources = settings["sources"]
    sources["sentinel2"].update(api=urls["stac"], block_px=64)
    sources["dem"]["url_template"] = server.base_url + THREEDEP_TEMPLATE
    sources["dem"]["fallback_templates"] = [server.base_url + THREEDEP2_TEMPLATE]  # unused
    sources["climate"].update(first_year=PERIOD[0], last_year=PERIOD[-1])
    for variable, url in urls["climate"].items():
        sources["climate"]["archives"][variable]["url"] = url
    sources["observations"]["path"] = str(root / "resources" / REGION / "observations.csv")
    settings.update(
        boundary=str(boundary), tile_px=tile_px, zones=[],
        stack={"halo_px": 32, "hydro_block_px": 128, "hydro_halo_px": 64},
        model={"size": "demo", "satlas_weights": urls["weights"]},
        training=TRAINING, evaluation=EVALUATION,
        prediction={"crop_px": 32, "stride_px": 16, "sigma_scale": 0.125},
    )  # fmt: skip
    region_file = regions / f"{REGION}.yaml"
    region_file.write_text(yaml.safe_dump(settings, sort_keys=False))
    config = write_config(root / "config" / "config.yaml", {REGION: region_file})
    table = root / "resources" / REGION / "observations.csv"
    table.parent.mkdir(parents=True, exist_ok=True)
    write_observations(table, bounds)
    tiles = load_region(load_config(config), REGION).tiles()
    return WorkflowProject(root, REGION, tile_px, tiles, project_env())


@pytest.fixture(scope="module")
def real_site(tmp_path_factory: pytest.TempPathFactory):
    """The loopback server with every service, and the project at 128 px tiles run to its maps;
    a second project at 64 px tiles run to its stacks."""
    base = tmp_path_factory.mktemp("real")
    bounds = area()
    with LoopbackServer() as server:
        stac = serve_scenes(server, bounds)
        weights = satlas_layout(SwinEncoder(ModelConfig.named("demo"), 9), base / "w.pth")
        urls = {
            "stac": stac.url,
            "climate": serve_archives(server, bounds),
            "weights": server.add_file(WEIGHTS, weights.read_bytes()),
        }
        project = make_real_project(base / "p128", server, 128, urls)
        region = load_region(load_config(project.config), REGION)
        cells = sorted({c for cs in region_cells(region).values() for c in cs})
        written = [write_3dep(base / "cells", Cell.parse(c)) for c in cells]
        serve(server, base / "cells", written)
        run = run_snakemake(project, *project.maps(), extra_args=tiny_local_args(),
                            timeout=2400, check=False)  # fmt: skip
        project.path("run.log").write_text(run.log)
        run.check()
        small = make_real_project(base / "p64", server, 64, urls)
        run_snakemake(small, *[small.stack(t) for t in small.tiles],
                      extra_args=tiny_local_args(), timeout=1200)  # fmt: skip
        yield {"project": project, "small": small, "server": server, "cells": cells,
               "files": written, "stac": stac}  # fmt: skip


@pytest.mark.slow
@pytest.mark.workflow
def test_the_region_runs_from_the_services_to_its_maps(real_site: dict) -> None:
    project = real_site["project"]
    for name in project.maps():
        valid, errors, _ = cog_validate(str(project.path(name)))
        assert valid, (name, errors)
    with rasterio.open(project.path(f"maps/nsp_{REGION}.tif")) as src:
        counts = src.read(1)
    assert (counts != 255).mean() > 0.95
    lock = json.loads(project.path(f"config/regions/{REGION}.lock.json").read_text())["files"]
    server = real_site["server"]
    for cell in real_site["cells"]:
        c = Cell.parse(cell)
        url = server.base_url + THREEDEP_TEMPLATE.format(**c.fields())
        assert lock[url]["sha256"], url
    assert {server.url(WEIGHTS), *(a for a in lock if a.endswith(".zip"))} <= set(lock)
    assert len([u for u in lock if u.endswith(".zip")]) == 3
    searches = real_site["stac"].searches
    assert searches and all(s["method"] == "POST" for s in searches)
    checks = {i["id"]: i["offset_check"]
              for path in project.path(f"resources/{REGION}/sources/sentinel2").glob("*.json")
              for block in json.loads(path.read_text())["stac_blocks"].values() for i in block}
    assert checks["S2B_6WVC_20210704_0_L2A"] is None  # baseline 03.01: nothing to check
    for item in ("S2A_6WVC_20220712_0_L2A", "S2B_6WVC_20230801_0_L2A"):  # the lake: DN 100
        assert checks[item]["verdict"] == "harmonised" and checks[item]["dark_dn"] == 100, item
    log = "\n".join(p.read_text() for p in project.path("logs/train").glob("*.log"))
    assert "satellite encoder initialised from" in log


@pytest.mark.slow
@pytest.mark.workflow
def test_its_elevation_band_matches_gdalwarp_of_the_cells(
    real_site: dict, gdalwarp: str, tmp_path: Path
) -> None:
    project = real_site["project"]
    tile = project.tiles[0]
    with rasterio.open(project.path(project.stack(tile))) as src:
        elevation = src.read(STACK_BANDS.index("elevation") + 1)
        left, bottom, right, top = src.bounds
    out = tmp_path / "warped.tif"
    subprocess.run(
        [gdalwarp, "-q", "-t_srs", "EPSG:3338", "-te", str(left), str(bottom), str(right),
         str(top), "-tr", "10", "10", "-r", "cubic", "-et", "0", "-ot", "Float32",
         *map(str, real_site["files"]), str(out)],
        check=True,
    )  # fmt: skip
    with rasterio.open(out) as src:
        expected = src.read(1)
    assert np.isfinite(elevation).all()
    np.testing.assert_array_equal(elevation, expected)  # both exact transformers (-et 0)


@pytest.mark.slow
@pytest.mark.workflow
def test_its_composites_and_stacks_are_the_same_at_two_tile_sizes(real_site: dict) -> None:
    """Every 64 px tile's composite and stack equal, bit for bit, the same pixels of the 128 px
    tile that holds it."""
    big, small = real_site["project"], real_site["small"]
    assert len(small.tiles) == 4 * len(big.tiles)
    for folder in (f"resources/{REGION}/sources/sentinel2", f"results/{REGION}/stack"):
        for part in small.tiles:
            with rasterio.open(small.path(f"{folder}/{part}.tif")) as src:
                piece, bounds = src.read(), src.bounds
            x, y = (bounds.left + bounds.right) / 2, (bounds.bottom + bounds.top) / 2
            holder = next(t for t in big.tiles if contains(big.path(f"{folder}/{t}.tif"), x, y))
            with rasterio.open(big.path(f"{folder}/{holder}.tif")) as src:
                window = src.window(*bounds)
                whole = src.read(window=window)
            assert whole.shape == piece.shape
            np.testing.assert_array_equal(piece, whole, err_msg=f"{folder}/{part}")


def contains(path: Path, x: float, y: float) -> bool:
    with rasterio.open(path) as src:
        b = src.bounds
    return b.left < x < b.right and b.bottom < y < b.top
