"""Map products of a region, the files a user opens: each task's predicted tiles mosaicked into
Cloud-Optimized GeoTIFFs with their colours, a quick-look PNG, a QGIS style and a STAC Item.

- :mod:`mapper.products.mosaic`: tiles -> products (:func:`make_products`);
- :mod:`mapper.products.provenance`: what every product says of how it was made;
- :mod:`mapper.products.cog`: the COG writer (blocks, compression, overviews);
- :mod:`mapper.products.colours`: colour tables and QGIS styles (.qml);
- :mod:`mapper.products.quicklook`: the PNG with legend;
- :mod:`mapper.products.stac`: the STAC Item, built and validated offline.
"""

from mapper.products.cog import PERCENT_NODATA
from mapper.products.mosaic import (
    Products,
    TileSet,
    check_tiles,
    make_products,
    product_paths,
)
from mapper.products.provenance import provenance_tags
from mapper.products.quicklook import write_quicklook

__all__ = [
    "PERCENT_NODATA",
    "Products",
    "TileSet",
    "check_tiles",
    "make_products",
    "product_paths",
    "provenance_tags",
    "write_quicklook",
]
