"""Fetch the LAReQA datasets (XQuAD-R, MLQA-R) from their public origin when they are not on disk.

Files come from ``google-research-datasets/lareqa`` on GitHub: XQuAD-R from ``master``, MLQA-R from
commit ``354d67d1cd066854cdfbf5ad0e6105528976141d`` (the authors later removed it from the repository).
Each download is checked against the SHA256 below and written atomically to ``cache_dir("data")/<dataset>/``.

See docs/data.md.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Iterable
from pathlib import Path

from hybrid_ir.data.languages import check_langs
from hybrid_ir.utils.errors import ConfigError, DownloadError
from hybrid_ir.utils.io import atomic_write
from hybrid_ir.utils.paths import DATA_ENV, cache_dir

LAREQA_RAW = "https://raw.githubusercontent.com/google-research-datasets/lareqa"
MLQA_R_COMMIT = "354d67d1cd066854cdfbf5ad0e6105528976141d"
BASE_URLS = {
    "xquad-r": f"{LAREQA_RAW}/master/xquad-r",
    "mlqa-r": f"{LAREQA_RAW}/{MLQA_R_COMMIT}/mlqa-r",
}
SHA256 = {
    "xquad-r": {
        "ar": "c52922d3b8ac1ae03ed5ac38647ad59870dca3dda2beefe18ecdc30729acb69d",
        "de": "16fb0f4bf4916154b585a20c24c66074591c9718a1affe764ff4697572328949",
        "el": "163fd43ee785a30eb534ae2061e9eaa766a7ee4e8ffce5e4b422480c150f64b6",
        "en": "7b0954f39297c27a31fef610f0883337dd2907fa8699151dc922afdd0fa12ffe",
        "es": "f8e836b2d91009c4363e04315f7ede363eedbbb49c67dda60de6c4aa782f58de",
        "hi": "ea45ba8ae4513d1533b222bebdc02a90bc319c055d3aeea68584a053d2e92872",
        "ru": "7f4dff853538b9a5fcc28c070b8bb983a5c5d190ac747b8e005a1ada9cab18f1",
        "th": "c3a041864c3a9fb0b4dd91cfdf99cf36b411b3e704c58a303c97bc6dc786cfe4",
        "tr": "f3e8c13002bbce154a4578f535f7533cb70f3da08840e6b62735935baec7bd94",
        "vi": "e35926bf5cc6fc6ecbdfca49467aabeb454f08d152d7818143a906bd31dde995",
        "zh": "80c2cde7b9c2fb134c303cbb52f2ba396ead9eb0014aec43993543d2ba9e93ed",
    },
    "mlqa-r": {
        "ar": "2132fbc03208535c0fe01f2e2c5121d06f9c2aa799af93b0a719dbc105bdf137",
        "de": "ce9454dc5aa6f2d85c23cd6e49cb367fbb7c4c6e62d7f71e355c6b5dae4d0886",
        "en": "fedd9a5cc0848dda80caf84aa36f482adaae230526a3f6e9e86926a93ef3b1e4",
        "es": "70ecba276b8c96a692b120693a595d076ce94ad21d4b28311538a9fcbfe0f9d7",
        "hi": "4dd0fb3c06f737a5481d705bc1dcac7876712a5815c9265908fbb3a0696cb654",
        "vi": "9d3baff6ba03e6793b25594217265ea59a136b9733833dca8a9582a84a78ff85",
        "zh": "57f01d2fff50cf3392805635b01445339f225ad5bf28ba8443b12f8dbd1e69dc",
    },
}
TIMEOUT_S = 60.0
ROOT_HINT = (
    "or put the files under <root>/<dataset>/<lang>.json and set the data root "
    f"({DATA_ENV}=<root> or data.root=<root>)"
)


def dataset_url(dataset: str, lang: str) -> str:
    """The public URL of ``<dataset>/<lang>.json``; ConfigError for an unknown dataset or language."""
    if dataset not in BASE_URLS:
        raise ConfigError(f"no download source for dataset {dataset!r}; known: {sorted(BASE_URLS)}")
    if lang not in SHA256[dataset]:
        raise ConfigError(f"{dataset} has no language {lang!r}; available: {sorted(SHA256[dataset])}")
    return f"{BASE_URLS[dataset]}/{lang}.json"


def fetch(url: str) -> bytes:
    """GET ``url`` with ``urllib.request.urlopen``; a network or HTTP failure raises DownloadError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(f"download failed: {url}: {exc}; check the network, {ROOT_HINT}") from exc


def download_file(dataset: str, lang: str, target: Path) -> Path:
    """Download ``<dataset>/<lang>.json`` to ``target`` (atomic), verifying its SHA256 before writing."""
    url = dataset_url(dataset, lang)
    data = fetch(url)
    digest = hashlib.sha256(data).hexdigest()
    expected = SHA256[dataset][lang]
    if digest != expected:
        raise DownloadError(
            f"checksum mismatch for {url}: got sha256 {digest}, expected {expected}; nothing was written; "
            f"retry, {ROOT_HINT}"
        )

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return atomic_write(target, _write)


def ensure_dataset(root: str | Path, dataset: str, languages: str | Iterable[str]) -> Path:
    """Return a data root holding ``<returned>/<dataset>/<lang>.json`` for every requested language.

    That is ``root`` when all files are there already; otherwise ``cache_dir("data")``, into which
    every requested file missing from the cache is downloaded (files present only under ``root`` are
    fetched again, so that one root holds the whole set). Pass the result to the loaders of
    :mod:`hybrid_ir.data.formats.lareqa_files`.
    """
    langs = check_langs(languages, Path(root) / dataset)
    if all((Path(root) / dataset / f"{lang}.json").is_file() for lang in langs):
        return Path(root)
    for lang in langs:
        dataset_url(dataset, lang)  # an unknown dataset or language fails here, before any download
    cache = cache_dir("data")
    for lang in langs:
        target = cache / dataset / f"{lang}.json"
        if not target.is_file():
            download_file(dataset, lang, target)
    return cache
