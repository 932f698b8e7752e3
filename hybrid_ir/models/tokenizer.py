"""Tokenisation with the model's text conventions and collation (pad to the longest sequence in the batch).
See docs/models.md."""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer
from torch import Tensor

TextKind = Literal["query", "passage"]


@dataclass
class TextTokenizer:
    """A tokenizer with the model's text conventions: prefixes per kind, stripping, truncation.

    ``__call__(texts, kind)`` returns token-id lists without padding; :meth:`pad` turns them into tensors. A fast
    (Rust) tokenizer is called through a private copy of its pipeline with this max length's truncation set once, and
    only the ids are read back: the ids of ``tokenizer(texts, truncation=True, max_length=...)``, without transformers'
    conversion of every encoding into a dict of lists (its cost: docs/benchmarks.md, Scale) and without touching
    the caller's tokenizer. The Rust call releases the GIL, so another thread can prepare the next batch meanwhile.
    """

    tokenizer: object
    query_prefix: str = ""
    passage_prefix: str = ""
    max_length: int = 128

    def prefix(self, kind: TextKind) -> str:
        return self.query_prefix if kind == "query" else self.passage_prefix

    def __call__(self, texts: Sequence[str], kind: TextKind) -> list[list[int]]:
        if not texts:  # transformers' fast tokenizers fail on an empty batch
            return []
        pre = self.prefix(kind)
        prepared = [pre + t.strip() for t in texts]
        pipeline = self.rust_pipeline()
        if pipeline is not None:
            return [
                encoding.ids for encoding in pipeline.encode_batch_fast(prepared, add_special_tokens=True)
            ]
        enc = self.tokenizer(
            prepared, add_special_tokens=True, truncation=True, max_length=self.max_length, padding=False
        )
        return list(enc["input_ids"])

    def rust_pipeline(self) -> Tokenizer | None:
        """The fast tokenizer's pipeline, copied once per max length, truncating at it without padding (``None`` for
        a tokenizer without a Rust backend)."""
        cached = self.__dict__.get("_cached_pipeline")
        if cached is not None and cached[0] == (id(self.tokenizer), self.max_length):
            return cached[1]
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        pipeline = None
        if isinstance(backend, Tokenizer):
            pipeline = Tokenizer.from_str(backend.to_str())
            pipeline.no_padding()
            side = getattr(self.tokenizer, "truncation_side", "right")
            pipeline.enable_truncation(self.max_length, strategy="longest_first", direction=side)
        self.__dict__["_cached_pipeline"] = ((id(self.tokenizer), self.max_length), pipeline)
        return pipeline

    @property
    def pad_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return 0 if pad is None else int(pad)

    def pad(self, seqs: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Pad id lists to the longest: returns ``input_ids`` and ``attention_mask``, both [B, L_max] int64."""
        return pad_sequences(seqs, self.pad_id)

    def fingerprint(self) -> str:
        """A short hash of everything that changes the token ids: the tokenizer's own definition
        (:func:`tokenizer_definition`), the prefixes and the max length, and the ids of a probe text. Where the
        tokenizer's files lie does not enter: a moved cache, a copied model folder or a hub id and its local
        download keep the token stores built with them (``docs/data.md``)."""
        probe = self.tokenizer("query: Wer war 1905 Präsident? 北京 ١٢٣", add_special_tokens=True)[
            "input_ids"
        ]
        definition = tokenizer_definition(self.tokenizer)
        key = json.dumps([definition, self.query_prefix, self.passage_prefix, self.max_length, probe])
        return hashlib.sha256(key.encode()).hexdigest()[:16]


def tokenizer_definition(tokenizer: object) -> str:
    """A hash of what a tokenizer does, not of where it was loaded from. A fast tokenizer's is its serialised
    pipeline (normaliser, pre-tokenizer, model with its vocabulary, post-processor, added tokens) without the
    truncation and padding settings, which each call sets on it; another tokenizer's is its class and vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        pipeline = Tokenizer.from_str(backend.to_str())  # a copy: the caller's tokenizer stays as it is
        pipeline.no_truncation()
        pipeline.no_padding()
        blob = pipeline.to_str()
    else:
        vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        blob = json.dumps([type(tokenizer).__qualname__, sorted(vocab.items())])
    return hashlib.sha256(blob.encode()).hexdigest()


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad ``seqs`` to the longest: ``input_ids`` [B, L] and ``attention_mask`` [B, L] (1 = token).

    Vectorised: the ids of all sequences in one array, scattered into the padded one through the mask (row-major
    order is the sequences' order), instead of a tensor built from padded Python lists (a batch's fetch time:
    docs/benchmarks.md, Scale)."""
    lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
    length = int(lengths.max()) if len(seqs) else 0
    mask = np.arange(length) < lengths[:, None]
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    ids[mask] = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64))
