"""Damaged copies of rasters, as a download cut short or a disk error leaves them."""

from __future__ import annotations

from pathlib import Path

import rasterio


def truncate(src: Path, dest: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


def zero_blocks(src: Path, dest: Path) -> Path:
    """A copy of a tiled GeoTIFF with the bytes of every data block overwritten (headers kept)."""
    data = bytearray(src.read_bytes())
    with rasterio.open(src) as ds:
        bh, bw = ds.block_shapes[0]
        for b in range(1, ds.count + 1):
            for r in range((ds.height + bh - 1) // bh):
                for c in range((ds.width + bw - 1) // bw):
                    offset = ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=b)
                    size = ds.get_tag_item(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=b)
                    if offset and size and int(size) > 8:
                        o = int(offset)
                        data[o:o + int(size)] = bytes([0xA5]) * int(size)
    dest.write_bytes(bytes(data))
    return dest
