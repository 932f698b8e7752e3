"""The config tree has one home per idea: no two files alike, one eval block for both entry points, data configs
built on one base; no experiment means the model's own settings; comments say what a key does (no measurements)
and cite docs pages that exist."""

from __future__ import annotations

import re
from itertools import combinations

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from hybrid_ir.tasks.instantiate import register_resolvers
from tests.helpers.repo import REPO

CONF = REPO / "conf"
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem != "base")


def composed(config: str, *overrides: str) -> DictConfig:
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config, overrides=["paths.output_dir=/tmp/unused", *overrides])


def test_no_two_config_files_have_the_same_keys() -> None:
    """(Empty files, such as the ``none`` choices of optional groups, excepted.)"""
    files = sorted(CONF.rglob("*.yaml"))
    loaded = {f: OmegaConf.to_container(OmegaConf.load(f)) for f in files}
    same = [
        (a.relative_to(CONF), b.relative_to(CONF))
        for a, b in combinations(files, 2)
        if loaded[a] and loaded[a] == loaded[b]
    ]
    assert not same


@pytest.mark.parametrize("data", DATA)
def test_train_and_evaluate_share_one_eval_block(data: str) -> None:
    train, evaluate = composed("train", f"data={data}"), composed("evaluate", f"data={data}")
    assert OmegaConf.to_container(train.eval) == OmegaConf.to_container(evaluate.eval)
    assert OmegaConf.to_container(train.data) == OmegaConf.to_container(evaluate.data)


def test_data_default_is_mlqa_r() -> None:
    assert composed("train", "data=default").data == composed("train", "data=mlqa-r").data


@pytest.mark.parametrize(("model", "max_length"), [("e5-small", 128), ("labse", 128), ("tiny", 64)])
def test_no_experiment_keeps_the_models_own_settings(model: str, max_length: int) -> None:
    cfg = composed("train", f"model={model}")
    assert cfg.model.max_length == max_length and cfg.eval.max_qids is None
    cpu = composed("train", f"model={model}", "experiment=cpu")
    assert cpu.model.max_length == 64 and cpu.eval.max_qids == 100


def test_replication_negatives_is_the_replication_on_a_mined_file_with_one_negative() -> None:
    """Only the training data (the mined export of the same XQuAD-R languages), k = 1 and a tag differ."""
    plain = OmegaConf.to_container(composed("train", "experiment=replication"))
    mined = OmegaConf.to_container(
        composed("train", "experiment=replication_negatives", "data.train.0.path=/m.jsonl")
    )
    source, target = plain["data"].pop("train"), mined["data"].pop("train")
    assert [{**t, "format": "lareqa", "path": None} for t in target] == [{**s, "path": None} for s in source]
    assert target[0]["format"] == "jsonl" and target[0]["path"] == "/m.jsonl"
    assert (plain["data"].pop("negatives_per_query"), mined["data"].pop("negatives_per_query")) == (0, 1)
    assert mined.pop("tags") == [*plain.pop("tags"), "negatives"]
    assert mined == plain


def config_comments() -> list[tuple[str, str]]:
    """``(file:line, text)`` of every comment in ``conf/``."""
    return [
        (f"{path.relative_to(REPO)}:{number}", match.group(1))
        for path in sorted(CONF.rglob("*.yaml"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if (match := re.search(r"(?:^|\s)#\s?(.*)$", line))
    ]


# A timing, a size or a share, or the words that come with a measurement.
MEASUREMENT = re.compile(
    r"\b\d+(?:\.\d+)?\s?(?:ms|s|min|minutes|seconds|h|hours|GB|MB|GiB|%)(?!\w)|\b(?:measured|took)\b"
)


def test_config_comments_say_what_a_key_does_not_what_it_measured() -> None:
    """Measurements and their dates live in docs/benchmarks.md (or docs/results.md), with their provenance."""
    measured = [f"{where}: {text}" for where, text in config_comments() if MEASUREMENT.search(text)]
    assert not measured, "\n".join(measured)


def test_config_comments_point_at_pages_that_exist() -> None:
    """Comments cite the docs pages (the README is a short front page now), and each page cited exists."""
    readme = [
        f"{where}: {text}"
        for where, text in config_comments()
        if re.search(r"\bthe README\b|README[:,']", text)
    ]
    missing = [
        f"{where}: {page}"
        for where, text in config_comments()
        for page in re.findall(r"docs/[\w/.-]+?\.md", text)
        if not (REPO / page).is_file()
    ]
    assert not readme and not missing, "\n".join(readme + missing)
