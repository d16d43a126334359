"""Damaged copies of rasters, as a download cut short or a disk error leaves them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import rasterio

FULL_DISK = ("import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
             "resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv.pop(1)), "
             "resource.getrlimit(resource.RLIMIT_FSIZE)[1])); "
             "runpy.run_module('mapper', run_name='__main__')")
"""``python -c FULL_DISK <bytes> <command> ...``: ``python -m mapper <command> ...`` where no file
may grow beyond <bytes> (RLIMIT_FSIZE: GDAL's writes fail as on a full disk)."""


def assert_one_write_failure(limit: int, args: list, cwd: Path, out: Path) -> None:
    """``python -m mapper <args>`` where no file may grow beyond ``limit`` bytes exits 1 with one
    error line, no traceback, naming ``out`` as the write that failed and the fix."""
    run = subprocess.run([sys.executable, "-c", FULL_DISK, str(limit), *map(str, args)],
                         capture_output=True, text=True, timeout=300, cwd=cwd,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {out}: write failed ("), run.stderr
    assert errors[0].endswith(f"; free disk space in {out.parent} (or make that folder "
                              "writable) and run the same target again")


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
