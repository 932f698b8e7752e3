"""The command-line entry points, run as a user would: config printing, choice errors, dry runs, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hybrid_ir.analysis.report import write_report
from tests.helpers.jsonl import write_jsonl
from tests.helpers.repo import REPO

ROOT = REPO
NINE = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]


def run(args: list[str], tmp_path: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_cfg_job_prints_resolved_config_offline(tmp_path: Path) -> None:
    proc = run(["train.py", "--cfg", "job", "sampler=hybrid", "model=labse"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name_or_path: sentence-transformers/LaBSE" in proc.stdout
    assert "mode: hybrid" in proc.stdout
    # no experiment: the model's own length and the full evaluation pool (experiment=cpu is opt-in)
    assert "max_length: 128\n" in proc.stdout and "max_qids: null\n" in proc.stdout


def test_wrong_choice_lists_valid_options(tmp_path: Path) -> None:
    proc = run(["train.py", "--cfg", "job", "sampler=hybird"], tmp_path)
    assert proc.returncode != 0
    err = proc.stderr
    assert "hybird" in err
    for choice in ("hybrid", "mono", "cross"):
        assert f"\t{choice}" in err


def test_slurm_launcher_composes_from_trainer(tmp_path: Path) -> None:
    proc = run(
        [
            "train.py",
            # --cfg all: the launcher's interpolations point into the job config (trainer.devices, ...)
            "--cfg",
            "all",
            "--resolve",
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "SlurmLauncher" in out
    assert "gpus_per_node: 4" in out and "tasks_per_node: 4" in out and "\n    nodes: 2" in out


@pytest.mark.parametrize(
    ("experiment", "max_qids", "max_length"), [("cpu", "100", "64"), ("replication", "100", "64")]
)
def test_evaluate_takes_the_training_experiments(
    tmp_path: Path, experiment: str, max_qids: str, max_length: str
) -> None:
    """``evaluate.py experiment=X`` evaluates as the training experiment X does (same texts, same pool)."""
    proc = run(["evaluate.py", f"experiment={experiment}", "--cfg", "job"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"max_qids: {max_qids}\n" in proc.stdout and f"max_length: {max_length}\n" in proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_evaluate_on_gpu_without_cuda_says_so(tmp_path: Path) -> None:
    proc = run(["evaluate.py", "trainer=gpu", "model=tiny", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert "trainer.accelerator='gpu' but no CUDA device is visible; use trainer=cpu" in proc.stderr


def _pairs_file(path: Path) -> Path:
    lines = [
        {
            "id": f"q{i}",
            "lang": lang,
            "question": f"question {i} on topic {i % 4}",
            "passage": f"passage {i} {lang}",
        }
        | ({"passage_id": "shared"} if i in (0, 1) else {})
        | {"source": "synthetic"}
        for i in range(24)
        for lang in ("en", "de")
    ]
    return write_jsonl(path, lines)


@pytest.mark.slow
def test_mine_writes_negative_ids_the_loader_reads_back(tmp_path: Path) -> None:
    from hybrid_ir.data.formats.jsonl import load_jsonl_corpus

    source = _pairs_file(tmp_path / "pairs.jsonl")
    out = tmp_path / "run"
    args = ["mine.py", "model=tiny", "trainer.precision=32-true", f"data.train.0.path={source}"]
    args += ["mine.rank_min=2", "mine.rank_max=8", "mine.num_negatives=3", f"hydra.run.dir={out}"]
    proc = run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "rank window 2-8" in proc.stdout and "48 of 48 records mined" in proc.stdout
    assert any(line.split()[:4] == ["de", "24", "72", "3.00"] for line in proc.stdout.splitlines())
    corpus = load_jsonl_corpus(out / "pairs.mined.jsonl", "mined")
    for lang in ("en", "de"):
        assert set(corpus.negative_ids[lang]) == set(corpus.pairs[lang])
        for parallel_id, ids in corpus.negative_ids[lang].items():
            assert len(ids) == 3 and all(corpus.group[n] != corpus.group[parallel_id] for n in ids)
    assert all(json.loads(line)["source"] == "synthetic" for line in (out / "pairs.mined.jsonl").open())
    stats = json.loads((out / "mine_stats.json").read_text())
    assert stats["top_k"] == {"de": 18, "en": 18} and stats["index"] == {
        "de": "flat on cpu",
        "en": "flat on cpu",
    }
    assert not (out / "embeddings").exists()


@pytest.mark.slow
def test_mine_exports_a_lareqa_dataset_whose_dry_run_plans_the_same_batches_with_negatives(
    tmp_path: Path,
) -> None:
    """Mining a LAReQA dataset writes a JSONL file of all its records with negative_ids; training on it with
    experiment=replication_negatives plans the batches of experiment=replication, each pair with a listed
    negative in its passage language."""
    from tests.helpers.lareqa import write_toy_lareqa

    data = write_toy_lareqa(tmp_path / "data")
    toy = ["data.train.0.name=toy", "data.train.0.languages=[de,en,es]", "data.batch_size=4"]
    out = tmp_path / "mined"
    args = ["mine.py", "model=tiny", "trainer.precision=32-true", "data=default", f"data.root={data}"]
    args += ["data.download=false", *toy[:2], "mine.rank_min=2", "mine.rank_max=8", "mine.num_negatives=2"]
    proc = run([*args, f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"mined {data / 'toy'} -> {out / 'toy.mined.jsonl'}" in proc.stdout
    assert "70 of 70 records mined" in proc.stdout and "WARNING" not in proc.stdout
    assert any(line.split()[:4] == ["en", "23", "46", "2.00"] for line in proc.stdout.splitlines())
    assert json.loads((out / "mine_stats.json").read_text())["counts"]["merged_groups"] == 0
    stats = {}
    for name, extra in [
        ("plain", ["experiment=replication", f"data.root={data}", "data.download=false"]),
        ("negatives", ["experiment=replication_negatives", f"data.train.0.path={out / 'toy.mined.jsonl'}"]),
    ]:
        proc = run(["train.py", "dry_run=true", *extra, *toy, f"hydra.run.dir={tmp_path / name}"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        stats[name] = json.loads((tmp_path / name / "batch_stats.json").read_text())
    negatives = stats["negatives"].pop("negatives")
    assert stats["negatives"] == stats["plain"] and stats["plain"]["batches"] >= 5
    sources = negatives.pop("sources")
    count = 4 * stats["plain"]["batches"]
    assert negatives == {
        "per_query": 1,
        "batches": stats["plain"]["batches"],
        "batches_sampled": stats["plain"]["batches"],
        "count": count,
        "in_passage_lang_share": 1.0,
        "group_clashes": 0,
    }
    # mined ids serve (a random id only where both listed ones clash with the batch or lack the language)
    assert sources["listed"] + sources["random"] == count and sources["listed"] > 0.8 * count


def test_mine_config_errors_name_the_key(tmp_path: Path) -> None:
    args = ["mine.py", "model=tiny", "data=default", f"data.root={tmp_path}", "data.download=false"]
    proc = run([*args, f"hydra.run.dir={tmp_path}"], tmp_path)
    assert proc.returncode != 0
    assert f"file not found under data root {tmp_path}" in proc.stderr
    assert "Loading weights" not in proc.stderr + proc.stdout  # the data is checked before the model loads
    # a bad mine.* setting (mine.rank_max below mine.rank_min): test_clean_errors.py[mine.py]
    proc = run(["mine.py", "model=tiny", f"hydra.run.dir={tmp_path}"], tmp_path)
    assert "data.train.0.path is not set" in proc.stderr


@pytest.mark.parametrize("sampler", ["mono", "cross", "hybrid"])
def test_dry_run_batch_stats(sampler: str, tmp_path: Path) -> None:
    out = tmp_path / sampler
    proc = run(["train.py", "dry_run=true", f"sampler={sampler}", f"hydra.run.dir={out}"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((out / "batch_stats.json").read_text())
    assert stats["languages"] == NINE
    matrix = stats["lang_pairs"]
    diagonal = sum(matrix[i][i] for i in range(len(NINE)))
    off = sum(sum(row) for row in matrix) - diagonal
    assert stats["duplicate_ids"] == 0 and stats["group_clashes"] == 0 and stats["impure_pairs"] == 0
    assert "Loading weights" not in proc.stderr + proc.stdout  # no model was loaded
    if sampler == "mono":
        assert off == 0 and diagonal > 0 and stats["kinds"]["cross"] == 0
    elif sampler == "cross":
        assert diagonal == 0 and off > 0 and stats["kinds"]["mono"] == 0
    else:
        mono, cross = stats["kinds"]["mono"], stats["kinds"]["cross"]
        assert mono > 0 and cross > 0
        assert diagonal == mono * stats["batch_size"] and off == cross * stats["batch_size"]
        # alpha = 0.5: binomial with n = number of batches; 4 standard deviations
        n = mono + cross
        assert abs(mono - 0.5 * n) <= 4 * (0.25 * n) ** 0.5


@pytest.mark.slow
def test_two_job_multirun_and_report(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run(
        [
            "train.py",
            "-m",
            "experiment=smoke",
            "sampler=hybrid,mono",
            "trainer.max_steps=2",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.rglob("metrics.json"))
    assert [j.name for j in jobs] == ["0_sampler=hybrid", "1_sampler=mono"]
    for job in jobs:
        records = json.loads((job / "metrics.json").read_text())
        assert [r["tag"] for r in records] == ["pretrained", "epoch0-step2"]
        assert (job / "checkpoints" / "last.ckpt").is_file()
    report = write_report([sweep], None, tmp_path / "report", n_resamples=200)
    groups = [r["group"] for r in report["rows"]]
    assert groups == ["pretrained", "sampler=hybrid", "sampler=mono"]
    for name in ("report.csv", "report.md", "report.png", "significance.json"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    assert {(s["a"], s["b"]) for s in report["significance"]} == {("sampler=hybrid", "sampler=mono")}
