"""SatlasPretrain weights given by URL (mapper.sources.weights): where they are kept, fetched
from the loopback server into the region's lock file, refused when not a torch file, read by
training from the local copy, and planned by the workflow only when a region asks for them."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import zipfile
from pathlib import Path

import pytest
from httpserver import LoopbackServer
from tiny_region import write_tiny_region
from workflow_project import make_project, planned_jobs

from mapper.cli import main
from mapper.config import load_config, load_region
from mapper.errors import ChangedError, ConfigError, InputError
from mapper.sources.lock import LockFile, lock_path
from mapper.sources.weights import fetch_weights, weights_path
from mapper.train import model_config

NAME = "sentinel2_swinb_si_ms.pth"


def torch_like(seed: int) -> bytes:
    """A zip archive, as torch.save writes (the content is not read here); the member's time is
    fixed, so that the same seed gives the same bytes at any second."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl", (1980, 1, 1, 0, 0, 0)),
                   bytes([seed]) * 1000)
    return buf.getvalue()


def test_weights_path() -> None:
    url = f"https://huggingface.co/allenai/satlas-pretrain/resolve/main/{NAME}"
    assert weights_path(url) == f"resources/weights/{NAME}"
    assert weights_path("models/mine.pth") == "models/mine.pth"
    assert weights_path(None) is None
    with pytest.raises(ConfigError, match="names no file"):
        weights_path("https://example.org/")


def test_fetch_weights_records_then_verifies(tmp_path: Path) -> None:
    with LoopbackServer() as server:
        url = server.add_file(f"/allenai/{NAME}", torch_like(1))
        config = write_tiny_region(
            tmp_path / "regions", (0.0, 0.0, 2560.0, 2560.0), 256,
            model={"size": "demo", "satlas_weights": url},
        )  # fmt: skip
        region = load_region(load_config(config), "tiny")
        assert model_config(region).satlas_weights == f"resources/weights/{NAME}"
        assert model_config(region).pixel_query is None  # the schema's default: 4 stages
        out = tmp_path / "resources" / "weights" / NAME
        rc = main(["fetch-weights", "--config", str(config), "--region", "tiny",
                   "--out", str(out)])  # fmt: skip
        assert rc == 0 and out.read_bytes() == torch_like(1)
        lock = LockFile(lock_path(region.path))
        assert lock.path == tmp_path / "regions" / "tiny.lock.json"
        assert lock.get(url)["size"] == len(torch_like(1))
        # upstream changed: one line, nothing left
        out.unlink()
        server.add_file(f"/allenai/{NAME}", torch_like(2))
        with pytest.raises(ChangedError, match="changed upstream") as exc:
            fetch_weights(region, out)
        assert str(lock.path) in str(exc.value) and not out.exists()
        # an error page is not recorded as the weights
        page = server.add_file("/allenai/page.pth", b"<html>rate limited</html>")
        bad = write_tiny_region(
            tmp_path / "bad", (0.0, 0.0, 2560.0, 2560.0), 256,
            model={"size": "demo", "satlas_weights": page},
        )  # fmt: skip
        bad_region = load_region(load_config(bad), "tiny")
        with pytest.raises(InputError, match="not a torch checkpoint") as exc:
            fetch_weights(bad_region, tmp_path / "page.pth")
        assert str(exc.value).startswith(f"{page} -> {tmp_path / 'page.pth'}: ")
        assert not (tmp_path / "page.pth").exists()
        assert LockFile(lock_path(bad_region.path)).entries() == {}


def test_the_workflow_fetches_weights_only_when_asked(tmp_path: Path) -> None:
    plain = make_project(tmp_path / "plain")
    assert "fetch_weights" not in planned_jobs(plain, f"results/{plain.region}/models/nsp.pt")
    asked = make_project(tmp_path / "asked")
    text = asked.region_file.read_text().replace(
        "size: demo", f"size: demo\n  satlas_weights: https://example.org/w/{NAME}"
    )
    asked.region_file.write_text(text)
    jobs = planned_jobs(asked, f"results/{asked.region}/models/nsp.pt")
    assert jobs["fetch_weights"] == 1 and jobs["pretrain"] == 1 and jobs["finetune"] == 1


def test_two_urls_of_one_file_name_are_refused(tmp_path: Path) -> None:
    """Weights given by URL are kept under their file name: two regions giving the same URL share
    the download; two URLs of one name (a mirror, another revision) would share one file, the
    second region training on the first's download unchecked."""
    from mapper.sources.weights import weights_by_name

    def region(name: str, url: str | None):
        config = write_tiny_region(tmp_path / name, (0.0, 0.0, 2560.0, 2560.0), 256, name=name,
                                   model={"size": "demo", "satlas_weights": url})
        return load_region(load_config(config), name)

    url = f"https://huggingface.co/allenai/satlas-pretrain/resolve/main/{NAME}"
    mirror = f"https://mirror.example.org/satlas/{NAME}"
    a, b, c = region("a", url), region("b", url), region("c", None)
    assert weights_by_name({"a": a, "b": b, "c": c}) == {NAME: "a"}
    with pytest.raises(ConfigError) as exc:
        weights_by_name({"a": a, "m": region("m", mirror)})
    message = str(exc.value)
    assert mirror in message and url in message and "region 'a'" in message
    assert f"resources/weights/{NAME}" in message and "m.yaml" in message
    # a region given by value has no file to keep a lock file beside: refused when parsed
    by_value = dataclasses.replace(a, path="region_overrides")
    with pytest.raises(ConfigError, match="a lock file is kept beside the region file"):
        weights_by_name({"v": by_value})


def test_each_region_checks_the_shared_weights_against_its_own_lock_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regions giving the same URL share the file fetched under the first one's lock file; a
    job training another region checks it against that region's lock file: an entry recording
    other bytes (weights it was validated with earlier) stops it with one error naming its lock
    file, and a lock file without an entry records the file."""
    from mapper.sources.weights import checked_weights_sha256
    from mapper.training_resume import inputs_digest

    url = f"https://huggingface.co/allenai/satlas-pretrain/resolve/main/{NAME}"
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "resources" / "weights" / NAME
    out.parent.mkdir(parents=True)
    out.write_bytes(torch_like(1))

    def region(name: str, weights: str | None):  # noqa: ANN202
        config = write_tiny_region(tmp_path / name, (0.0, 0.0, 2560.0, 2560.0), 256, name=name,
                                   model={"size": "demo", "satlas_weights": weights})
        return load_region(load_config(config), name)

    first, second = region("a", url), region("b", url)
    LockFile(lock_path(first.path)).record(url, {"sha256": "0" * 64, "size": 1000})
    got = {"sha256": hashlib.sha256(torch_like(1)).hexdigest(), "size": len(torch_like(1))}
    assert inputs_digest(second, model_config(second))["weights"] == got["sha256"]
    assert LockFile(lock_path(second.path)).get(url) == got  # recorded
    assert checked_weights_sha256(second, out) == got["sha256"]  # verified
    with pytest.raises(ChangedError) as exc:
        inputs_digest(first, model_config(first))
    message = str(exc.value)
    assert "\n" not in message and message.startswith(
        f"{Path('resources/weights') / NAME}: region 'a''s lock file {lock_path(first.path)} pins "
        f"{url} as sha256 0000000000000000..., 1000 bytes, but the copy here, shared by the "
        "regions giving that URL and fetched under the first one's lock file, is sha256 "
        f"{got['sha256'][:16]}..., {got['size']} bytes")
    assert message.endswith(f"delete the entry of {url} in {lock_path(first.path)} and run "
                            "again; to keep the weights it pinned, give it a local copy of them "
                            "(model.satlas_weights: <path>)")
    # an entry as the download check reads it: the checksum in capitals, another key beside
    third = region("d", url)
    LockFile(lock_path(third.path)).record(url, {"sha256": got["sha256"].upper(),
                                                 "size": got["size"], "note": "pinned by hand"})
    assert checked_weights_sha256(third, out) == got["sha256"]
    local = region("c", str(out))
    assert checked_weights_sha256(local, out) == got["sha256"]
    assert not lock_path(local.path).exists()  # a local file is the user's: no lock entry
