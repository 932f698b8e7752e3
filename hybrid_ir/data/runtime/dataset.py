"""Training pairs as token ids: the dataset over the memory-mapped stores, its collation, the batch transfer, and
the resumable loader that plays the epoch plans.

See docs/data.md."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hybrid_ir.data.corpus import ParallelCorpus
from hybrid_ir.data.planning.plan import PairRef
from hybrid_ir.data.planning.sampler import HybridBatchSampler
from hybrid_ir.data.runtime.token_store import open_token_store
from hybrid_ir.models.tokenizer import TextTokenizer


class PairDataset(Dataset):
    """Maps a :class:`PairRef` to the token ids of its question and passage, read from each corpus's memory-mapped
    :class:`~hybrid_ir.data.runtime.token_store.TokenStore` (built once per corpus and tokenizer; in memory without
    ``use_cache``), and of its hard negatives if it carries any (a negative record's passage, or a text of the pair's
    ``negatives`` list, from the same store: no text is tokenised here)."""

    def __init__(self, corpora: Sequence[ParallelCorpus], tokenizer: TextTokenizer, use_cache: bool = True):
        self.corpora = list(corpora)
        self.stores = [open_token_store(corpus, tokenizer, use_cache) for corpus in self.corpora]
        for corpus in self.corpora:
            corpus.index_of  # noqa: B018 - built here, before DataLoader workers fork, so they share it
        self.lang_index = [{lang: col for col, lang in enumerate(c.languages)} for c in self.corpora]
        self.pad = tokenizer.pad

    def __len__(self) -> int:
        return sum(len(c) for c in self.corpora)

    def __getitem__(self, ref: PairRef) -> dict[str, Any]:
        store, langs = self.stores[ref.dataset], self.lang_index[ref.dataset]
        index_of = self.corpora[ref.dataset].index_of
        i = index_of[ref.parallel_id]
        item = {
            "q": store.ids(i, langs[ref.q_lang], 0),
            "p": store.ids(i, langs[ref.p_lang], 1),
            "q_lang": ref.q_lang,
            "p_lang": ref.p_lang,
            "parallel_id": ref.parallel_id,
        }
        if ref.negatives:
            item["n"] = [
                store.ids(index_of[neg.parallel_id], langs[neg.lang], 1)
                if neg.parallel_id is not None
                else store.negative(i, langs[neg.lang], neg.position)
                for neg in ref.negatives
            ]
        return item

    def collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad queries and passages to the longest in the batch: ``{q,p}_input_ids``/``_attention_mask`` [b, L];
        pairs with hard negatives add ``n_input_ids``/``n_attention_mask`` [b·k, L], query-major (rows
        ``i·k … i·k + k - 1`` are pair ``i``'s)."""
        q_ids, q_mask = self.pad([it["q"] for it in items])
        p_ids, p_mask = self.pad([it["p"] for it in items])
        batch = {
            "q_input_ids": q_ids,
            "q_attention_mask": q_mask,
            "p_input_ids": p_ids,
            "p_attention_mask": p_mask,
            "q_lang": [it["q_lang"] for it in items],
            "p_lang": [it["p_lang"] for it in items],
            "parallel_id": [it["parallel_id"] for it in items],
            "mono": all(it["q_lang"] == it["p_lang"] for it in items),
        }
        if "n" in items[0]:
            batch["n_input_ids"], batch["n_attention_mask"] = self.pad([n for it in items for n in it["n"]])
        return batch


def batch_to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A collated batch with its tensors on ``device`` (asynchronous copies where the device allows it) and its
    other entries (languages, ids, the ``mono`` flag) as they are."""
    non_blocking = device.type not in ("cpu", "mps")
    return {
        k: v.to(device, non_blocking=non_blocking) if isinstance(v, Tensor) else v for k, v in batch.items()
    }


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position can be saved and restored (Lightning's stateful-loader protocol).

    ``progress()`` returns the training loop's ``(epoch, batches consumed in it)``. Every pass first selects the
    loop's epoch on the batch sampler (Lightning calls ``set_epoch`` only on ``batch_sampler.sampler``, which
    ours does not have), so epoch ``e`` plays the plan of ``(seed, e)`` from its first batch however the previous
    pass ended (exhausted, or abandoned by ``limit_train_batches``), and a run restored mid-epoch continues at its
    next batch. (The loop's batch count cannot place the sampler itself: at the first pass of an epoch it may
    still hold the previous epoch's.) The saved position is the number of batches the loop has *consumed*, not
    the number the loader has prefetched, so a resumed run continues with exactly the next unseen batch.
    ``adapt_state``, when given, maps a saved position before it is restored (a resume onto another plan).
    """

    def __init__(
        self,
        *args: Any,
        progress: Callable[[], tuple[int, int]] | None = None,
        adapt_state: Callable[[dict[str, int]], dict[str, int]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self.adapt_state = adapt_state

    def __iter__(self) -> Any:
        if self.progress is not None:
            self.batch_sampler.set_epoch(self.progress()[0])
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        sampler: HybridBatchSampler = self.batch_sampler
        state = sampler.state_dict()
        if self.progress is not None:
            epoch, consumed = self.progress()
            if consumed >= len(sampler.plan(epoch)):
                epoch, consumed = epoch + 1, 0
            state.update(epoch=epoch, batches_yielded=consumed)
        return state

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.load_state_dict(state if self.adapt_state is None else self.adapt_state(state))
