"""The tiny encoder the tests train and evaluate: a randomly initialised 2-layer, 32-dim BERT with e5-small's
vocabulary (its config overrides, and the overrides that switch dropout off)."""

from __future__ import annotations

from typing import Any

TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
NO_DROPOUT: dict[str, Any] = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
