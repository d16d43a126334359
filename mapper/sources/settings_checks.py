"""The sources' settings checked when the config is read (:func:`mapper.config.resolve_config`),
so that a dry run names the region file, the key and the fix in one line rather than one failed
fetch job per tile, or a job that could never run."""

from __future__ import annotations

from pathlib import Path

from mapper.errors import ConfigError


def check_source_settings(settings: dict, origin: str | Path) -> None:
    """A region's ``sources`` against its ``tile_px`` and what each source's jobs take
    (``origin``: the region file, as error messages name it)."""
    from mapper.sources.exclusions import check_exclusion_keys

    _check_scene_blocks(settings, origin)
    _check_sources(settings, origin)
    check_exclusion_keys(settings, origin)


def _check_sources(settings: dict, origin: str | Path) -> None:
    """What a source's fetch job would refuse, checked when the config is read so that a dry run
    names the file and the key (not one failed job per tile): a STAC source's ``datetime``, a
    cells source's URL templates, a SNAP source's normal period; and what no job could take (a
    STAC source other than Sentinel-2, observations in several files)."""
    from mapper.sources.cells import Cell, cell_urls
    from mapper.sources.snap import period_years
    from mapper.sources.stac import parse_interval

    for name, source in settings["sources"].items():
        kind, key = source["kind"], f"{origin}: key 'sources.{name}"
        field = "datetime"
        # (a stac source other than Sentinel-2 has its own error below)
        if source.get("datetime") is not None and kind != "stac" and not (
                name == "sentinel2" and kind in ("file", "http")):
            raise ConfigError(
                f"{key}.datetime': only the sentinel2 source states a period (a stac search's, "
                "or the one a file or http composite covers); remove it"
                + (" (a demo composite is synthetic: it has none)" if kind == "demo" else "")
            )
        try:
            # a STAC search's period, or the period a composite of another kind states (the
            # products' STAC Items carry it)
            if kind == "stac" or source.get("datetime") is not None:
                parse_interval(source["datetime"])
            if kind == "snap":
                field = "first_year/last_year"
                period_years(source)
        except ConfigError as exc:
            raise ConfigError(f"{key}.{field}': {exc}") from None
        if kind == "cells":
            cell_urls(source, Cell(64, -148), f"{origin}: sources.{name}")
        if kind == "stac" and "harmonized" not in source:
            raise ConfigError(
                f"{key}.harmonized': not set; say whether the collection's files have the "
                "processing-baseline 04.00 offset removed: true for Earth Search's "
                "sentinel-2-l2a, false for DNs as ESA delivers them (sentinel-2-c1-l2a)"
            )
        if kind == "stac" and name != "sentinel2":
            raise ConfigError(
                f"{key}.kind': stac makes per-tile Sentinel-2 composites, which only the "
                f"sentinel2 source is; give {name} kind file, http"
                + (" or cells" if name == "dem" else "")
            )
    observations = settings["sources"]["observations"]
    if len(observations.get("files", [])) > 1:
        raise ConfigError(
            f"{origin}: key 'sources.observations.files': {len(observations['files'])} files, "
            "but the observations are one table (CSV or Parquet); join them into one file"
        )


def _check_scene_blocks(settings: dict, origin: str | Path) -> None:
    """A STAC Sentinel-2 source's scene-selection blocks must tile each tile exactly."""
    s2 = settings["sources"]["sentinel2"]
    if s2["kind"] == "stac" and settings["tile_px"] % s2["block_px"]:
        raise ConfigError(
            f"{origin}: key 'sources.sentinel2.block_px': {s2['block_px']} does not divide "
            f"tile_px {settings['tile_px']}; set it to a divisor of tile_px"
        )
