"""Hard-negative mining for training data (what ``mine.py`` runs): a JSONL file is copied with ``negative_ids``
added, any other dataset (e.g. XQuAD-R) is exported to JSONL with them (:func:`write_corpus_mined`).

For every record (a question and its positive passage in one language) the miner retrieves the top ``K``
passages of a *pool* (the record's language, or all languages) by inner product, drops the positive's
*mining group*, and samples ``num_negatives`` negatives from a rank window, FlagEmbedding-style: the first
ranks hold the most unlabelled positives, so a window such as 10-100 skips them.

* **Mining group**: the ids that the loader groups (same ``id``, shared ``passage_id``), joined with the ids
  whose passage text is identical in any language. A passage of the question's own mining group is never
  mined, and the record's own id never appears.
* **Ranks** count *distinct mining groups* retrieved for the question after its own group is dropped,
  from 1: rank 1 is the best other passage. A group retrieved twice (a passage and its translation, or two
  ids sharing a ``passage_id``) counts once, at its best position, so every negative is a distinct passage.
* **Top K**: by default ``(rank_max + 1) * m``, with ``m`` the most pool passages any one group holds, which
  is enough to reach rank ``rank_max`` (when the pool has that many groups) with exact search.
* **Sampling**: uniform without replacement from the window, seeded per record by ``(seed, lang, id)``;
  negatives are listed in rank order. A record whose window holds fewer passages gets all of them.

The pool's passages are encoded once per pool by
:func:`~hybrid_ir.retrieval.encode.encode_corpus` into memory-mapped files and searched in query chunks,
so memory holds one chunk of embeddings and of results at a time besides the index.

See docs/negatives.md.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hybrid_ir.data.corpus import ParallelCorpus, QAPair
from hybrid_ir.data.formats.jsonl import load_jsonl_corpus, write_corpus_jsonl
from hybrid_ir.data.formats.textfile import parse_json_object
from hybrid_ir.retrieval.encode import TextEncoder, encode_corpus
from hybrid_ir.retrieval.index import IndexConfig, VectorIndex, build_index
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.io import atomic_write
from hybrid_ir.utils.settings import check_int

PoolKind = Literal["language", "all"]
# The most (question, result) pairs one search call returns (12 bytes each): bounds memory for any top K.
MAX_RESULTS_PER_SEARCH = 1 << 24


@dataclass(frozen=True)
class MineSettings:
    """What the miner retrieves and samples (see the module docstring); ``check`` names the ``mine.*`` key."""

    pool: PoolKind = "language"
    rank_min: int = 10
    rank_max: int = 100
    num_negatives: int = 10
    top_k: int | None = None
    seed: int = 0

    def check(self, key: str = "mine") -> None:
        """Raise :class:`ConfigError` naming ``<key>.<field>`` for a setting out of range."""
        if self.pool not in ("language", "all"):
            raise ConfigError(
                f"{key}.pool={self.pool!r}: expected 'language' (each record's own language) or 'all'"
            )
        for name in ("rank_min", "rank_max", "num_negatives"):
            check_int(getattr(self, name), f"{key}.{name}")
        if self.rank_max < self.rank_min:
            raise ConfigError(
                f"{key}.rank_max={self.rank_max} is below {key}.rank_min={self.rank_min}; the window is "
                "ranks rank_min..rank_max (inclusive)"
            )
        check_int(
            self.top_k,
            f"{key}.top_k",
            self.rank_max,
            null=True,
            hint=f"at least {key}.rank_max={self.rank_max} (null: enough for the window)",
        )


@dataclass
class CandidatePool:
    """The passages one set of questions is mined from: distinct texts, the id each stands for (the first
    record with it) and that id's mining group."""

    texts: list[str]
    ids: list[str]
    groups: np.ndarray

    def max_per_group(self) -> int:
        """The most passages any one mining group holds in the pool."""
        return int(np.bincount(self.groups).max()) if len(self.groups) else 0


def build_pool(pairs: Iterable[QAPair], groups: Mapping[str, int]) -> CandidatePool:
    """A :class:`CandidatePool` of the distinct passage texts of ``pairs`` in order of first occurrence."""
    first: dict[str, str] = {}
    for pair in pairs:
        first.setdefault(pair.passage, pair.parallel_id)
    ids = list(first.values())
    return CandidatePool(
        list(first),
        ids,
        np.fromiter((groups[parallel_id] for parallel_id in ids), dtype=np.int64, count=len(ids)),
    )


def default_top_k(pool: CandidatePool, settings: MineSettings) -> int:
    """``settings.top_k``, else enough results to reach rank ``rank_max`` (see the module docstring); at most
    the pool size."""
    k = settings.top_k if settings.top_k is not None else (settings.rank_max + 1) * pool.max_per_group()
    return max(1, min(k, len(pool.texts)))


def ranked_candidates(hits: np.ndarray, pool_groups: np.ndarray, own_group: int) -> np.ndarray:
    """The pool rows of one question's results ``hits`` (best first; ``-1`` = none) without its own group,
    each group once (its best row): position ``r - 1`` holds rank ``r``."""
    hits = hits[hits >= 0]
    groups = pool_groups[hits]
    keep = groups != own_group
    hits, groups = hits[keep], groups[keep]
    _, first = np.unique(groups, return_index=True)
    return hits[np.sort(first)]


def sample_window(candidates: np.ndarray, settings: MineSettings, lang: str, parallel_id: str) -> np.ndarray:
    """Up to ``num_negatives`` rows of ranks ``rank_min..rank_max`` of ``candidates``, drawn without
    replacement (seeded by ``(seed, lang, parallel_id)``), in rank order."""
    window = candidates[settings.rank_min - 1 : settings.rank_max]
    if len(window) <= settings.num_negatives:
        return window
    rng = np.random.default_rng([settings.seed, zlib.crc32(f"{lang}\t{parallel_id}".encode())])
    return window[np.sort(rng.choice(len(window), size=settings.num_negatives, replace=False))]


@dataclass
class LanguageStats:
    """What the miner did for one language's records."""

    records: int = 0
    negatives: int = 0
    short: int = 0  # records given fewer than num_negatives
    empty: int = 0  # records given none


def mine_pool(
    index: VectorIndex,
    q_emb: np.ndarray,
    queries: list[QAPair],
    pool: CandidatePool,
    groups: Mapping[str, int],
    settings: MineSettings,
    top_k: int,
    query_chunk: int = 4096,
) -> dict[tuple[str, str], tuple[str, ...]]:
    """Negatives ``{(parallel_id, lang): ids}`` of the questions ``queries`` (rows of ``q_emb``) from ``index``
    (over ``pool``), searched ``query_chunk`` questions at a time (fewer when ``query_chunk * top_k`` exceeds
    :data:`MAX_RESULTS_PER_SEARCH`)."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    query_chunk = max(1, min(query_chunk, MAX_RESULTS_PER_SEARCH // top_k))
    for start, _, hits in index.search_chunks(q_emb, top_k, query_chunk):
        for pair, row in zip(queries[start : start + len(hits)], hits, strict=True):
            ranked = ranked_candidates(row, pool.groups, groups[pair.parallel_id])
            chosen = sample_window(ranked, settings, pair.lang, pair.parallel_id)
            out[(pair.parallel_id, pair.lang)] = tuple(pool.ids[i] for i in chosen)
    return out


@dataclass
class MineResult:
    """Negatives per ``(parallel_id, lang)``, counts per language, and per pool its top K, size and index
    (``"<kind> on <device>"``)."""

    negatives: dict[tuple[str, str], tuple[str, ...]]
    stats: dict[str, LanguageStats]
    top_k: dict[str, int]
    pool_sizes: dict[str, int]
    index: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EncodeSettings:
    """How the miner encodes: batch size, autocast precision, texts per chunk, the embedding files' folder
    and dtype, questions per search call, and whether the embedding files are kept."""

    batch_size: int = 128
    precision: str = "32"
    chunk_size: int = 65536
    cache_dir: Path | None = None
    dtype: Literal["float32", "float16"] = "float32"
    query_chunk: int = 4096
    keep_embeddings: bool = False


def mine_corpus(
    encoder: TextEncoder,
    corpus: ParallelCorpus,
    settings: MineSettings,
    index_cfg: IndexConfig | None = None,
    encoding: EncodeSettings | None = None,
) -> MineResult:
    """Mine negatives for every record of ``corpus``: one pool per language (``settings.pool == "language"``)
    or one of all languages, each encoded, indexed and searched in turn (see the module docstring).
    ``None`` settings take the defaults of :class:`IndexConfig` / :class:`EncodeSettings`."""
    index_cfg = index_cfg or IndexConfig()
    encoding = encoding or EncodeSettings()
    groups = corpus.group  # ids sharing a passage_id or an identical passage text are one group
    if settings.pool == "language":
        pools = {
            lang: [corpus.pairs[lang][parallel_id] for parallel_id in sorted(corpus.pairs[lang])]
            for lang in corpus.languages
        }
    else:
        pools = {
            "all": [
                corpus.pairs[lang][parallel_id]
                for lang in corpus.languages
                for parallel_id in sorted(corpus.pairs[lang])
            ]
        }
    result = MineResult({}, {lang: LanguageStats() for lang in corpus.languages}, {}, {})
    encode = partial(
        encode_corpus,
        encoder,
        batch_size=encoding.batch_size,
        precision=encoding.precision,
        chunk_size=encoding.chunk_size,
        dtype=encoding.dtype,
    )
    for name, queries in pools.items():
        pool = build_pool(queries, groups)
        files = _embedding_files(encoding.cache_dir, name)
        p_emb = encode(pool.texts, "passage", path=files["passages"], desc=f"encode passages [{name}]")
        index = build_index(p_emb, index_cfg)
        questions = [pair.question for pair in queries]
        q_emb = encode(questions, "query", path=files["queries"], desc=f"encode questions [{name}]")
        top_k = default_top_k(pool, settings)
        result.top_k[name], result.pool_sizes[name] = top_k, len(pool.texts)
        result.index[name] = f"{index.kind} on {index.device}"
        result.negatives.update(
            mine_pool(index, q_emb, queries, pool, groups, settings, top_k, encoding.query_chunk)
        )
        del index, p_emb, q_emb
        if not encoding.keep_embeddings:
            _remove_embedding_files(encoding.cache_dir, name)
    for (_, lang), ids in result.negatives.items():
        stats = result.stats[lang]
        stats.records += 1
        stats.negatives += len(ids)
        stats.short += len(ids) < settings.num_negatives
        stats.empty += not ids
    return result


def _embedding_files(cache_dir: Path | None, name: str) -> dict[str, Path | None]:
    if cache_dir is None:
        return {"passages": None, "queries": None}
    return {kind: Path(cache_dir) / f"{name}.{kind}.npy" for kind in ("passages", "queries")}


def _remove_embedding_files(cache_dir: Path | None, name: str) -> None:
    if cache_dir is None:
        return
    for kind in ("passages", "queries"):
        for path in Path(cache_dir).glob(f"{name}.{kind}*.npy"):
            path.unlink()
    if not any(Path(cache_dir).iterdir()):
        Path(cache_dir).rmdir()


def write_mined_jsonl(
    source: Path, target: Path, negatives: Mapping[tuple[str, str], tuple[str, ...]]
) -> dict[str, int]:
    """Copy ``source`` (a JSONL file the loader has read) line by line to ``target`` (atomically) with
    ``negative_ids`` set on every mined record (all other keys kept, in order; records not mined copied
    unchanged; blank lines dropped). Returns counts: ``records``, ``mined``, ``replaced`` (mined records that
    already had ``negative_ids``)."""
    counts = {"records": 0, "mined": 0, "replaced": 0}

    def write(tmp: str) -> None:
        with open(source, encoding="utf-8-sig") as src, open(tmp, "w", encoding="utf-8") as fh:
            for lineno, text in enumerate(src, start=1):
                if not text.strip():
                    continue
                obj: dict[str, Any] = parse_json_object(text, source, lineno, ("id", "lang"))
                counts["records"] += 1
                key = (obj.get("id"), obj.get("lang"))
                if key in negatives:
                    counts["mined"] += 1
                    counts["replaced"] += "negative_ids" in obj
                    obj["negative_ids"] = list(negatives[key])
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")

    atomic_write(target, write)
    return counts


def write_corpus_mined(
    corpus: ParallelCorpus, target: Path, negatives: Mapping[tuple[str, str], tuple[str, ...]]
) -> dict[str, int]:
    """Export ``corpus`` (any format, e.g. LAReQA) to the JSONL file ``target`` with its groups as
    ``passage_id`` and ``negative_ids`` set on every mined record (:func:`write_corpus_jsonl`), then read it back
    to check that the JSONL loader rebuilds the same groups (so training on the file plans the same batches as
    on ``corpus`` for a seed). Returns the counts of :func:`write_mined_jsonl` plus ``merged_groups``: how many
    of the corpus's groups the file loses because identical passage texts join them (0 when it matches)."""
    extra = {key: {"negative_ids": list(ids)} for key, ids in negatives.items()}
    records = write_corpus_jsonl(corpus, target, extra)
    replaced = sum(
        1
        for lang, by_id in corpus.negative_ids.items()
        for parallel_id in by_id
        if (parallel_id, lang) in negatives
    )
    reloaded = load_jsonl_corpus(target, corpus.name)
    merged = len(set(corpus.group.values())) - len(set(reloaded.group.values()))
    return {"records": records, "mined": len(negatives), "replaced": replaced, "merged_groups": merged}


def summary_lines(
    result: MineResult, settings: MineSettings, counts: Mapping[str, int], source: Path, target: Path
) -> list[str]:
    """What the miner did, for the console: files, pool, window, K, index, then one line per language."""
    top_k = ", ".join(
        f"{name} {k} of {result.pool_sizes[name]} ({result.index[name]})" for name, k in result.top_k.items()
    )
    lines = [
        f"mined {source} -> {target}",
        f"pool: {settings.pool}; rank window {settings.rank_min}-{settings.rank_max} (ranks of distinct passages "
        f"after dropping the positive's group); {settings.num_negatives} negatives per record, seed {settings.seed}",
        f"top K per pool (K of the pool's passages, index): {top_k}",
        f"{counts['mined']} of {counts['records']} records mined"
        + (f" ({counts['replaced']} had negative_ids, replaced)" if counts["replaced"] else ""),
        *(
            [
                f"WARNING: identical passage texts join {counts['merged_groups']} of the dataset's answer groups "
                "in the written file, so training on it plans other batches than on the dataset"
            ]
            if counts.get("merged_groups")
            else []
        ),
        f"{'lang':<6}{'records':>9}{'negatives':>11}{'mean':>7}{'short':>7}{'none':>6}",
    ]
    for lang, s in result.stats.items():
        mean = s.negatives / s.records if s.records else 0.0
        lines.append(f"{lang:<6}{s.records:>9}{s.negatives:>11}{mean:>7.2f}{s.short:>7}{s.empty:>6}")
    return lines
