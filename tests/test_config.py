"""Tests of mapper.config: the shipped config and regions validate, defaults are filled, and a bad
file gives a one-line ConfigError naming the file and the key.

Bad files are written to tmp_path from copies of the shipped ones, so each test changes one thing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import shapely
import tiny_region
import yaml
from pyproj import Transformer

from mapper.config import (
    DEFAULT_CONFIG,
    load_config,
    load_region,
    read_boundary,
    read_yaml,
    resolve_config,
    write_run_config,
)
from mapper.errors import ConfigError
from mapper.schema import validate

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "config" / "config.yaml"


@pytest.fixture(autouse=True)
def at_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Region and boundary paths in the shipped config are relative to the project root."""
    monkeypatch.chdir(ROOT)


def shipped_region(name: str) -> dict:
    with open(ROOT / "config" / "regions" / f"{name}.yaml") as f:
        return yaml.safe_load(f)


def write_config(tmp_path: Path, region: dict, name: str = "demo") -> Path:
    """A config file whose region ``name`` is ``region``, written to tmp_path/<name>.yaml."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(region))
    return tiny_region.write_config(tmp_path / "config.yaml", {name: path})


def schema_defaults(section: str) -> dict:
    """What the region schema fills into ``section`` when a region leaves it out."""
    minimal = {"description": "x", "boundary": "x.geojson", "tile_px": 256, "sources": {}}
    for src in ("sentinel2", "dem", "climate", "observations"):
        minimal["sources"][src] = {"kind": "file", "path": "x"}
    return validate(minimal, "region.schema.yaml", "minimal")[section]


# -- the shipped files --------------------------------------------------------------------------
def test_shipped_config_and_regions_validate() -> None:
    config = load_config(CONFIG)
    assert set(config["regions"]) == {"demo", "alaska", "fairbanks"}
    assert config["grid"] == {
        "crs": "EPSG:3338",
        "res": 10.0,
        "origin": [-2600000.0, 2600000.0],
    }
    demo = load_region(config, "demo")
    assert demo.synthetic and demo.lattice.tile_px == demo.settings["tile_px"]
    assert len(demo.tiles()) == 16
    alaska = load_region(config, "alaska")
    assert not alaska.synthetic and alaska.lattice.tile_px == 4096
    assert alaska.boundary().geom_type == "MultiPolygon"
    assert len(alaska.tiles()) > 1000
    fairbanks = load_region(config, "fairbanks")
    assert not fairbanks.synthetic and len(fairbanks.tiles()) == 4
    for name in ("sentinel2", "dem", "climate"):  # the statewide sources, exactly
        assert fairbanks.settings["sources"][name] == alaska.settings["sources"][name]


def test_alaska_sources_are_real() -> None:
    sources = load_region(load_config(CONFIG), "alaska").settings["sources"]
    s2 = sources["sentinel2"]
    assert s2["kind"] == "stac" and s2["api"] == "https://earth-search.aws.element84.com/v1"
    assert s2["collection"] == "sentinel-2-l2a" and s2["datetime"] == "2019-06-01/2023-08-31"
    assert s2["months"] == [6, 7, 8] and s2["max_cloud"] == 40
    assert {sources[s]["kind"] for s in sources} <= {"stac", "http", "file", "snap", "cells"}
    # elevation: USGS 3DEP 1 arc-second cells, named by their north-west corner; where 1" has
    # no file, 3DEP 2" (Alaska), then Copernicus GLO-30
    tnm = "https://prd-tnm.s3.amazonaws.com/StagedProducts/Elevation"
    assert sources["dem"] == {
        "kind": "cells",
        "url_template": f"{tnm}/1/TIFF/current/{{n}}{{w}}/USGS_1_{{n}}{{w}}.tif",
        "fallback_templates": [
            f"{tnm}/2/TIFF/historical/{{n}}{{w}}/USGS_2_{{n}}{{w}}_{{date}}.tif",
            "https://copernicus-dem-30m.s3.amazonaws.com/Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM/"
            "Copernicus_DSM_COG_10_{S}_00_{W}_00_DEM.tif",
        ],
    }  # climate: tests/test_sources_climate.py
    assert sources["observations"]["path"] == "resources/alaska/sources/observations.csv"


def test_defaults_are_filled() -> None:
    config = load_config(CONFIG)
    demo = load_region(config, "demo").settings
    # demo.yaml leaves these out: the schema's defaults are filled in
    assert demo["training"]["seed"] == 0
    assert demo["training"]["pretrain"] is True
    assert demo["stack"]["tpi_radius_m"] == 100.0
    assert demo["model"]["satlas_weights"] is None
    assert demo["evaluation"]["folds"] == 5
    assert demo["evaluation"]["splits"] == ["random", "sh1km", "sh10km"]
    assert demo["prediction"]["out_res"] == 10.0
    # and what it sets is kept
    raw = shipped_region("demo")
    assert demo["training"]["crop_px"] == raw["training"]["crop_px"] != schema_defaults("training")[
        "crop_px"
    ]
    assert demo["model"]["size"] == "demo"
    # a config without a grid section gets the lattice's defaults
    assert (
        validate({"regions": {"a": "a.yaml"}}, "config.schema.yaml", "x")["grid"]
        == (config["grid"])
    )


def test_alaska_uses_the_reference_settings() -> None:
    """The statewide region spells out the schema's defaults (the reference settings), but for
    the prediction mode (bfloat16 implicit queries, min_weight 0.02) and the aspect's
    components (README)."""
    alaska = load_region(load_config(CONFIG), "alaska").settings
    raw = shipped_region("alaska")
    # the reference starts the satellite encoder from SatlasPretrain (fetched by the workflow)
    satlas = "https://huggingface.co/allenai/satlas-pretrain/resolve/main/sentinel2_swinb_si_ms.pth"
    assert alaska["model"]["satlas_weights"] == raw["model"]["satlas_weights"] == satlas
    for section in ("stack", "model", "training", "evaluation", "prediction"):
        defaults = schema_defaults(section)
        if section == "model":  # the aspect's components (README "The model: aspect as ...")
            assert defaults["aspect"] == "number"
            defaults = {**defaults, "satlas_weights": satlas, "aspect": "components"}
        if section == "prediction":  # the fast mode; a region that says nothing is exact
            assert defaults["precision"] == "float32" and defaults["min_weight"] == 0.0
            defaults = {**defaults, "precision": "bfloat16", "min_weight": 0.02}
        assert alaska[section] == defaults, section
        assert raw[section] == defaults, f"{section} is not written out in full"
    assert alaska["model"]["size"] == "swinv2_b"


def test_settings_are_independent_copies() -> None:
    """Filling defaults never shares a mutable default between two loads."""
    config = load_config(CONFIG)
    a = load_region(config, "demo").settings
    a["evaluation"]["splits"].append("random")
    b = load_region(config, "demo").settings
    assert b["evaluation"]["splits"] == ["random", "sh1km", "sh10km"]


# -- errors ------------------------------------------------------------------------------------
def test_unknown_top_level_key(tmp_path: Path) -> None:
    region = shipped_region("demo")
    region["tile_pxx"] = 256
    config = write_config(tmp_path, region)
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    message = str(exc.value)
    assert str(tmp_path / "demo.yaml") in message and "'tile_pxx'" in message
    assert "\n" not in message


def test_unknown_nested_key(tmp_path: Path) -> None:
    region = shipped_region("demo")
    region["training"]["epochz"] = 3
    config = write_config(tmp_path, region)
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    message = str(exc.value)
    assert str(tmp_path / "demo.yaml") in message
    assert "training" in message and "'epochz'" in message
    assert "\n" not in message


def test_unknown_key_in_config(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"gird": {"res": 10.0}, "regions": {"demo": "x.yaml"}}))
    with pytest.raises(ConfigError, match=r"config\.yaml.*'gird'"):
        load_config(path)
    path.write_text(yaml.safe_dump({"grid": {"resolution": 10.0}, "regions": {"d": "x.yaml"}}))
    with pytest.raises(ConfigError, match=r"config\.yaml: key 'grid'.*'resolution'"):
        load_config(path)


@pytest.mark.parametrize(
    "section, key, value, expected",
    [
        (None, "tile_px", "big", "tile_px"),
        ("training", "batch_size", "32", "training.batch_size"),
        ("evaluation", "splits", "random", "evaluation.splits"),
        ("model", "size", "huge", "model.size"),
        ("training", "seed", -1, "training.seed"),  # numpy's and sklearn's seeds: 0 .. 2^32 - 1
        ("evaluation", "rf_max_depth", 0, "evaluation.rf_max_depth"),
        ("evaluation", "folds", 128, "evaluation.folds"),  # the folds' columns are int8
        ("training", "unlabelled_fraction", 1, "training.unlabelled_fraction"),  # no labelled crop
        (None, "description", "", "description"),  # a STAC Item's description is never empty
    ],
)
def test_wrong_type_or_value(
    tmp_path: Path, section: str | None, key: str, value: object, expected: str
) -> None:
    region = shipped_region("demo")
    (region if section is None else region.setdefault(section, {}))[key] = value
    config = write_config(tmp_path, region)
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    message = str(exc.value)
    assert f"key '{expected}'" in message and str(tmp_path / "demo.yaml") in message
    assert "\n" not in message


def test_missing_required_source(tmp_path: Path) -> None:
    region = shipped_region("demo")
    del region["sources"]["dem"]
    config = write_config(tmp_path, region)
    with pytest.raises(ConfigError, match=r"key 'sources'.*'dem' is a required property"):
        load_config(config)


def test_scene_blocks_must_divide_the_tile(tmp_path: Path) -> None:
    region = shipped_region("alaska")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["tile_px"] = 1536  # 1.5 blocks of 1024 px
    config = write_config(tmp_path, region, name="alaska")
    with pytest.raises(ConfigError) as exc:
        load_config(config)
    message = str(exc.value)
    assert str(tmp_path / "alaska.yaml") in message and "\n" not in message
    assert "key 'sources.sentinel2.block_px': 1024 does not divide tile_px 1536" in message


@pytest.mark.parametrize(
    ("source", "key", "value", "expected"),
    [
        ("sentinel2", "datetime", "2019-06-01 to 2023-08-31",
         "key 'sources.sentinel2.datetime': datetime '2019-06-01 to 2023-08-31': expected a "
         "closed ISO interval"),
        ("sentinel2", "datetime", "2023-08-31/2019-06-01", "the end is before the start"),
        ("climate", "first_year", 2011,
         "key 'sources.climate.first_year/last_year': climate normal period 2011-2010: last_year "
         "precedes first_year"),
        ("dem", "url_template", "https://x/{north}{w}.tif",
         "sources.dem.url_template: url_template field(s) {north} unknown"),
        ("dem", "fallback_templates", ["https://x/{w}.tif"],
         "sources.dem.fallback_templates[0]: url_template 'https://x/{w}.tif' must name the cell"),
    ],
    ids=["datetime", "datetime-reversed", "period", "template", "fallback"],
)
def test_source_settings_a_fetch_would_refuse_stop_the_plan(
    tmp_path: Path, source: str, key: str, value: object, expected: str
) -> None:
    """Checked when the config is read (a dry run), not in each fetch job of the state."""
    region = shipped_region("alaska")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["sources"][source][key] = value
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="alaska"))
    message = str(exc.value)
    assert str(tmp_path / "alaska.yaml") in message and "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize(
    ("source", "settings", "expected"),
    [
        ("dem", {"kind": "stac"}, "key 'sources.dem.kind': stac makes per-tile Sentinel-2 "
         "composites, which only the sentinel2 source is; give dem kind file, http or cells"),
        ("observations", {"kind": "stac"}, "give observations kind file, http"),
        ("observations", {"kind": "http", "files": [{"url": f"https://x/{n}.csv"} for n in "ab"]},
         "key 'sources.observations.files': 2 files, but the observations are one table (CSV or "
         "Parquet); join them into one file"),
    ],
    ids=["stac-dem", "stac-observations", "observations-in-two-files"],
)
def test_sources_no_job_could_take_stop_the_plan(tmp_path: Path, source: str, settings: dict,
                                                 expected: str) -> None:
    """The samples command takes one observation table, and only Sentinel-2 is fetched by STAC:
    said when the config is read, not by a missing rule or a table read as a stack."""
    region = shipped_region("alaska")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["sources"][source] = {**region["sources"]["sentinel2"], **settings}
    if settings["kind"] == "http":
        region["sources"][source] = settings
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="alaska"))
    message = str(exc.value)
    assert str(tmp_path / "alaska.yaml") in message and "\n" not in message
    assert expected in message, message


@pytest.mark.parametrize(
    ("where", "key", "value", "expected"),
    [
        ("sentinel2", "harmonized", False, "key 'sources.sentinel2.harmonized': a source of kind "
         "file does not read it (only kind stac does); remove it, or give the source that kind"),
        ("dem", "months", [6, 7], "key 'sources.dem.months': a source of kind file does not read "
         "it (only kind stac does)"),
        ("climate", "url_template", "https://x/{n}{w}.tif", "key 'sources.climate.url_template': "
         "a source of kind file does not read it (only kind cells does)"),
        ("observations", "seed", 1, "key 'sources.observations.seed': a source of kind file does "
         "not read it (only kind demo does)"),
        ("zone", "path", "zones.geojson", "key 'zones[0].path' (layer 'mlra'): a zone layer of "
         "kind http does not read it (only kind file does); remove it, or give the layer that "
         "kind"),
    ],
    ids=["harmonized-on-file", "months-on-file", "template-on-file", "seed-on-file",
         "path-on-http-zone"],
)
def test_a_key_its_source_kind_does_not_read_stops_the_plan(
        tmp_path: Path, where: str, key: str, value: object, expected: str) -> None:
    """The schema describes one source of any kind; a key of another kind (harmonized: false on
    a composite given as a file) would be read by nothing, and the user would not know."""
    region = shipped_region("alaska")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    for name in ("sentinel2", "dem", "climate", "observations"):
        region["sources"][name] = {"kind": "file", "path": f"{name}.tif"}
    region["zones"] = [{"name": "mlra", "kind": "http", "field": "MLRARSYM",
                        "files": [{"url": "https://x/MLRA_52_2022.zip"}]}]
    load_config(write_config(tmp_path, region, name="alaska"))  # valid as it is
    target = region["zones"][0] if where == "zone" else region["sources"][where]
    target[key] = value
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="alaska"))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'alaska.yaml'}: ") and "\n" not in message
    assert expected in message, message


def test_a_stac_source_must_say_whether_its_files_are_harmonized(tmp_path: Path) -> None:
    """A default would be wrong for one catalog or another (Earth Search's sentinel-2-l2a has the
    offset removed, Planetary Computer's collection of that name keeps it): 0.1 of reflectance
    off in every item of 2022 on, without a word."""
    region = shipped_region("alaska")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    del region["sources"]["sentinel2"]["harmonized"]
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="alaska"))
    assert str(exc.value) == (
        f"{tmp_path / 'alaska.yaml'}: key 'sources.sentinel2.harmonized': not set; say whether "
        "the collection's files have the processing-baseline 04.00 offset removed: true for "
        "Earth Search's sentinel-2-l2a, false for DNs as ESA delivers them (sentinel-2-c1-l2a)")


def test_finetune_epochs_per_task(tmp_path: Path) -> None:
    """One number for every task, or one per task of the registry; a mapping that misses a task
    or names an unknown one is one error naming the file and the key."""
    from mapper.tasks import TASKS
    from mapper.training_settings import finetune_epochs

    region = shipped_region("demo")
    region["training"]["finetune_epochs"] = {"nsp": 16, "soilorder": 24}
    training = load_region(load_config(write_config(tmp_path, region)), "demo").settings[
        "training"]
    assert [finetune_epochs(training, t) for t in ("nsp", "soilorder")] == [16, 24]
    assert finetune_epochs({"finetune_epochs": 7}, "nsp") == 7
    for bad in ({"nsp": 16}, {"nsp": 16, "soilorder": 24, "ph": 3}):
        region["training"]["finetune_epochs"] = bad
        with pytest.raises(ConfigError) as exc:
            load_config(write_config(tmp_path, region))
        message = str(exc.value)
        assert str(tmp_path / "demo.yaml") in message and "\n" not in message
        assert "key 'training.finetune_epochs'" in message and ", ".join(TASKS) in message
    region["training"]["finetune_epochs"] = {"nsp": 0, "soilorder": 24}
    with pytest.raises(ConfigError, match="finetune_epochs"):
        load_config(write_config(tmp_path, region))


@pytest.mark.parametrize(("change", "message"), [
    ({"random_points": 0, "grid_points": 0},
     "keys 'training.random_points' and 'training.grid_points' are both 0, which leaves "
     "pretraining and every crop without a labelled point no query point; set one of them to at "
     "least 1 (the reference: 16 and 16)"),
    ({"grid_points": 8}, "key 'training.grid_points' (8) is not a square number: the grid "
     "queries are a k x k lattice of cell centres over the crop, and a partial last row would "
     "leave a corner unqueried; give 4 or 9"),
    ({"lr_min": 1e-3}, "key 'training.lr_min' (0.001) is above 'training.lr_max' (0.0005), the "
     "schedule's peak; set it to at most 0.0005"),
    ({"warmup_lr": 1e-3}, "key 'training.warmup_lr' (0.001) is above 'training.lr_max' "
     "(0.0005), the schedule's peak; set it to at most 0.0005"),
])
def test_training_settings_the_schedule_or_the_crops_cannot_use(
        tmp_path: Path, change: dict, message: str) -> None:
    """Both point counts 0 would stop pretraining at its first step with a PyTorch error; a floor
    or warm-up above the peak would make the schedule rise without a word."""
    region = shipped_region("demo")
    assert region["training"]["lr_max"] == 5.0e-4
    region["training"].update(change)
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region))
    assert str(exc.value) == f"{tmp_path / 'demo.yaml'}: {message}"
    region["training"].update({"random_points": 1} if change.get("grid_points") == 0 else
                              {"grid_points": 9} if "grid_points" in change else
                              {"lr_max": 1e-3})
    load_config(write_config(tmp_path, region))  # one query point, or the peak raised, will do


def test_two_zone_layers_of_one_name_are_refused(tmp_path: Path) -> None:
    """A layer's name is its file and its key in the reports: a second layer of the same name
    would vanish from them, the first shown twice."""
    region = shipped_region("demo")
    assert region["zones"], "the demo has zone layers"
    region["zones"] = [region["zones"][0], {**region["zones"][0], "title": "Another"}]
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region))
    assert str(exc.value) == (
        f"{tmp_path / 'demo.yaml'}: zones: the name {region['zones'][0]['name']} is given to "
        "more than one layer; give each layer its own name")
    region["zones"][1]["name"] = "another"
    load_config(write_config(tmp_path, region))


def test_training_settings_files_hold_each_tasks_epochs_apart() -> None:
    """The settings files of the training section: every key but the epochs in ``training``, and
    each task's epochs in its own file, the same whether the epochs are one number or per task."""
    from mapper.tasks import TASKS
    from mapper.training_settings import training_sections

    training = load_region(load_config(CONFIG), "demo").settings["training"]
    sections = training_sections(training)
    assert set(sections) == {"training", *(f"finetune_{t}" for t in TASKS)}
    assert "finetune_epochs" not in sections["training"]
    assert {k: v for k, v in training.items() if k != "finetune_epochs"} == sections["training"]
    assert sections["finetune_nsp"] == {"epochs": 12}
    assert sections["finetune_soilorder"] == {"epochs": 24}
    same = training_sections({**training, "finetune_epochs": 24})
    assert same["training"] == sections["training"]
    assert same["finetune_soilorder"] == sections["finetune_soilorder"]
    assert same["finetune_nsp"] == {"epochs": 24}


def test_missing_boundary_file(tmp_path: Path) -> None:
    region = shipped_region("demo")
    region["boundary"] = str(tmp_path / "nowhere.geojson")
    loaded = load_region(load_config(write_config(tmp_path, region)), "demo")
    for call in (loaded.boundary, loaded.tiles):
        with pytest.raises(ConfigError, match=r"nowhere\.geojson: boundary file not found"):
            call()


def test_missing_or_broken_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"absent\.yaml: config file not found"):
        load_config(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [demo\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml, line 2, column 1: not valid YAML "
                                          r"\(ParserError: expected ',' or '\]'"):
        load_config(bad)
    tab = tmp_path / "tab.yaml"  # a tab where YAML wants spaces: the line and the character
    tab.write_text("regions:\n\tdemo: regions/demo.yaml\n")
    with pytest.raises(ConfigError, match=r"tab\.yaml, line 2, column 1: not valid YAML "
                                          r"\(ScannerError: found character '\\t'"):
        load_config(tab)
    broken = tmp_path / "broken.geojson"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ConfigError, match=r"broken\.geojson: not a readable GeoJSON"):
        read_boundary(broken)
    # a region file saved in cp1252, a folder given for a file, a shapefile given as a boundary
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("description: Tanana valley \u2013 Fairbanks\n".encode("cp1252"))
    with pytest.raises(ConfigError, match=r"latin\.yaml: not UTF-8 text; save it as UTF-8$"):
        load_config(latin)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: not a readable file"):
        load_config(tmp_path)
    shapefile = tmp_path / "alaska.shp"
    shapefile.write_bytes(b"\x00\x00\x27\x0a" + bytes(range(256)) * 4)  # a .shp header's code
    with pytest.raises(ConfigError, match=r"alaska\.shp: not UTF-8 GeoJSON; convert it: "
                                          r"ogr2ogr -f GeoJSON -t_srs EPSG:4326 boundary\.geojson"):
        read_boundary(shapefile)


def test_unknown_region() -> None:
    with pytest.raises(ConfigError, match=r"region 'yukon' is not in config.*alaska, demo"):
        load_region(load_config(CONFIG), "yukon")


# -- overrides and the run's configuration ------------------------------------------------------
def raw_config() -> dict:
    """The shipped config.yaml as Snakemake holds it before any validation."""
    return yaml.safe_load(CONFIG.read_text())


def test_a_number_written_as_an_int_or_a_float_is_the_same_setting() -> None:
    """10 and 10.0 are one setting (the params Snakemake compares, the run's file, the code that
    reads it): each number takes its schema type, lists and per-task maps included."""
    raw = raw_config()
    raw["grid"] = {"crs": "EPSG:3338", "res": 10, "origin": [-2600000, 2600000]}
    raw["region_overrides"] = {"demo": {
        "tile_px": 256.0, "prediction": {"out_res": 20, "sigma_scale": 1},
        "stack": {"tpi_radius_m": 100}, "training": {"finetune_epochs": {"nsp": 3.0}},
        "sources": {"sentinel2": {"kind": "stac", "api": "https://example.org/v1",
                                  "collection": "sentinel-2-l2a", "max_cloud": 40,
                                  "datetime": "2019-06-01/2023-08-31", "months": [6.0, 7],
                                  "block_px": 256, "harmonized": True}},
    }}
    config = resolve_config(raw, "site.yaml")
    demo = load_region(config, "demo").settings
    written = {"res": config["grid"]["res"], "origin": config["grid"]["origin"],
               "tile_px": demo["tile_px"], "out_res": demo["prediction"]["out_res"],
               "sigma_scale": demo["prediction"]["sigma_scale"],
               "tpi_radius_m": demo["stack"]["tpi_radius_m"],
               "epochs": demo["training"]["finetune_epochs"]["nsp"],
               "max_cloud": demo["sources"]["sentinel2"]["max_cloud"],
               "months": demo["sources"]["sentinel2"]["months"]}
    assert json.dumps(written) == json.dumps(
        {"res": 10.0, "origin": [-2600000.0, 2600000.0], "tile_px": 256, "out_res": 20.0,
         "sigma_scale": 1.0, "tpi_radius_m": 100.0, "epochs": 3, "max_cloud": 40.0,
         "months": [6, 7]})
    assert resolve_config(config, "again") == config
    # left out, the default (filled by the stac branch of the schema) is the same value
    del raw["region_overrides"]["demo"]["sources"]["sentinel2"]["max_cloud"]
    left_out = load_region(resolve_config(raw, "site.yaml"), "demo").settings
    assert json.dumps(left_out["sources"]["sentinel2"], sort_keys=True) == json.dumps(
        demo["sources"]["sentinel2"], sort_keys=True)
    with pytest.raises(ConfigError, match=r"key 'tile_px': 256.5 is not of type 'integer'"):
        resolve_config({**raw, "region_overrides": {"demo": {"tile_px": 256.5}}}, "site.yaml")


def test_paths_read_from_another_folder_say_where_they_are_read_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Paths are read from the folder a command runs in (the project's): a command run
    elsewhere, or a region entry with a typo, is told so, naming the entry."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert str(exc.value) == (f"config/config.yaml: not found in {tmp_path}; run from the "
                              "project's folder, or give the config with --config")
    site = tmp_path / "site.yaml"
    site.write_text("regions: {chena: config/regions/chen.yaml}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    assert str(exc.value) == (
        f"config/regions/chen.yaml: the region file of 'regions.chena' in {site} not found; "
        "check the path (read from the folder the command or Snakemake runs in: the project's)")


def test_region_overrides_are_merged_key_by_key() -> None:
    raw = raw_config()
    raw["region_overrides"] = {
        "demo": {"prediction": {"out_res": 20.0}, "evaluation": {"splits": ["sh10km"]}},
    }
    config = resolve_config(raw, "site.yaml")
    demo = load_region(config, "demo")
    shipped = load_region(load_config(CONFIG), "demo")
    assert demo.settings["prediction"] == {**shipped.settings["prediction"], "out_res": 20.0}
    assert demo.settings["evaluation"]["splits"] == ["sh10km"]  # a list is replaced whole
    assert demo.settings["training"] == shipped.settings["training"]
    assert demo.path == "config/regions/demo.yaml + region_overrides.demo of site.yaml"
    assert load_region(config, "alaska").path == "config/regions/alaska.yaml"
    assert raw["regions"]["demo"] == "config/regions/demo.yaml", "the input is not changed"


def test_an_override_of_another_kind_replaces_the_source_whole(tmp_path: Path) -> None:
    """A site file that gives the state's DEM as a file of the user's (a corrected DEM) or the
    Sentinel-2 composite as a file: the file's cells or STAC keys do not stay beside it (they
    would be refused as keys the kind does not read, and an override cannot remove a key)."""
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"region_overrides": {"alaska": {"sources": {
        "dem": {"kind": "file", "path": "/data/dem.vrt"},
        "sentinel2": {"kind": "file", "path": "/data/s2.vrt", "datetime": "2019-06-01/2023-08-31"},
        "climate": {"first_year": 1981},  # the same kind: merged key by key
    }}}}))
    sources = load_region(load_config([CONFIG, site]), "alaska").settings["sources"]
    assert sources["dem"] == {"kind": "file", "path": "/data/dem.vrt"}
    assert sources["sentinel2"] == {"kind": "file", "path": "/data/s2.vrt",
                                    "datetime": "2019-06-01/2023-08-31"}
    shipped = load_region(load_config(CONFIG), "alaska").settings["sources"]
    assert sources["climate"] == {**shipped["climate"], "first_year": 1981}


def test_a_bad_override_names_the_region_file_and_the_config() -> None:
    raw = raw_config()
    raw["region_overrides"] = {"demo": {"prediction": {"out_rez": 20.0}}}
    with pytest.raises(ConfigError) as exc:
        resolve_config(raw, "config.yaml + site.yaml")
    assert str(exc.value) == (
        "config/regions/demo.yaml + region_overrides.demo of config.yaml + site.yaml: key "
        "'prediction': Additional properties are not allowed ('out_rez' was unexpected); remove "
        "it or check its spelling"
    )
    raw["region_overrides"] = {"yukon": {"tile_px": 512}}
    with pytest.raises(ConfigError, match=r"^site\.yaml: key 'region_overrides\.yukon': no "
                       r"region 'yukon' in 'regions'; fix the name or add the region$"):
        resolve_config(raw, "site.yaml")


def test_a_site_file_on_its_own_says_to_give_the_config_first(tmp_path: Path) -> None:
    """Snakemake merges a site file over config/config.yaml; a command given only the site file
    (``--config site.yaml``) is told to give both, in that order."""
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"region_overrides": {"demo": {"tile_px": 512}}}))
    with pytest.raises(ConfigError) as exc:
        load_config(site)
    assert str(exc.value) == (
        f"{site}: no 'regions', only 'region_overrides': a site file is merged over a config; "
        f"give the config first: --config config/config.yaml --config {site}")
    assert load_region(load_config([CONFIG, site]), "demo").settings["tile_px"] == 512


def test_the_run_config_file_gives_back_the_same_regions(tmp_path: Path) -> None:
    """What a job loads from the written file is what the DAG was built from, value for value
    (the products record the settings as JSON: the same text)."""
    raw = raw_config()
    raw["region_overrides"] = {"demo": {"training": {"lr_max": 3.0e-4, "seed": 7}}}
    config = resolve_config(raw, "site.yaml")
    path = write_run_config(config, tmp_path / "runs")
    assert load_config(path) == config
    for name in ("demo", "alaska"):
        built, job = load_region(config, name), load_region(load_config(path), name)
        assert json.dumps(job.settings, sort_keys=True) == json.dumps(built.settings,
                                                                      sort_keys=True)
        assert (job.path, job.grid, job.lattice) == (built.path, built.grid, built.lattice)
    assert load_region(load_config(path), "demo").settings["training"]["lr_max"] == 3.0e-4


def test_the_run_config_file_is_named_by_its_content(tmp_path: Path) -> None:
    folder = tmp_path / "runs"
    config = load_config(CONFIG)
    first = write_run_config(config, folder)
    mtime = first.stat().st_mtime_ns
    assert write_run_config(load_config(CONFIG), folder) == first
    assert first.stat().st_mtime_ns == mtime, "an existing file is not written again"
    assert first.stat().st_mode & 0o044 == 0o044, "readable by the group, as every output"
    raw = raw_config()
    raw["region_overrides"] = {"demo": {"prediction": {"out_res": 20.0}}}
    second = write_run_config(resolve_config(raw, "site.yaml"), folder)
    assert second != first and first.read_text() != second.read_text()
    assert sorted(p.name for p in folder.iterdir()) == sorted([first.name, second.name])


def test_a_changed_region_file_does_not_reach_a_resolved_config(tmp_path: Path) -> None:
    region = shipped_region("demo")
    config_path = write_config(tmp_path, region)
    written = write_run_config(load_config(config_path), tmp_path / "runs")
    region["prediction"]["out_res"] = 80.0
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(region))
    assert load_region(load_config(written), "demo").settings["prediction"]["out_res"] == 10.0
    assert load_region(load_config(config_path), "demo").settings["prediction"]["out_res"] == 80.0


def test_schemas_are_package_data() -> None:
    from importlib.resources import files

    for name in ("config.schema.yaml", "region.schema.yaml"):
        assert (files("mapper") / "schemas" / name).is_file()
    assert not (ROOT / "workflow" / "schemas").exists()


# -- boundaries ----------------------------------------------------------------------------------
def test_boundary_crs_member_is_honoured(tmp_path: Path) -> None:
    """A boundary in EPSG:3338 (named by its crs member) is read as is; without one it is
    EPSG:4326 and projected, across 180 degrees too."""
    demo = read_boundary(ROOT / "config" / "regions" / "demo.geojson")
    assert demo.bounds == (241600.0, 1627200.0, 262080.0, 1647680.0)

    # an island cut at 180 degrees, one half written as +179.5..+180, the other as -180..-179.5
    halves = [
        [[179.5, 52.0], [180.0, 52.0], [180.0, 52.5], [179.5, 52.5], [179.5, 52.0]],
        [[-180.0, 52.0], [-179.5, 52.0], [-179.5, 52.5], [-180.0, 52.5], [-180.0, 52.0]],
    ]
    gj = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Polygon", "coordinates": [h]},
            }
            for h in halves
        ],
    }
    path = tmp_path / "island.geojson"
    path.write_text(json.dumps(gj))
    island = read_boundary(path)
    assert island.is_valid and island.geom_type == "Polygon"  # the halves joined at 180
    to_3338 = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    corner = shapely.Point(to_3338.transform(179.5, 52.0))
    assert island.distance(corner) < 1e-3  # read on a 1 mm grid
    assert island.bounds[2] - island.bounds[0] < 150_000  # about 70 km across, not wrapped

    # the same island written in EPSG:3338 and named so by the crs member is not projected again
    gj3338 = {
        "type": "Feature",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3338"}},
        "properties": {},
        "geometry": json.loads(shapely.to_geojson(island)),
    }
    path.write_text(json.dumps(gj3338))
    assert read_boundary(path).equals_exact(island, 1e-6)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[1, 2]", "not a GeoJSON object"),
        ('{"type": "FeatureCollection"}', "a FeatureCollection without a 'features' list"),
        ('{"type": "FeatureCollection", "features": []}', "no polygon with an area"),
        ('{"type": "Polygon", "coordinates": [[[-150, 64], [-149, 64]]]}',
         "not a valid GeoJSON geometry"),
        ('{"type": "Feature", "geometry": {"type": "Circle"}}', "not a valid GeoJSON geometry"),
        ('{"type": "LineString", "coordinates": [[-150, 64], [-149, 64]]}',
         "no polygon with an area"),
        ('{"type": "Polygon", "coordinates": [[[241600, 1627200], [262080, 1627200], '
         '[262080, 1647680], [241600, 1627200]]]}', "are not longitude and latitude"),
        ('{"type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:4269"}}, '
         '"coordinates": [[[241600, 1627200], [262080, 1627200], [262080, 1647680], '
         '[241600, 1627200]]]}', "latitude, and the file names EPSG:4269"),  # metres in degrees
        ('{"type": "Polygon", "crs": {"type": "name", "properties": {"name": "EPSG:99999"}}, '
         '"coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}', "names no CRS that PROJ knows"),
    ],
)
def test_a_malformed_boundary_is_one_error_naming_the_file(
    tmp_path: Path, content: str, expected: str
) -> None:
    """A boundary written by hand or by another tool: each mistake is one ConfigError that names
    the file and the fix, not a shapely or pyproj traceback at plan time."""
    path = tmp_path / "boundary.geojson"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        read_boundary(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
    assert "fix the file" in message or "EPSG:" in message


def test_a_boundary_with_a_stray_line_keeps_its_polygon(tmp_path: Path) -> None:
    square = [[-149.0, 64.0], [-148.9, 64.0], [-148.9, 64.05], [-149.0, 64.05], [-149.0, 64.0]]
    path = tmp_path / "boundary.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon",
                                                           "coordinates": [square]}},
        {"type": "Feature", "properties": {}, "geometry": {
            "type": "LineString", "coordinates": [[-150.0, 64.0], [-150.5, 64.0]]}},
    ]}))  # fmt: skip
    area = read_boundary(path)
    assert area.geom_type == "Polygon" and area.area > 1e7


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (lambda r: r["evaluation"].update(splits=[]), "evaluation.splits", "should be non-empty"),
        (lambda r: r["evaluation"].update(splits=["sh1km", "sh1km"]), "evaluation.splits",
         "non-unique"),
        (lambda r: r["sources"].update(dem={"kind": "http", "files": []}), "sources.dem.files",
         "should be non-empty"),
    ],
)
def test_lists_the_workflow_cannot_run_empty_are_refused(
    tmp_path: Path, change: Callable[[dict], None], key: str, words: str
) -> None:
    """An empty list of splits would plan a report of no fold, an empty list of files a stack of
    no DEM: both stop when the config is read, naming the file and the key."""
    region = shipped_region("demo")
    change(region)
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'demo.yaml'}: key '{key}': ") and words in message


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"months": []}, "months", "[] should be non-empty (stac: the months searched in every "
         "year of datetime (at least one))"),
        ({"max_cloud": 0}, "max_cloud", "0 is less than or equal to the minimum of 0 (stac: "
         "scenes with eo:cloud_cover below this percentage (above 0: a limit of 0 keeps no "
         "scene))"),
        # the value as the file writes it, not as typed for the check (0.0, 13)
        ({"max_cloud": 0.0}, "max_cloud", "0.0 is less than or equal to the minimum of 0"),
        ({"months": [6, 13.0]}, "months.1", "13.0 is greater than the maximum of 12"),
        ({"api": "earth-search.aws.element84.com/v1"}, "api",
         "'earth-search.aws.element84.com/v1' does not match '^https?://' (stac: STAC API root "
         "URL (http:// or https://))"),
    ],
)
def test_a_scene_search_that_can_find_nothing_is_refused(
    tmp_path: Path, change: dict, key: str, words: str
) -> None:
    """No month, a cloud limit of 0 or an API that is no URL would give every tile an empty
    composite (or fail in every tile's job): refused when the config is read."""
    region = shipped_region("fairbanks")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["sources"]["sentinel2"].update(change)
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="fairbanks"))
    where = tmp_path / "fairbanks.yaml"
    assert str(exc.value).startswith(f"{where}: key 'sources.sentinel2.{key}': {words}")


def test_a_stac_source_other_than_sentinel2_is_refused_for_its_kind_first(tmp_path: Path) -> None:
    region = shipped_region("fairbanks")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["sources"]["dem"] = {"kind": "stac", "api": "https://example.org/v1",
                                "collection": "cop-dem-glo-30", "datetime": "2021-01-01/2021-12-31"}
    with pytest.raises(ConfigError, match=r"key 'sources.dem.kind': stac makes per-tile "
                                          r"Sentinel-2 composites"):
        load_config(write_config(tmp_path, region, name="fairbanks"))


def test_a_boundary_in_degrees_follows_its_parallels(tmp_path: Path) -> None:
    """A GeoJSON edge is straight in longitude and latitude: a box given by its 4 corners keeps
    its 65 N parallel in EPSG:3338 (a chord between the corners would cut 350 m inside it)."""
    corners = [[-149.0, 64.0], [-147.0, 64.0], [-147.0, 65.0], [-149.0, 65.0], [-149.0, 64.0]]
    path = tmp_path / "box.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [corners]}))
    area = read_boundary(path)
    to_3338 = Transformer.from_crs("EPSG:4326", "EPSG:3338", always_xy=True)
    for lon in (-148.5, -148.0, -147.5):
        on_parallel = shapely.Point(to_3338.transform(lon, 65.0))
        assert area.exterior.distance(on_parallel) < 0.05, lon


def test_a_file_composites_stated_period_is_checked_and_is_the_products(tmp_path: Path) -> None:
    """A Sentinel-2 composite of kind file may state the period it covers (``datetime``, the
    products' STAC period): checked as a search's is, when the config is read."""
    from datetime import UTC, datetime

    from mapper.products.mosaic import source_period

    region = shipped_region("fairbanks")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    region["sources"]["sentinel2"] = {"kind": "file", "path": "composite.tif",
                                      "datetime": "2021-06-01/2021-08-31"}
    loaded = load_region(load_config(write_config(tmp_path, region, name="fairbanks")),
                         "fairbanks")
    assert source_period(loaded) == (datetime(2021, 6, 1, tzinfo=UTC),
                                     datetime(2021, 8, 31, 23, 59, 59, 999999, tzinfo=UTC))
    region["sources"]["sentinel2"]["datetime"] = "summer 2021"
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region, name="fairbanks"))
    assert str(exc.value) == (
        f"{tmp_path / 'fairbanks.yaml'}: key 'sources.sentinel2.datetime': datetime 'summer "
        "2021': expected a closed ISO interval 'start/end', e.g. 2019-06-01/2023-08-31; fix the "
        "source's 'datetime' in the region file")


@pytest.mark.parametrize(("source", "kind"), [("dem", "file"), ("sentinel2", "demo")])
def test_a_period_only_a_sentinel2_composite_can_state_is_refused(tmp_path: Path, source: str,
                                                                  kind: str) -> None:
    """``datetime`` would be read nowhere on another source, and a synthetic composite has no
    period: one line naming the key, not a setting silently ignored or stamped on products."""
    region = shipped_region("demo")
    region["boundary"] = str(Path(region["boundary"]).resolve())
    assert region["sources"][source]["kind"] == "demo"
    if kind == "file":
        region["sources"][source] = {"kind": "file", "path": "dem.tif"}
    region["sources"][source]["datetime"] = "2021-06-01/2021-08-31"
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, region))
    message = str(exc.value)
    assert message.startswith(f"{tmp_path / 'demo.yaml'}: key 'sources.{source}.datetime': only "
                              "the sentinel2 source states a period"), message
    assert message.endswith("(a demo composite is synthetic: it has none)") == (kind == "demo")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    """YAML readers keep the last of a key given twice, silently: a second ``training:`` section
    appended to a region file would drop the first whole (its crop size, epochs and rates back
    to the defaults). The file is refused with both lines instead, in a region file, a config
    file and nested mappings; a ``<<:`` merge overridden by a key is not a duplicate."""
    region = tmp_path / "twice.yaml"
    region.write_text(REGION_TWICE)
    with pytest.raises(ConfigError) as info:
        read_yaml(region)
    assert str(info.value) == (
        f"{region}, line 6: the key 'training' is given twice in one mapping (lines 2 and 6), "
        "and only the second would be read; merge the two into one (one region_overrides: key "
        "holds every region's overrides)")
    nested = tmp_path / "site.yaml"
    nested.write_text("region_overrides:\n  demo:\n    out_res: 20\n    out_res: 50\n")
    with pytest.raises(ConfigError, match=r"site\.yaml, line 4: the key 'out_res' is given "
                                          r"twice in one mapping \(lines 3 and 4\)"):
        load_config([DEFAULT_CONFIG, nested])
    merged = tmp_path / "merged.yaml"
    merged.write_text("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")
    assert read_yaml(merged) == {"base": {"x": 1, "y": 2}, "other": {"x": 3, "y": 2}}


REGION_TWICE = """# a region file with a section appended a second time
training:
  crop_px: 32
model:
  size: tiny
training:
  batch_size: 8
"""
