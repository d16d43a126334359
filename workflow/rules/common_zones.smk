# Input functions and wildcard constraints of the zone layers (rules in zones.smk; the reports'
# inputs in evaluate.smk). Included after common.smk, whose helpers they call.


# -- zone layers: the polygons the reports break the results down by (mapper/zones.py) --------
def region_zones(region):
    return REGIONS[region].settings.get("zones", [])


def zone_layer_path(region, name):
    """A prepared zone layer: EPSG:3338, one polygon per zone (what the report reads)."""
    return str(zone_layer_file(region, name))


def zone_layers(wildcards):
    """The region's prepared zone layers (inputs of its reports)."""
    return [zone_layer_path(wildcards.region, z["name"]) for z in region_zones(wildcards.region)]


def zone_layer_settings(wildcards):
    """One layer's entry: a change of field, file or labels prepares it again (params trigger)."""
    for entry in region_zones(wildcards.region):
        if entry["name"] == wildcards.layer:
            return entry
    names = ", ".join(e["name"] for e in region_zones(wildcards.region)) or "none"
    sys.exit(
        f"error: resources/{wildcards.region}/zones/{wildcards.layer}.geojson: region "
        f"'{wildcards.region}' has no zone layer '{wildcards.layer}' (its layers: {names}); "
        "ask for one of its layers, or add the layer to its 'zones'"
    )


def zone_layer_inputs(wildcards):
    """The file(s) a zone layer is prepared from, per its kind."""
    s = zone_layer_settings(wildcards)
    if s["kind"] == "demo":  # synthesized from the demo's climate (rule demo_zones)
        if wildcards.region not in SYNTHESIZED_REGIONS:
            sys.exit(
                f"error: zone layer '{wildcards.layer}' of region '{wildcards.region}' is of kind demo, "
                "which only a region whose sources are all of kind demo has; give it kind file "
                "or http in the region file"
            )
        return [demo_source(wildcards.region, "zones.geojson")]
    if s["kind"] == "file":
        return [
            local_file(
                s["path"],
                f"the file of zone layer '{wildcards.layer}' of region '{wildcards.region}'",
                wildcards.region,
            )
        ]
    return [
        f"resources/{wildcards.region}/zones/{wildcards.layer}/{http_file_name(f)}"
        for f in s["files"]
    ]


def zone_file_entry(wildcards):
    """The entry (URL, sha256) of the file of an http zone layer that the wildcards name: a
    params trigger, so that a new URL or checksum under the same file name downloads again."""
    for entry in zone_layer_settings(wildcards).get("files", []):
        if http_file_name(entry) == wildcards.filename:
            return entry
    raise ValueError(f"zone layer {wildcards.layer} has no file {wildcards.filename!r}")


def zone_layer_names():
    """Every zone layer name of any region (constrains the zone rules' wildcard)."""
    return one_of(sorted({z["name"] for r in REGIONS for z in region_zones(r)}))


def zone_file_names():
    """Every file name an http zone layer of any region downloads."""
    return one_of(
        sorted(
            {
                http_file_name(f)
                for r in REGIONS
                for z in region_zones(r)
                if z["kind"] == "http"
                for f in z["files"]
            }
        )
    )
