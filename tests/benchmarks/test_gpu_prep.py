"""The GPU benchmarks' pieces on the CPU: the base-size model directory, GradCache against the plain step, and
the FLOPs figures of a real (tiny) timed run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.base_model import ARCHITECTURES, write_model_dir
from hybrid_ir.models.encoder import Encoder
from tests.helpers.encoders import TINY_CONFIG


def test_base_model_directory_is_bert_base_with_the_xlmr_vocabulary(tmp_path: Path) -> None:
    path = write_model_dir("base", tmp_path / "base")
    config = json.loads((path / "config.json").read_text())
    assert {k: config[k] for k in ARCHITECTURES["base"]} == ARCHITECTURES["base"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"]) == (
        768,
        12,
        3072,
    )
    assert config["model_type"] == "bert" and config["vocab_size"] == 250002
    assert not (path / "model.safetensors").exists()  # weights come from model.random_init
    encoder = Encoder(str(path), random_init=True, config_overrides=TINY_CONFIG, query_prefix="query: ")
    assert encoder.encode(["Wie hoch ist der Mount Everest?", "x"], "query").shape == (2, 32)


@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_gpu_gradcache_equals_the_plain_step_on_cpu() -> None:
    from benchmarks.gpu_gradcache import Settings, goals, measure

    settings = Settings(batch_sizes=(8, 16), chunk=4, precision="32-true")
    result = measure(["model=tiny", "trainer.precision=32-true"], settings, "cpu")
    assert [r["batch_size"] for r in result["rows"]] == [8, 16]
    for row in result["rows"]:
        assert row["plain"]["peak_memory_mb"] is None  # memory is measured on CUDA only
        assert row["loss_abs_diff"] < 1e-5 and row["plain"]["loss"] > 0
    checks = goals(result, settings)
    assert [g["name"].split(":")[0] for g in checks] == ["B=8", "B=16"] and all(g["met"] for g in checks)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_e5_tokenizer")
def test_flops_figures_of_a_timed_tiny_run() -> None:
    from benchmarks.gpu_throughput import measure_with_flops
    from benchmarks.train_throughput import Case

    result = measure_with_flops(Case("tiny", 1, 2, ("trainer.precision=32-true",)), peak_flops=1e12)
    assert result["architecture"]["layers"] == TINY_CONFIG["num_hidden_layers"]
    assert result["architecture"]["hidden"] == TINY_CONFIG["hidden_size"]
    for name in ("ours", "bare"):
        figures = result["flops"][name]
        assert figures["tokens_per_s"] > 0 and figures["mfu"] > 0
        assert figures["tflops"] == pytest.approx(figures["mfu"])  # a 1 TFLOP/s peak: MFU = TFLOP/s


def test_gpu_benchmarks_skip_cleanly_without_cuda() -> None:
    from benchmarks import gpu_gradcache, gpu_throughput

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the GPU benchmarks run instead")
    for module in (gpu_throughput, gpu_gradcache):
        record = module.run(quick=True)
        assert record["skipped"] == "no CUDA device visible" and record["goals"] == []
        assert module.summary(record) == ["skipped: no CUDA device visible"]


def test_gpu_cases_compose_at_base_size_in_bf16() -> None:
    from benchmarks.gpu_throughput import full_cases
    from benchmarks.harness import bench_config
    from benchmarks.train_throughput import training_overrides

    base, *small = full_cases()
    cfg = bench_config([*training_overrides(base.model, base.warmup + base.steps), *base.overrides])
    config = json.loads((Path(cfg.model.name_or_path) / "config.json").read_text())
    assert config["hidden_size"] == 768 and cfg.model.random_init and not cfg.model.freeze_word_embeddings
    assert (cfg.data.batch_size, cfg.model.max_length) == (128, 128)
    assert (cfg.trainer.accelerator, cfg.trainer.precision) == ("gpu", "bf16-mixed")
    assert "model_checkpoint" not in cfg.callbacks and "progress_bar" in cfg.callbacks
    assert [c.overrides[-1] for c in small] == ["data.batch_size=32", "data.batch_size=64"]
