"""hold_out: a validation part of a parallel corpus, held out by parallel id and by whole answer group."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.planning.split import hold_out, split_validation
from hybrid_ir.utils.errors import ConfigError
from tests.helpers.corpora import group_members, langs_of, mixed_corpus
from tests.helpers.negatives import held_out_listings, kept_negatives
from tests.helpers.repo import REPO


def with_negatives(c: ParallelCorpus) -> ParallelCorpus:
    """``c`` with hard negatives: in each language, every third id lists the next five ids (of any language) as
    ``negative_ids``, every other id two ``negatives`` texts."""
    negative_ids: dict[str, dict[str, tuple[str, ...]]] = {}
    negatives: dict[str, dict[str, tuple[str, ...]]] = {}
    ids = c.parallel_ids
    for lang, by_id in c.pairs.items():
        for parallel_id in by_id:
            i = c.index_of[parallel_id]
            if i % 3 == 0:
                negative_ids.setdefault(lang, {})[parallel_id] = tuple(
                    ids[(i + j) % len(ids)] for j in range(1, 6)
                )
            if i % 2 == 0:
                negatives.setdefault(lang, {})[parallel_id] = (
                    f"neg a {parallel_id} {lang}",
                    f"neg b {parallel_id}",
                )
    return ParallelCorpus(
        c.name, c.languages, c.pairs, c.group, negative_ids=negative_ids, negatives=negatives
    )


def _ids(c: ParallelCorpus) -> dict[str, list[str]]:
    return {lang: sorted(by_id) for lang, by_id in sorted(c.pairs.items())}


def test_no_id_in_both_parts_in_any_language() -> None:
    full = mixed_corpus()
    train, val = hold_out(full, 0.2, seed=0)
    assert set(train.parallel_ids).isdisjoint(val.parallel_ids)
    assert set(train.parallel_ids) | set(val.parallel_ids) == set(full.parallel_ids)
    # a held-out id keeps all its translations on the validation side (none is trained on)
    for parallel_id in val.parallel_ids:
        assert langs_of(val, parallel_id) == langs_of(full, parallel_id)
        assert all(parallel_id not in by_id for by_id in train.pairs.values())
    for part in (train, val):
        for lang, by_id in part.pairs.items():
            assert all(by_id[parallel_id] == full.pairs[lang][parallel_id] for parallel_id in by_id)


def test_both_parts_keep_their_ids_hard_negatives() -> None:
    """The training part keeps its ids' negative texts as they are and the listed ids it trains on: a held-out id is
    no training negative (its passage is a validation passage). The validation part keeps its own the same way."""
    full = with_negatives(mixed_corpus())
    train, val = hold_out(full, 0.3, seed=1)
    for part in (train, val):
        negative_ids, negatives = kept_negatives(full, part)
        assert part.negative_ids == negative_ids and part.negatives == negatives
        assert negative_ids and negatives
        shortened, emptied = held_out_listings(full, part)
        assert shortened > emptied > 0  # lists that lost some, and lists that lost all, of their ids
    held = set(val.parallel_ids)
    assert all(held.isdisjoint(listed) for by_id in train.negative_ids.values() for listed in by_id.values())


def test_answer_groups_are_never_split() -> None:
    full = mixed_corpus()
    train, val = hold_out(full, 0.3, seed=1)
    for members in group_members(full):
        sides = {parallel_id in val.group for parallel_id in members}
        assert len(sides) == 1, f"group {members} split across train and val"
    assert set(val.group) == set(val.parallel_ids) and set(train.group) == set(train.parallel_ids)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5, 0.9])
def test_fraction_is_respected_to_within_one_group(fraction: float) -> None:
    full = mixed_corpus()
    _, val = hold_out(full, fraction, seed=2)
    target = int(np.ceil(fraction * len(full)))
    largest = max(len(m) for m in group_members(full))
    assert target <= len(val) < target + largest


def test_deterministic_in_the_seed() -> None:
    full = mixed_corpus()
    assert _ids(hold_out(full, 0.2, seed=5)[1]) == _ids(hold_out(full, 0.2, seed=5)[1])
    assert set(hold_out(full, 0.2, seed=5)[1].parallel_ids) != set(
        hold_out(full, 0.2, seed=6)[1].parallel_ids
    )


def test_independent_of_read_order_and_group_numbering() -> None:
    reference = _ids(hold_out(mixed_corpus(), 0.2, seed=3)[1])
    for order_seed in (1, 2):
        assert _ids(hold_out(mixed_corpus(order_seed=order_seed), 0.2, seed=3)[1]) == reference


def test_identical_in_processes_with_different_hash_seeds() -> None:
    """Every DDP rank is its own process, with its own string-hash seed: the split must not depend on it."""
    code = (
        "import json; from tests.helpers.corpora import mixed_corpus; "
        "from hybrid_ir.data.planning.split import hold_out; "
        "print(json.dumps(sorted(hold_out(mixed_corpus(), 0.2, 4)[1].parallel_ids)))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == sorted(hold_out(mixed_corpus(), 0.2, 4)[1].parallel_ids)


def test_validation_part_is_named_and_keeps_only_its_languages() -> None:
    full = mixed_corpus(n=3)  # few ids: some languages have none of the held-out ones
    train, val = hold_out(full, 0.3, seed=0)
    assert (train.name, val.name) == ("toy", "toy-val")
    for part in (train, val):
        assert part.languages == sorted(lang for lang, by_id in part.pairs.items() if by_id)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_the_open_interval_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        hold_out(mixed_corpus(), fraction, seed=0)


def test_a_split_that_leaves_nothing_to_train_on_is_refused() -> None:
    one_group = ParallelCorpus(
        name="one",
        languages=["en"],
        pairs={"en": {p: QAPair(p, "en", p, p) for p in ("a", "b", "c")}},
        group={"a": 0, "b": 0, "c": 0},
    )
    with pytest.raises(ValueError, match="leaves no id to train on"):
        hold_out(one_group, 0.1, seed=0)


def test_split_validation_holds_out_a_fraction_or_reads_separate_datasets() -> None:
    full, other, read = mixed_corpus(), mixed_corpus(50), []

    def load(spec: dict) -> ParallelCorpus:
        read.append(spec)
        return other

    val = {"fraction": 0.2, "seed": 3, "datasets": []}
    train, held = split_validation([full], val, load)
    assert [_ids(c) for c in train + held] == [
        _ids(part) for part in hold_out(full, 0.2, seed=3)
    ] and not read
    assert split_validation([full], {**val, "fraction": 0.0, "datasets": [{"name": "v"}]}, load) == (
        [full],
        [other],
    )
    assert read == [{"name": "v"}]
    assert split_validation([full], None, load) == ([full], []) and len(read) == 1
    one_group = ParallelCorpus(
        name="one",
        languages=["en"],
        pairs={"en": {p: QAPair(p, "en", p, p) for p in ("a", "b", "c")}},
        group={"a": 0, "b": 0, "c": 0},
    )
    with pytest.raises(ConfigError, match=r"^data\.val\.fraction=0\.2: .*leaves no id to train on"):
        split_validation([one_group], val, load)
