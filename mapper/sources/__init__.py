"""Sources: how each region's inputs are obtained (demo synthesis, HTTP downloads, STAC)."""
