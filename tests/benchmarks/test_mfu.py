"""The FLOPs arithmetic of the MFU figures, on hand-computed numbers."""

from __future__ import annotations

import pytest

from benchmarks.mfu import bf16_peak_flops, encoder_forward_flops, model_flops_utilisation, train_step_flops


def test_encoder_forward_flops_by_hand() -> None:
    # h=2, f=4, one row of one token: dense 2·1·1·(4·4 + 2·2·4) = 64, attention 4·1·1·1·2 = 8, per layer
    assert encoder_forward_flops(layers=1, hidden=2, ffn=4, rows=1, seq=1) == 72
    assert encoder_forward_flops(layers=3, hidden=2, ffn=4, rows=1, seq=1) == 216
    # attention grows with seq², the rest with seq: rows=2, seq=3 -> dense 2·6·32 = 384, attention 4·2·9·2 = 144
    assert encoder_forward_flops(layers=1, hidden=2, ffn=4, rows=2, seq=3) == 528


def test_train_step_flops_is_three_forwards_plus_similarities() -> None:
    # queries (1 row × 1 token): 72; passages (2 × 3): 528; similarity 2·1·2·2 = 8 -> 3·(72 + 528 + 8)
    assert train_step_flops(1, 2, 4, [(1, 1), (2, 3)]) == 3 * (72 + 528 + 8)
    with pytest.raises(ValueError, match="query and passage"):
        train_step_flops(1, 2, 4, [(1, 1)])


def test_bert_base_step_is_about_six_flops_per_parameter_per_token() -> None:
    # The usual 6·N·tokens rule for BERT-base's 85 M layer parameters, when attention is small (seq 128).
    flops = train_step_flops(12, 768, 3072, [(128, 128), (128, 128)])
    tokens, layer_params = 2 * 128 * 128, 12 * (4 * 768 * 768 + 2 * 768 * 3072)
    assert flops == pytest.approx(6 * layer_params * tokens, rel=0.05)


def test_mfu_and_peaks() -> None:
    assert model_flops_utilisation(1e12, 2.0, 1e12) == 0.5
    with pytest.raises(ValueError):
        model_flops_utilisation(1e12, 0.0, 1e12)
    assert bf16_peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12
    assert bf16_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bf16_peak_flops("NVIDIA H200") == 989.4e12
    assert bf16_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert bf16_peak_flops("NVIDIA GeForce RTX 4090") is None


def test_flops_figures_from_a_measure_record() -> None:
    from benchmarks.gpu_throughput import flops_figures

    # Two timed rounds of batch 2: (q 1, p 3) tokens then (q 2, p 2); h=2, f=4, 1 layer.
    record = {
        "architecture": {"layers": 1, "hidden": 2, "ffn": 4},
        "batch_size": 2,
        "seq_lengths": [[1, 3], [2, 2]],
        "timings": {"ours": {"samples_s": [1.0, 2.0]}, "bare": {"samples_s": [0.5, 0.5]}},
    }
    flops = [train_step_flops(1, 2, 4, [(2, 1), (2, 3)]), train_step_flops(1, 2, 4, [(2, 2), (2, 2)])]
    out = flops_figures(record, peak_flops=100.0)
    assert out["ours"]["tokens_per_s"] == pytest.approx((8 / 1.0 + 8 / 2.0) / 2)
    assert out["bare"]["tokens_per_s"] == pytest.approx(16.0)
    assert out["ours"]["mfu"] == pytest.approx((flops[0] / 1.0 + flops[1] / 2.0) / 2 / 100.0)
    assert out["bare"]["tflops"] == pytest.approx((flops[0] + flops[1]) / 0.5 / 2 / 1e12)
    assert flops_figures(record, peak_flops=None)["ours"]["mfu"] is None
