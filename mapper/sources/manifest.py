"""Source manifests: what a source's local files are, where they came from, and their checksums.

A manifest is a small JSON file written beside the files it describes::

    {
      "what": "mapper source manifest",
      "version": 1,
      "region": "alaska",
      "source": "dem",
      "kind": "http",                 # cells | demo | file | http | stac | snap
      "synthetic": false,             # true when the files are synthetic (demo)
      "created": "2026-01-01T00:00:00+00:00",
      "items": [
        {"url": "https://...", "path": "resources/alaska/sources/dem/a.tif",
         "size": 123, "sha256": "..."}
      ],
      ...                             # kind-specific keys (e.g. "tile", "stac")
    }

``items[].path`` is the local file (relative to the working directory when it was given so);
``url`` is where it came from (``http``, ``stac``) and is absent for local ``file`` sources.
``size`` is in bytes and ``sha256`` in lowercase hex; both may be null for a remote file that is
only read, never downloaded (a ``file`` source given as a URL). Manifests are written atomically.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mapper import __version__
from mapper.errors import InputError
from mapper.files import atomic_path

logger = logging.getLogger(__name__)

WHAT = "mapper source manifest"
VERSION = 1
KINDS = ("cells", "demo", "file", "http", "stac", "snap")
_REQUIRED = ("what", "region", "source", "kind", "synthetic", "items")


def make_manifest(
    region: str,
    source: str,
    kind: str,
    items: list[dict[str, Any]],
    *,
    synthetic: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A manifest dict (see the module docstring); ``extra`` keys are added at the top level."""
    if kind not in KINDS:
        raise ValueError(f"unknown source kind {kind!r} (expected one of {', '.join(KINDS)})")
    for item in items:
        if "path" not in item:
            raise ValueError(f"manifest item without a local 'path': {item}")
    manifest: dict[str, Any] = {
        "what": WHAT,
        "version": VERSION,
        "mapper_version": __version__,
        "region": region,
        "source": source,
        "kind": kind,
        "synthetic": bool(synthetic),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "items": [dict(item) for item in items],
    }
    clash = set(extra) & set(manifest)
    if clash:
        raise ValueError(f"extra manifest keys clash with the fixed ones: {sorted(clash)}")
    manifest.update(extra)
    return manifest


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``manifest`` as indented JSON to ``path`` atomically; return the path."""
    path = Path(path)
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing or manifest.get("what") != WHAT:
        raise ValueError(f"not a source manifest (missing {missing}); build it with make_manifest")
    text = json.dumps(manifest, indent=2, sort_keys=False) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    logger.debug("wrote manifest %s (%d items)", path, len(manifest["items"]))
    return path


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and check a manifest; InputError naming the file if it is missing or not a manifest."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(
            f"{path}: source manifest not found; run `python -m mapper fetch`"
        ) from None
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: unreadable source manifest ({exc}); delete it and fetch the source again"
        ) from None
    if not isinstance(manifest, dict) or manifest.get("what") != WHAT:
        raise InputError(f"{path}: not a mapper source manifest; delete it and fetch again")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise InputError(
            f"{path}: source manifest lacks {', '.join(missing)}; delete it and fetch again"
        )
    return manifest

