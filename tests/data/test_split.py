"""hold_out: a validation part of a parallel corpus, held out by parallel id and by whole answer group."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.split import group_members, hold_out

LANGS = ["de", "en", "es", "zh"]
REPO = Path(__file__).resolve().parents[2]


def corpus(n: int = 400, order_seed: int | None = None) -> ParallelCorpus:
    """``n`` ids in 1-4 languages each, in answer groups of 1-5 ids. The content depends on ``n`` only;
    ``order_seed`` shuffles the order in which ids and languages are inserted and renumbers the groups (as
    another reader of the same data might)."""
    rng = np.random.default_rng(7)
    pids = [f"q{i:05d}" for i in range(n)]
    langs = {pid: sorted(rng.choice(LANGS, size=int(rng.integers(1, 5)), replace=False)) for pid in pids}
    group, g, i = {}, 0, 0
    while i < n:
        size = int(rng.integers(1, 6))
        for pid in pids[i : i + size]:
            group[pid] = g
        g, i = g + 1, i + size
    order, lang_order = list(pids), list(LANGS)
    if order_seed is not None:
        shuffle = np.random.default_rng(order_seed)
        order = [pids[k] for k in shuffle.permutation(n)]
        lang_order = [LANGS[k] for k in shuffle.permutation(len(LANGS))]
        relabel = {old: int(new) for old, new in enumerate(shuffle.permutation(g))}
        group = {pid: relabel[group[pid]] for pid in order}
    pairs: dict[str, dict[str, QAPair]] = {lang: {} for lang in lang_order}
    for pid in order:
        for lang in langs[pid]:
            pairs[lang][pid] = QAPair(pid, lang, f"question {pid} {lang}", f"passage {pid} {lang}")
    return ParallelCorpus(name="toy", languages=sorted(LANGS), pairs=pairs, group=group)


def _ids(c: ParallelCorpus) -> dict[str, list[str]]:
    return {lang: sorted(by_pid) for lang, by_pid in sorted(c.pairs.items())}


def test_no_id_in_both_parts_in_any_language() -> None:
    full = corpus()
    train, val = hold_out(full, 0.2, seed=0)
    assert set(train.pids).isdisjoint(val.pids)
    assert set(train.pids) | set(val.pids) == set(full.pids)
    # a held-out id keeps all its translations on the validation side (none is trained on)
    for pid in val.pids:
        assert val.langs_of(pid) == full.langs_of(pid)
        assert all(pid not in by_pid for by_pid in train.pairs.values())
    for part in (train, val):
        for lang, by_pid in part.pairs.items():
            assert all(by_pid[pid] == full.pairs[lang][pid] for pid in by_pid)


def test_answer_groups_are_never_split() -> None:
    full = corpus()
    train, val = hold_out(full, 0.3, seed=1)
    for members in group_members(full):
        sides = {pid in val.group for pid in members}
        assert len(sides) == 1, f"group {members} split across train and val"
    assert set(val.group) == set(val.pids) and set(train.group) == set(train.pids)


@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.5, 0.9])
def test_fraction_is_respected_to_within_one_group(fraction: float) -> None:
    full = corpus()
    _, val = hold_out(full, fraction, seed=2)
    target = int(np.ceil(fraction * len(full)))
    largest = max(len(m) for m in group_members(full))
    assert target <= len(val) < target + largest


def test_deterministic_in_the_seed() -> None:
    full = corpus()
    assert _ids(hold_out(full, 0.2, seed=5)[1]) == _ids(hold_out(full, 0.2, seed=5)[1])
    assert set(hold_out(full, 0.2, seed=5)[1].pids) != set(hold_out(full, 0.2, seed=6)[1].pids)


def test_independent_of_read_order_and_group_numbering() -> None:
    reference = _ids(hold_out(corpus(), 0.2, seed=3)[1])
    for order_seed in (1, 2):
        assert _ids(hold_out(corpus(order_seed=order_seed), 0.2, seed=3)[1]) == reference


def test_identical_in_processes_with_different_hash_seeds() -> None:
    """Every DDP rank is its own process, with its own string-hash seed: the split must not depend on it."""
    code = (
        "import json, sys; sys.path.insert(0, 'tests/data'); from test_split import corpus; "
        "from hybrid_ir.data.split import hold_out; print(json.dumps(sorted(hold_out(corpus(), 0.2, 4)[1].pids)))"
    )
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
        )
        outputs.append(json.loads(proc.stdout))
    assert outputs[0] == outputs[1] == sorted(hold_out(corpus(), 0.2, 4)[1].pids)


def test_validation_part_is_named_and_keeps_only_its_languages() -> None:
    full = corpus(n=3)  # few ids: some languages have none of the held-out ones
    train, val = hold_out(full, 0.3, seed=0)
    assert (train.name, val.name) == ("toy", "toy-val")
    for part in (train, val):
        assert part.languages == sorted(lang for lang, by_pid in part.pairs.items() if by_pid)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_fraction_outside_the_open_interval_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        hold_out(corpus(), fraction, seed=0)


def test_a_split_that_leaves_nothing_to_train_on_is_refused() -> None:
    one_group = ParallelCorpus(
        name="one",
        languages=["en"],
        pairs={"en": {p: QAPair(p, "en", p, p) for p in ("a", "b", "c")}},
        group={"a": 0, "b": 0, "c": 0},
    )
    with pytest.raises(ValueError, match="leaves no id to train on"):
        hold_out(one_group, 0.1, seed=0)
