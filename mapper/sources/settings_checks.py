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

    _check_kind_keys(settings, origin)
    _check_scene_blocks(settings, origin)
    _check_sources(settings, origin)
    check_exclusion_keys(settings, origin)


KIND_KEYS: dict[str, frozenset[str]] = {
    "demo": frozenset({"seed"}),
    "file": frozenset({"path"}),
    "http": frozenset({"files"}),
    "stac": frozenset({
        "api", "collection", "months", "max_cloud", "max_items", "block_px", "harmonized",
        "check_offset", "exclude", "exclude_tile_px",
    }),
    "snap": frozenset({"archives", "first_year", "last_year"}),
    "cells": frozenset({"url_template", "fallback_templates"}),
}
"""The keys each source kind reads besides ``kind`` and ``datetime`` (which
:func:`_check_sources` checks). The region schema describes one source of any kind, so it
refuses only a key that no kind reads; a key of another kind is refused here."""

ZONE_KIND_KEYS: dict[str, frozenset[str]] = {
    "demo": frozenset(),
    "file": frozenset({"path", "layer"}),  # layer: the member of a zipped shapefile
    "http": frozenset({"files", "layer"}),
}
"""The keys each zone layer kind reads besides those every layer has (name, title, kind, field,
labels, synthetic)."""


def _check_kind_keys(settings: dict, origin: str | Path) -> None:
    """One :class:`ConfigError` for a source or zone-layer key that its kind does not read (a
    composite given as ``kind: file`` with ``harmonized: false`` would otherwise keep the offset
    it asks to remove, without a word)."""
    for name, source in settings["sources"].items():
        # exclude, exclude_tile_px: mapper.sources.exclusions.check_exclusion_keys says why
        own = KIND_KEYS[source["kind"]] | {"kind", "datetime", "exclude", "exclude_tile_px"}
        _refuse_keys_of_other_kinds(source, own, KIND_KEYS, f"{origin}: key 'sources.{name}",
                                    "a source", "the source")
    for i, layer in enumerate(settings.get("zones", [])):
        own = set(layer) - set().union(*ZONE_KIND_KEYS.values()) | ZONE_KIND_KEYS[layer["kind"]]
        _refuse_keys_of_other_kinds(layer, own, ZONE_KIND_KEYS, f"{origin}: key 'zones[{i}]",
                                    "a zone layer", "the layer", f" (layer {layer['name']!r})")


def _refuse_keys_of_other_kinds(section: dict, own: set[str] | frozenset[str],
                                kinds: dict[str, frozenset[str]], key: str, what: str,
                                it: str, named: str = "") -> None:
    """The first key of ``section`` not among ``own``: one error naming the kinds that read it."""
    for name in section:
        if name not in own:
            owners = " or ".join(sorted(k for k, keys in kinds.items() if name in keys))
            raise ConfigError(
                f"{key}.{name}'{named}: {what} of kind {section['kind']} does not read it (only "
                f"kind {owners} does); remove it, or give {it} that kind"
            )


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
        if kind == "stac" and name != "sentinel2":
            raise ConfigError(
                f"{key}.kind': stac makes per-tile Sentinel-2 composites, which only the "
                f"sentinel2 source is; give {name} kind file, http"
                + (" or cells" if name == "dem" else "")
            )
        if kind == "stac" and "harmonized" not in source:
            raise ConfigError(
                f"{key}.harmonized': not set; say whether the collection's files have the "
                "processing-baseline 04.00 offset removed: true for Earth Search's "
                "sentinel-2-l2a, false for DNs as ESA delivers them (sentinel-2-c1-l2a)"
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
