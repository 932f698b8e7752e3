"""pool(): masked mean, first token, pooler output."""

from __future__ import annotations

import pytest
import torch

from hybrid_ir.models.pooling import pool


def _states() -> tuple[torch.Tensor, torch.Tensor]:
    """hidden [2, 4, 3] and a mask with 3 real tokens in row 0 and 1 in row 1 (the rest is padding)."""
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    return hidden, mask


def test_mean_ignores_padding() -> None:
    hidden, mask = _states()
    expected = torch.stack(
        [
            (hidden[0, 0] + hidden[0, 1] + hidden[0, 2]) / 3,
            hidden[1, 0],
        ]
    )
    torch.testing.assert_close(pool(hidden, mask, "mean"), expected)


def test_mean_changes_with_the_padded_values_only_through_the_mask() -> None:
    hidden, mask = _states()
    noisy = hidden.clone()
    noisy[0, 3] = 1e6
    noisy[1, 1:] = -1e6
    torch.testing.assert_close(pool(noisy, mask, "mean"), pool(hidden, mask, "mean"))


def test_mean_of_an_empty_row_is_finite() -> None:
    hidden, _ = _states()
    out = pool(hidden, torch.zeros(2, 4, dtype=torch.long), "mean")
    assert torch.isfinite(out).all()


def test_cls_is_the_first_token() -> None:
    hidden, mask = _states()
    torch.testing.assert_close(pool(hidden, mask, "cls"), hidden[:, 0])


def test_pooler_returns_the_pooler_output() -> None:
    hidden, mask = _states()
    pooled = torch.randn(2, 3)
    assert pool(hidden, mask, "pooler", pooled) is pooled


def test_pooler_missing_names_the_problem() -> None:
    hidden, mask = _states()
    with pytest.raises(ValueError, match="pooler_output is None"):
        pool(hidden, mask, "pooler", None)


def test_unknown_mode_lists_the_choices() -> None:
    hidden, mask = _states()
    with pytest.raises(ValueError, match="mean, cls, pooler"):
        pool(hidden, mask, "max")  # type: ignore[arg-type]
