"""Model FLOPs utilisation (MFU) of a bi-encoder training step: the FLOPs the model's arithmetic needs for the
forward and backward pass over the step time, against the chip's dense bf16 peak.

Forward FLOPs of a BERT-style encoder on ``rows`` sequences of ``seq`` tokens (``L`` layers, hidden size ``h``,
feed-forward size ``f``), counting a multiply-add as 2 FLOPs:

* per layer, the projections Q, K, V, output (``4·h²`` per token) and the feed-forward (``2·h·f`` per token):
  ``2·rows·seq·(4h² + 2hf)``;
* per layer, the attention scores ``QKᵀ`` and their use ``AV``: ``2·2·rows·seq²·h``;
* the embedding lookup is a gather (no FLOPs); layer norms, softmax, GELU and pooling are ignored (element-wise).

The backward pass costs twice the forward (gradients w.r.t. activations and weights), so a training step costs
``3×`` the forward of the query and passage sides plus ``3 · 2·B_q·B_p·h`` for the in-batch similarity matrix.
Padded tokens are counted: they are computed.
"""

from __future__ import annotations

from collections.abc import Sequence

# Dense (no sparsity) bf16 tensor-core peaks in FLOP/s, from NVIDIA's data sheets. Matched against
# ``torch.cuda.get_device_name()`` in this order (first substring that matches wins).
BF16_PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200 NVL", 835e12),
    ("H200", 989.4e12),
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H100", 989.4e12),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    ("A100", 312e12),  # SXM4 and PCIe
)


def bf16_peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the chip named ``device_name`` (:data:`BF16_PEAK_FLOPS`); ``None`` if unknown."""
    for key, peak in BF16_PEAK_FLOPS:
        if key.lower() in device_name.lower():
            return peak
    return None


def encoder_forward_flops(layers: int, hidden: int, ffn: int, rows: int, seq: int) -> float:
    """Forward FLOPs of the encoder's layers on ``rows`` sequences of ``seq`` tokens (see the module docs)."""
    dense = 2 * rows * seq * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = 4 * rows * seq * seq * hidden
    return float(layers * (dense + attention))


def train_step_flops(layers: int, hidden: int, ffn: int, shapes: Sequence[tuple[int, int]]) -> float:
    """FLOPs of one bi-encoder training step (forward + backward = 3× forward): ``shapes`` holds the padded
    ``(rows, seq)`` of the query side and of the passage side; the loss compares every query with every
    passage (a ``B_q × B_p`` similarity matrix)."""
    if len(shapes) != 2:
        raise ValueError(f"expected the (rows, seq) of the query and passage sides, got {shapes}")
    (q_rows, _), (p_rows, _) = shapes
    forward = sum(encoder_forward_flops(layers, hidden, ffn, rows, seq) for rows, seq in shapes)
    forward += 2 * q_rows * p_rows * hidden
    return 3.0 * forward


def model_flops_utilisation(flops: float, seconds: float, peak_flops: float) -> float:
    """Achieved FLOP/s (``flops / seconds``) as a fraction of ``peak_flops``."""
    if seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"seconds ({seconds}) and peak_flops ({peak_flops}) must be positive")
    return flops / seconds / peak_flops
