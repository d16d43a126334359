"""Sources: how a region's real inputs are obtained (HTTP downloads, STAC composites, manifests).

The demo region's synthetic sources are made by :mod:`mapper.demo`; :mod:`mapper.sources.fetch`
dispatches to it.
"""
