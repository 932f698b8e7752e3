"""Pooling of token states into one vector per text. See docs/models.md."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

PoolingMode = Literal["mean", "cls", "pooler"]
POOLING_MODES: tuple[str, ...] = ("mean", "cls", "pooler")


def pool(
    hidden: Tensor, attention_mask: Tensor, mode: PoolingMode, pooler_output: Tensor | None = None
) -> Tensor:
    """Pool token states ``hidden`` [B, L, D] into [B, D].

    * ``mean``: Σ_t m_t h_t / Σ_t m_t over the attention mask m (E5, including ``<s>``/``</s>``);
    * ``cls``: h_0, the first token's state;
    * ``pooler``: the model's pooler output (dense + tanh over h_0, as LaBSE uses).
    """
    if mode == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "pooler":
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs a model with a pooling layer (pooler_output is None)")
        return pooler_output
    raise ValueError(f"unknown pooling {mode!r}; choose one of {', '.join(POOLING_MODES)}")
