"""Evaluator: config validation, metrics.json records, per-query files, plots, MIRACL, the summary table."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from hybrid_ir.analysis.jobs import read_job
from hybrid_ir.analysis.report import per_query_values
from hybrid_ir.data.formats.lareqa_files import load_lareqa_benchmark
from hybrid_ir.evaluation.config import EvalConfig
from hybrid_ir.evaluation.lareqa_metrics import evaluate_lareqa
from hybrid_ir.evaluation.outputs import per_query_path, read_per_query
from hybrid_ir.evaluation.runner import Evaluator
from hybrid_ir.evaluation.subset import subset_pool
from hybrid_ir.retrieval.encode import encode_benchmark
from hybrid_ir.utils.errors import ConfigError
from hybrid_ir.utils.settings import settings
from tests.helpers.ddp import gloo_group, spawn
from tests.helpers.fakes import BagOfWordsEncoder
from tests.helpers.jsonl import write_jsonl
from tests.helpers.lareqa import shared_lareqa_root

MLQA_LANGS = ["ar", "de", "en", "es", "hi", "vi", "zh"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def shared_root() -> Path:
    return shared_lareqa_root("mlqa-r")


def _write_miracl(root: Path, lang: str) -> Path:
    """Tiny MIRACL-format topics, qrels and corpus; returns the corpus file."""
    rng = random.Random(1)
    vocab = [f"w{i}" for i in range(40)]
    corpus = {f"{a}#{p}": " ".join(rng.sample(vocab, 5)) for a in range(20) for p in range(3)}
    docs = list(corpus)
    topics = {str(q): " ".join(corpus[docs[3 * q]].split()[:3]) for q in range(10)}
    (root / "miracl" / "topics").mkdir(parents=True)
    (root / "miracl" / "qrels").mkdir()
    (root / "miracl" / "topics" / f"topics.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8"
    )
    (root / "miracl" / "qrels" / f"qrels.miracl-v1.0-{lang}-dev.tsv").write_text(
        "".join(f"{q} Q0 {docs[3 * int(q)]} 1\n{q} Q0 {docs[3 * int(q) + 1]} 0\n" for q in topics),
        encoding="utf-8",
    )
    return write_jsonl(
        root / f"corpus-{lang}.jsonl", ({"docid": d, "title": "", "text": t} for d, t in corpus.items())
    )


@pytest.fixture()
def root(tmp_path: Path, shared_root: Path) -> Path:
    """A data root holding MLQA-R (a link to the real files) and a generated MIRACL ``sw``."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "mlqa-r").symlink_to(shared_root / "mlqa-r", target_is_directory=True)
    _write_miracl(root, "sw")
    return root


def _cfg(root: Path, **overrides) -> EvalConfig:
    datasets = [
        {"name": "mlqa-r", "format": "lareqa", "languages": MLQA_LANGS},
        {
            "name": "miracl",
            "format": "miracl",
            "languages": ["sw"],
            "corpus": {"sw": str(root / "corpus-sw.jsonl")},
        },
    ]
    values = {"datasets": datasets, "root": str(root), "download": False, "max_qids": 15, "subset_seed": 4}
    return settings(EvalConfig, {**values, **overrides}, "eval")


# -------------------------------------------------- validation


def test_validate_accepts_a_good_config(root: Path) -> None:
    specs = Evaluator(_cfg(root)).validate()
    assert [(s.name, s.format) for s in specs] == [("mlqa-r", "lareqa"), ("miracl", "miracl")]


def test_unknown_language_lists_the_dataset_languages(root: Path) -> None:
    cfg = _cfg(root, datasets=[{"name": "mlqa-r", "format": "lareqa", "languages": ["en", "el"]}])
    with pytest.raises(ConfigError, match=r"no language.*el") as err:
        Evaluator(cfg).validate()
    assert "ar, de, en, es, hi, vi, zh" in str(err.value)


def test_unknown_format_lists_the_valid_ones(root: Path) -> None:
    cfg = _cfg(root, datasets=[{"name": "mlqa-r", "format": "squad", "languages": ["en"]}])
    with pytest.raises(ConfigError, match=r"format='squad'.*lareqa, miracl"):
        Evaluator(cfg).validate()


def test_unknown_dataset_and_miracl_without_corpus(root: Path) -> None:
    cfg = _cfg(root, datasets=[{"name": "nq-r", "format": "lareqa", "languages": ["en"]}])
    with pytest.raises(ConfigError, match="'nq-r' not found under data root"):
        Evaluator(cfg).validate()
    cfg = _cfg(root, datasets=[{"name": "miracl", "format": "miracl", "languages": ["sw"], "corpus": {}}])
    with pytest.raises(ConfigError, match=r"passage corpus.*corpus\.sw"):
        Evaluator(cfg).validate()
    cfg = _cfg(root, datasets=[{"name": "miracl", "format": "miracl", "languages": ["fi"]}])
    with pytest.raises(ConfigError, match=r"no language.*fi.*it has: sw"):
        Evaluator(cfg).validate()


def _miracl_only(root: Path, corpus: object) -> EvalConfig:
    spec = {"name": "miracl", "format": "miracl", "languages": ["sw"], "corpus": {"sw": corpus}}
    return EvalConfig(datasets=[spec], root=str(root), download=False, plots=False)


def test_miracl_corpus_in_several_files(tmp_path: Path) -> None:
    """A corpus given as a directory, a glob or a list of files is scored like the single file."""
    single = _write_miracl(tmp_path, "sw")
    lines = single.read_text().splitlines(keepends=True)
    folder = tmp_path / "miracl-corpus-v1.0-sw"
    folder.mkdir()
    for i in range(3):
        with gzip.open(folder / f"docs-{i}.jsonl.gz", "wt", encoding="utf-8") as fh:
            fh.writelines(lines[i::3])
    expected = Evaluator(_miracl_only(tmp_path, str(single)), tmp_path / "one").run(BagOfWordsEncoder(), "t")
    parts = [str(folder / f"docs-{i}.jsonl.gz") for i in range(3)]
    for i, corpus in enumerate((str(folder), str(folder / "docs-*.jsonl.gz"), parts)):
        result = Evaluator(_miracl_only(tmp_path, corpus), tmp_path / str(i)).run(BagOfWordsEncoder(), "t")
        assert result["miracl"]["scalars"] == pytest.approx(expected["miracl"]["scalars"])
    with pytest.raises(
        ConfigError, match=r"eval\.datasets\[0\]\.corpus\.sw: .*docs-\*\.jsonl: corpus: not found"
    ):
        Evaluator(_miracl_only(tmp_path, str(folder / "docs-*.jsonl"))).validate()
    with pytest.raises(
        ConfigError, match=r"eval\.datasets\[0\]\.corpus\.sw must be a JSONL file, a directory"
    ):
        Evaluator(_miracl_only(tmp_path, [])).validate()


def test_per_query_file_round_trip_with_names_that_need_sanitising(root: Path, tmp_path: Path) -> None:
    """The report reads the per-query file the evaluator wrote, whatever the dataset name and tag."""
    (root / "mlqa r").symlink_to(root / "mlqa-r", target_is_directory=True)
    datasets = [{"name": "mlqa r", "format": "lareqa", "languages": ["de", "en"]}]
    out = tmp_path / "job"
    Evaluator(_cfg(root, datasets=datasets, plots=False), out).run(BagOfWordsEncoder(), tag="epoch0/step 7")
    written = per_query_path(out, "mlqa r", "epoch0/step 7")
    assert written.parent == out / "per_query" and written.name == "mlqa_r__epoch0_step_7.csv.gz"
    columns = read_per_query(written)
    values = per_query_values(read_job(out), "mlqa r", "map_multi")
    expected = {
        (q, lang, target): ap
        for q, lang, setting, target, ap in zip(
            columns["qid"], columns["lang"], columns["setting"], columns["target"], columns["ap"], strict=True
        )
        if setting == "multi"
    }
    assert values == expected and len(values) > 10


def test_download_widens_the_known_languages(tmp_path: Path) -> None:
    """With download on, a dataset absent from the root is valid in the languages of its public source."""
    datasets = [{"name": "xquad-r", "format": "lareqa", "languages": ["el", "th"]}]
    Evaluator(EvalConfig(datasets=datasets, root=str(tmp_path), download=True)).validate()
    with pytest.raises(ConfigError, match="not found under data root"):
        Evaluator(EvalConfig(datasets=datasets, root=str(tmp_path), download=False)).validate()


def test_config_field_errors(root: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        _cfg(root, precision="fp8")
    with pytest.raises(ConfigError, match="max_qids"):
        _cfg(root, max_qids=0)
    with pytest.raises(ConfigError, match=r"eval\.topk: unknown setting; valid: datasets, root, download"):
        Evaluator({"datasets": [], "topk": 3})
    with pytest.raises(ConfigError, match=r"eval\.batch_size='8': expected an integer$"):
        _cfg(root, batch_size="8")
    with pytest.raises(
        ConfigError, match=r"^eval\.datasets is not set; set it in the config or on the command line"
    ):
        Evaluator({"root": str(root)})
    dup = [{"name": "mlqa-r", "format": "lareqa", "languages": ["en"]}] * 2
    with pytest.raises(ConfigError, match="duplicate"):
        Evaluator(_cfg(root, datasets=dup)).validate()
    assert _cfg(root, precision=32).precision == 32  # trainer.precision=32 as the YAML gives it


def test_accepts_hydra_configs(root: Path) -> None:
    """A DictConfig (as Hydra instantiates it), with interpolations, becomes plain lists and dicts."""
    raw = OmegaConf.create(
        {
            "data": {
                "root": str(root),
                "eval": [{"name": "mlqa-r", "format": "lareqa", "languages": ["en", "de"]}],
            },
            "eval": {"datasets": "${data.eval}", "root": "${data.root}", "download": False, "precision": 32},
        }
    )
    evaluator = Evaluator(raw.eval)
    assert evaluator.cfg.datasets == [{"name": "mlqa-r", "format": "lareqa", "languages": ["en", "de"]}]
    assert evaluator.cfg.root == str(root) and evaluator.cfg.precision == 32
    assert [spec.languages for spec in evaluator.validate()] == [("en", "de")]
    direct = settings(EvalConfig, {"datasets": raw.data.eval, "root": str(root)}, "eval")
    assert isinstance(direct.datasets, list) and isinstance(direct.datasets[0], dict)


# -------------------------------------------------- run


def test_run_writes_records_per_query_files_and_plots(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    evaluator = Evaluator(_cfg(root), out)
    enc = BagOfWordsEncoder()
    first = evaluator.run(enc, tag="pretrained")
    second = evaluator.run(enc, tag="epoch0", step=7)

    records = json.loads((out / "metrics.json").read_text())
    assert [(r["tag"], r["step"]) for r in records] == [("pretrained", None), ("epoch0", 7)]
    assert records == evaluator.records
    for record in records:
        assert set(record["datasets"]) == {"mlqa-r", "miracl"}
        scalars = record["datasets"]["mlqa-r"]["scalars"]
        assert all(0.0 <= scalars[k] <= 1.0 for k in ("map_mono", "map_cross", "map_multi"))
        assert "per_query" not in record["datasets"]["mlqa-r"]
        assert 0.0 <= record["datasets"]["miracl"]["scalars"]["ndcg_at10"] <= 1.0

    # the same numbers as evaluating the subset benchmark directly
    bench = subset_pool(load_lareqa_benchmark(root, "mlqa-r", MLQA_LANGS), 15, seed=4)
    direct = evaluate_lareqa(*encode_benchmark(enc, bench, batch_size=32), bench, map_k=20, share_k=10)
    assert second["mlqa-r"]["scalars"] == pytest.approx(direct.scalars())
    assert second["mlqa-r"]["pair_map"] == direct.pair_map
    assert second["mlqa-r"]["scalars"]["n_queries"] == len(bench.queries)

    per_query = read_per_query(out / "per_query" / "mlqa-r__epoch0.csv.gz")
    assert {"qid", "lang", "setting", "ap", "rank_distance"} <= set(per_query)
    assert len({len(column) for column in per_query.values()}) == 1
    assert set(per_query["qid"]) == set(bench.relevant)
    miracl_rows = read_per_query(out / "per_query" / "miracl__pretrained.csv.gz")
    assert len(miracl_rows["qid"]) == 10 and set(miracl_rows["lang"]) == {"sw"}

    for results, tag in ((first, "pretrained"), (second, "epoch0")):
        figures = results["mlqa-r"]["figures"]
        assert figures == {
            "map_heatmap": out / "plots" / f"mlqa-r__{tag}__map_heatmap.png",
            "rank_distance": out / "plots" / f"mlqa-r__{tag}__rank_distance.png",
        }
        assert all(path.read_bytes()[:8] == PNG_MAGIC for path in figures.values())

    # a new evaluator on the same folder (a resumed run) appends to the records
    again = Evaluator(_cfg(root, plots=False, per_query=False), out)
    again.run(enc, tag="epoch1", step=9)
    assert [r["tag"] for r in json.loads((out / "metrics.json").read_text())] == [
        "pretrained",
        "epoch0",
        "epoch1",
    ]
    assert not (out / "plots" / "mlqa-r__epoch1__map_heatmap.png").exists()
    assert not (out / "per_query" / "mlqa-r__epoch1.csv.gz").exists()

    table = evaluator.format_table()
    lines = table.splitlines()
    assert "mlqa-r" in lines[0] and "miracl" in lines[0]
    for header in ("map_mono", "map_cross", "map_multi", "rank_dist", "nDCG@10", "R@100"):
        assert header in lines[1]
    row = next(line for line in lines if line.startswith("epoch0"))
    assert f"{records[1]['datasets']['mlqa-r']['scalars']['map_multi']:.4f}" in row
    assert f"{records[1]['datasets']['miracl']['scalars']['recall_at100']:.4f}" in row


def _ddp_worker(rank: int, port: int, root: str, out: str) -> None:
    with gloo_group(rank, port, 2):
        results = Evaluator(_cfg(Path(root)), Path(out) / f"rank{rank}").run(BagOfWordsEncoder(), tag="ddp")
        scalars = {name: res["scalars"] for name, res in results.items()}
        (Path(out) / f"scalars{rank}.json").write_text(json.dumps(scalars))


def test_run_under_ddp_writes_and_returns_on_rank_zero_only(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    spawn(_ddp_worker, str(root), str(out), nprocs=2)
    single = Evaluator(_cfg(root), tmp_path / "single").run(BagOfWordsEncoder(), tag="ddp")
    rank0 = json.loads((out / "scalars0.json").read_text())
    assert json.loads((out / "scalars1.json").read_text()) == {}
    assert rank0.keys() == single.keys()
    for name, res in single.items():
        assert rank0[name] == pytest.approx(res["scalars"], abs=1e-6), name
    assert [r["tag"] for r in json.loads((out / "rank0" / "metrics.json").read_text())] == ["ddp"]
    assert not (out / "rank1").exists()


def test_run_needs_an_output_dir(root: Path) -> None:
    with pytest.raises(ValueError, match="output_dir"):
        Evaluator(_cfg(root)).run(BagOfWordsEncoder(), tag="x")
