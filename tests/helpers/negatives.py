"""The hard negatives a part of a corpus (``subset``, ``hold_out``) must keep, worked out from the whole corpus: what
the tests of the in-memory and the record-table corpus compare each part with."""

from __future__ import annotations

from hybrid_ir.data.corpus import ParallelCorpus

Listed = dict[str, dict[str, tuple[str, ...]]]


def kept_negatives(full: ParallelCorpus, part: ParallelCorpus) -> tuple[Listed, Listed]:
    """``(negative_ids, negatives)`` of ``part``, a subset of ``full``: each of its ids keeps its negative texts as
    they are and the listed ids that ``part`` holds (none of another part); an id left with no listed id, and a
    language left with no list, are absent."""
    ids = set(part.parallel_ids)
    negative_ids: Listed = {}
    negatives: Listed = {}
    for lang, by_id in full.negative_ids.items():
        for parallel_id, listed in by_id.items():
            kept = tuple(n for n in listed if n in ids)
            if parallel_id in ids and kept:
                negative_ids.setdefault(lang, {})[parallel_id] = kept
    for lang, by_id in full.negatives.items():
        for parallel_id, texts in by_id.items():
            if parallel_id in ids:
                negatives.setdefault(lang, {})[parallel_id] = tuple(texts)
    return negative_ids, negatives


def held_out_listings(full: ParallelCorpus, part: ParallelCorpus) -> tuple[int, int]:
    """``(shortened, emptied)``: how many lists of ``part``'s ids in ``full`` name an id that ``part`` lacks, and how
    many name only such ids (what a test needs some of, to see that the filter works)."""
    ids = set(part.parallel_ids)
    shortened = emptied = 0
    for by_id in full.negative_ids.values():
        for parallel_id, listed in by_id.items():
            if parallel_id in ids:
                outside = sum(n not in ids for n in listed)
                shortened += outside > 0
                emptied += outside == len(listed)
    return shortened, emptied
