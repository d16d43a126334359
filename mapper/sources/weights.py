"""Pretrained weights given by URL (``model.satlas_weights``): where they are kept, and fetching.

``model.satlas_weights`` in a region file is a local path, a URL, or null (random start). A URL is
downloaded once by the workflow (rule ``fetch_weights``) to ``resources/weights/<file name>``
(:func:`weights_path`), checked against the region's lock file (:mod:`mapper.sources.lock`: the
weights are recorded at their first download, verified at every later one); training then reads
that local file, and checks it against its own region's lock file too
(:func:`checked_weights_sha256`), since regions giving the same URL share the one download. A
local path is used as it is.
"""

from __future__ import annotations

import zipfile
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from mapper.config import Region
from mapper.errors import ChangedError, ConfigError, InputError

WEIGHTS_DIR = Path("resources/weights")
"""Where weights given by URL are kept (relative to the working directory, the project root)."""


def is_url(value: str | None) -> bool:
    return bool(value) and urlsplit(str(value)).scheme in ("http", "https")


def weights_path(value: str | None) -> str | None:
    """The local file of ``model.satlas_weights``: ``resources/weights/<file name>`` for a URL,
    the value itself for a path, None for null."""
    if not is_url(value):
        return value
    name = PurePosixPath(urlsplit(str(value)).path).name
    if not name:
        raise ConfigError(f"model.satlas_weights {value!r}: the URL names no file; fix it")
    return str(WEIGHTS_DIR / name)


def weights_by_name(regions: dict[str, Region]) -> dict[str, str]:
    """Local file name (in ``resources/weights``) -> the first region whose
    ``model.satlas_weights`` is a URL of that name (whose lock file records it). Two different URLs
    of one file name would share one local file, and the second region would train on the
    first's download unchecked: ConfigError naming both regions. A region giving a URL needs a
    lock file (its training checks the shared copy against it): one read from no region file is
    a ConfigError too, when the workflow is parsed."""
    from mapper.sources.lock import lock_path

    regions_by_name: dict[str, str] = {}
    urls: dict[str, str] = {}
    for name, region in regions.items():
        url = region.settings["model"]["satlas_weights"]
        if not is_url(url):
            continue
        lock_path(region.path)  # every region pins them in its lock file: one beside its file
        file_name = Path(str(weights_path(url))).name
        first = regions_by_name.setdefault(file_name, name)
        if urls.setdefault(file_name, url) != url:
            raise ConfigError(
                f"{region.path}: model.satlas_weights {url} and region '{first}''s "
                f"{urls[file_name]} would both be kept as {WEIGHTS_DIR / file_name}; give the "
                "same URL, or download one yourself and give its local path"
            )
    return regions_by_name


def _check_torch_file(path: Path, url: str) -> None:
    """A torch checkpoint is a zip archive (torch.save since 1.6) or, older, a pickle (first byte
    0x80); anything else (an HTML error page, a truncated zip) is refused before its checksum is
    recorded."""
    from mapper.sources.http import download_target

    with open(path, "rb") as fh:
        legacy = fh.read(1) == b"\x80"
    if not (legacy or zipfile.is_zipfile(path)):
        raise InputError(
            f"{url} -> {download_target(path)}: not a torch checkpoint (neither a zip archive nor "
            "a pickle); check model.satlas_weights"
        )


def checked_weights_sha256(region: Region, path: str | Path) -> str:
    """The sha256 of the weights file at ``path`` that ``region`` trains from, checked against
    the region's lock file when the region gives its weights by URL.

    Regions that give the same URL share one downloaded file, fetched under the first such
    region's lock file (rule ``fetch_weights``); every other region's lock file is checked here,
    by every job that trains from the file: an entry that records other bytes is a
    ChangedError naming that lock file and the fix, and a lock file without an entry gets this
    file's (so it pins the weights from then on, as its own download would have)."""
    from mapper.files import file_sha256
    from mapper.sources.lock import LockFile, describe_entry, lock_path

    path = Path(path)
    digest = file_sha256(path)
    url = region.settings["model"]["satlas_weights"]
    if not is_url(url):
        return digest
    lock = LockFile(lock_path(region.path))
    got = {"sha256": digest, "size": path.stat().st_size}
    known = lock.get(url)
    if known is None:
        lock.record(url, got)
    elif known.get("absent") or known["sha256"].lower() != digest or known["size"] != got["size"]:
        raise ChangedError(
            f"{path}: region '{region.name}''s lock file {lock.path} pins {url} as "
            f"{describe_entry(known)}, but the copy here, shared by the regions giving that URL "
            f"and fetched under the first one's lock file, is {describe_entry(got)}: the file "
            f"changed upstream between the two pins; to train '{region.name}' on it, delete the "
            f"entry of {url} in {lock.path} and run again; to keep the weights it pinned, give "
            "it a local copy of them (model.satlas_weights: <path>)"
        )
    return digest


def fetch_weights(region: Region, out: str | Path) -> Path:
    """Download the region's ``model.satlas_weights`` URL to ``out``, verified against or recorded
    in the region's lock file; return ``out``."""
    from mapper.sources.lock import LockFile, fetch_locked, lock_path

    url = region.settings["model"]["satlas_weights"]
    if not is_url(url):
        raise ConfigError(
            f"{region.path}: model.satlas_weights is {url!r}, not a URL: nothing to fetch"
        )
    out = Path(out)
    fetch_locked(url, out, LockFile(lock_path(region.path)),
                 check=lambda path: _check_torch_file(path, url))
    return out
