"""recsys.data.download: verified, atomic, only-when-absent downloads. Never the network:
every test uses file:// URLs or a replaced fetch; urlopen refuses anything else, and so
does requests (pooch's HTTP downloader)."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import re
import urllib.request
import zipfile
from pathlib import Path

import pytest
import requests

from recsys.config import DataConfig
from recsys.data import download
from recsys.data.events import load_events, resolve_path
from recsys.errors import DatasetNotFoundError

SHARED = Path(os.environ.get("RECSYS_DATA_DIR") or "/work/shared/datasets")
CONTENT = b"1 a b c\n2 b c d\n"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    real_urlopen = urllib.request.urlopen

    def local_only(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        if not url.startswith("file:"):
            raise AssertionError(f"test tried to reach the network: {url}")
        return real_urlopen(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", local_only)

    def no_request(self, method, url, *args, **kwargs):
        raise AssertionError(f"test tried to reach the network: {url}")

    monkeypatch.setattr(requests.Session, "request", no_request)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source(tmp_path: Path, data: bytes, name: str = "upstream.txt") -> str:
    path = tmp_path / "upstream" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path.as_uri()


def register(monkeypatch, key: str, remote: download.Remote) -> None:
    monkeypatch.setitem(download.REGISTRY, key, remote)


def test_download_when_absent_then_reuse(tmp_path, monkeypatch, caplog):
    root = tmp_path / "data"
    register(monkeypatch, "demo/x.txt",
             download.Remote(source(tmp_path, CONTENT), sha(CONTENT), terms="demo terms"))
    with caplog.at_level(logging.WARNING, logger="recsys.data.download"):
        path = download.download("demo/x.txt", root)
    assert path == root / "demo" / "x.txt"
    assert path.read_bytes() == CONTENT
    assert "demo terms" in caplog.text
    assert sorted(os.listdir(root / "demo")) == ["x.txt"]  # no temp files left

    def must_not_fetch(url, dest):
        raise AssertionError("fetched although the file exists")

    monkeypatch.setattr(download, "fetch", must_not_fetch)
    assert download.download("demo/x.txt", root) == path


def test_sha256_mismatch_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    register(monkeypatch, "demo/x.txt",
             download.Remote(source(tmp_path, CONTENT + b"tampered"), sha(CONTENT)))
    with pytest.raises(DatasetNotFoundError, match="sha256 mismatch"):
        download.download("demo/x.txt", root)
    assert os.listdir(root / "demo") == []


def test_failed_fetch_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    missing = (tmp_path / "no-such-file").as_uri()
    register(monkeypatch, "demo/x.txt", download.Remote(missing, sha(CONTENT)))
    with pytest.raises(DatasetNotFoundError, match="download from"):
        download.download("demo/x.txt", root)
    assert os.listdir(root / "demo") == []


def test_interrupted_fetch_leaves_nothing(tmp_path, monkeypatch):
    root = tmp_path / "data"
    register(monkeypatch, "demo/x.txt", download.Remote("https://example.invalid/x", sha(CONTENT)))

    def half_then_crash(url, dest):
        Path(dest).write_bytes(CONTENT[:5])
        raise ConnectionResetError("connection reset")

    monkeypatch.setattr(download, "fetch", half_then_crash)
    with pytest.raises(DatasetNotFoundError):
        download.download("demo/x.txt", root)
    assert os.listdir(root / "demo") == []


def test_zip_member_extracted_and_archive_checked(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml/ratings.dat", b"1::10::5::100\n1::11::4::50\n")
        zf.writestr("ml/other.dat", b"ignored")
    archive = buffer.getvalue()
    url = source(tmp_path, archive, "ml.zip")
    register(monkeypatch, "ml/ratings.dat", download.Remote(url, sha(archive), member="ml/ratings.dat"))
    register(monkeypatch, "ml/absent.dat", download.Remote(url, sha(archive), member="ml/absent.dat"))
    root = tmp_path / "data"

    log = load_events(DataConfig(format="movielens", path="ml/ratings.dat", data_dir=str(root),
                                 min_user_events=1))
    assert list(log.frame.itertuples(index=False, name=None)) == [("1", "11", 50), ("1", "10", 100)]
    assert sorted(os.listdir(root / "ml")) == ["ratings.dat"]  # the archive is not kept

    with pytest.raises(DatasetNotFoundError, match="absent.dat"):
        download.download("ml/absent.dat", root)
    assert sorted(os.listdir(root / "ml")) == ["ratings.dat"]


def test_https_goes_through_poochs_downloader_with_our_user_agent(tmp_path, monkeypatch):
    calls = []

    def fake_call(self, url, output_file, pooch):
        calls.append((url, self.kwargs["headers"]["User-Agent"]))
        Path(output_file).write_bytes(CONTENT)

    monkeypatch.setattr(download.pooch.HTTPDownloader, "__call__", fake_call)
    register(monkeypatch, "demo/x.txt", download.Remote("https://example.invalid/x.txt", sha(CONTENT)))
    root = tmp_path / "data"
    assert download.download("demo/x.txt", root).read_bytes() == CONTENT
    assert calls == [("https://example.invalid/x.txt", "recsys-data/1")]
    assert sorted(os.listdir(root / "demo")) == ["x.txt"]


def test_resolve_path_downloads_plain_name_for_gz_request(tmp_path, monkeypatch):
    # The default config asks for Beauty.txt.gz; upstream serves Beauty.txt uncompressed.
    register(monkeypatch, "demo/Seq.txt", download.Remote(source(tmp_path, CONTENT), sha(CONTENT)))
    config = DataConfig(format="s3rec", path="demo/Seq.txt.gz", data_dir=str(tmp_path / "data"),
                        min_user_events=1)
    assert resolve_path(config) == tmp_path / "data" / "demo" / "Seq.txt"
    assert load_events(config).summary["n_events"] == 6


def test_resolve_path_absolute_paths_never_download(tmp_path, monkeypatch):
    register(monkeypatch, "demo/x.txt", download.Remote(source(tmp_path, CONTENT), sha(CONTENT)))
    absolute = tmp_path / "demo" / "x.txt"
    with pytest.raises(DatasetNotFoundError, match="RECSYS_DATA_DIR"):
        resolve_path(DataConfig(path=str(absolute)))
    assert not absolute.exists()


# ---- the real registry ----------------------------------------------------------------


def test_registry_entries_are_well_formed():
    for key, remote in download.REGISTRY.items():
        assert not key.startswith("/") and ".." not in key and not key.endswith(".gz"), key
        assert remote.url.startswith("https://"), key
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256), key
        assert remote.terms, key  # every dataset says its terms before downloading
    s3rec = [r for k, r in download.REGISTRY.items() if k.startswith("s3rec-preprocessed/")]
    assert len(s3rec) == 5
    assert all("RUCAIBox/CIKM2020-S3Rec/2a81540ae18615d88ef88227b0c066e5b74781e5/data/" in r.url
               for r in s3rec)
    assert download.REGISTRY["ml-1m/ratings.dat"].url.startswith("https://files.grouplens.org/")


def test_registry_hashes_match_shared_copies():
    """The shared .gz copies hold the upstream bytes, so their contents must hash to the
    pinned sha256: checks every plain-file entry without the network."""
    checked = 0
    for key, remote in download.REGISTRY.items():
        copy = SHARED / f"{key}.gz"
        if remote.member is None and copy.is_file():
            assert sha(gzip.decompress(copy.read_bytes())) == remote.sha256, key
            checked += 1
    if checked == 0:
        pytest.skip(f"no shared datasets under {SHARED}")
    assert checked == 8
