"""Tests for dataset download: no network; ``urllib.request.urlopen`` is replaced by a local fake."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hybrid_ir.data.formats import download
from hybrid_ir.data.formats.download import dataset_url, ensure_dataset
from hybrid_ir.data.formats.lareqa_files import load_lareqa_corpus
from hybrid_ir.utils.errors import ConfigError, DownloadError
from tests.helpers.lareqa import shared_lareqa_root

RAW = "https://raw.githubusercontent.com/google-research-datasets/lareqa"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh user cache; ``cache_dir("data")`` resolves under it."""
    monkeypatch.setenv("HYBRID_IR_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


@pytest.fixture
def shared() -> Path:
    return shared_lareqa_root("xquad-r", "mlqa-r")


class FakeUrlopen:
    """Serves ``<shared>/<dataset>/<lang>.json`` for the LAReQA raw URLs and records every request."""

    def __init__(self, shared: Path, corrupt: bool = False) -> None:
        self.shared = shared
        self.corrupt = corrupt
        self.urls: list[str] = []

    def __call__(self, url: str, timeout: float | None = None) -> io.BytesIO:
        self.urls.append(url)
        assert timeout is not None and timeout > 0
        dataset, lang_file = url.split("/")[-2:]
        data = (self.shared / dataset / lang_file).read_bytes()
        return io.BytesIO(data[:-1] + b" " if self.corrupt else data)


def test_urls_point_at_the_public_origin():
    assert dataset_url("xquad-r", "de") == f"{RAW}/master/xquad-r/de.json"
    assert dataset_url("mlqa-r", "vi") == f"{RAW}/354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/vi.json"
    with pytest.raises(ConfigError, match="available"):
        dataset_url("mlqa-r", "ru")
    with pytest.raises(ConfigError, match="known"):
        dataset_url("squad", "en")


def test_checksums_match_the_shared_sha256sums(shared):
    for dataset in ("xquad-r", "mlqa-r"):
        sums = {}
        for line in (shared / dataset / "SHA256SUMS").read_text().splitlines():
            digest, name = line.split()
            if name.endswith(".json"):
                sums[name[: -len(".json")]] = digest
        assert download.SHA256[dataset] == sums


def test_missing_files_are_downloaded_verified_and_loadable(tmp_path, cache, shared, monkeypatch):
    fake = FakeUrlopen(shared)
    monkeypatch.setattr(urllib.request, "urlopen", fake)
    root = ensure_dataset(tmp_path / "empty-root", "xquad-r", ["en", "de"])
    assert root == cache
    assert sorted(fake.urls) == [f"{RAW}/master/xquad-r/de.json", f"{RAW}/master/xquad-r/en.json"]
    for lang in ("de", "en"):
        assert (cache / "xquad-r" / f"{lang}.json").read_bytes() == (
            shared / "xquad-r" / f"{lang}.json"
        ).read_bytes()
    assert not [p for p in (cache / "xquad-r").iterdir() if p.suffix != ".json"]
    assert len(load_lareqa_corpus(root, "xquad-r", ["en", "de"])) == 1190
    assert ensure_dataset(tmp_path / "empty-root", "xquad-r", ["de", "en"]) == cache
    assert len(fake.urls) == 2, "files already in the cache are not fetched again"
    ensure_dataset(tmp_path / "empty-root", "mlqa-r", ["zh"])
    assert fake.urls[-1].endswith("354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/zh.json")


def test_present_files_need_no_network(shared, cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    assert ensure_dataset(shared, "mlqa-r", ["en", "zh"]) == shared


def test_checksum_mismatch_writes_nothing(tmp_path, cache, shared, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", FakeUrlopen(shared, corrupt=True))
    with pytest.raises(DownloadError) as info:
        ensure_dataset(tmp_path, "xquad-r", ["es"])
    message = str(info.value)
    assert "checksum mismatch" in message and f"{RAW}/master/xquad-r/es.json" in message
    assert download.SHA256["xquad-r"]["es"] in message
    folder = cache / "xquad-r"
    assert not folder.exists() or not any(folder.iterdir())


def test_network_failure_says_which_url_and_how_to_set_the_root(tmp_path, cache, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DownloadError) as info:
        ensure_dataset(tmp_path, "mlqa-r", ["hi"])
    message = str(info.value)
    assert f"{RAW}/354d67d1cd066854cdfbf5ad0e6105528976141d/mlqa-r/hi.json" in message
    assert "HYBRID_IR_DATA" in message and "data.root=" in message
    assert "name resolution" in message
    assert not (cache / "mlqa-r" / "hi.json").exists()
