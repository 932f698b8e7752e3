"""Multi-node DDP run for real on one machine: two "nodes" of one CPU process each, joined over the loopback interface
with gloo through Lightning's own launcher (``NODE_RANK``, ``MASTER_ADDR``, ``MASTER_PORT`` and
``trainer.num_nodes=2 trainer.devices=1``, as docs/multinode.md runs it on real hosts).

Runs (all at ``32-true``, dropout off, global batch 8, started at once):

* ``single``: one process (``trainer=cpu``), the reference;
* ``nodes``: the two nodes, each with its own node-local, empty ``$HYBRID_IR_CACHE``: the same per-step losses as
  ``single``, and each node builds the input's record table and token store once, in its own cache;
* ``killed``: the two nodes again, slowed down, sharing ONE cache folder (the shared-storage case: one node builds,
  the other waits on the file lock); node 1 is SIGKILLed once a checkpoint exists, and node 0 must then end by
  itself, not hang; ``resumed``: both nodes restarted with ``ckpt_path=last``, which finish with the reference's
  losses after the checkpoint and build nothing.

The run folder (``hydra.run.dir``) is shared by the nodes, as on a cluster's shared file system (only global rank 0
writes checkpoints and logs metrics there); node 1 logs to ``train_node1.log``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import torch.distributed as dist

from hybrid_ir.data.formats.load_corpus import load_corpus
from hybrid_ir.utils.checkpoint_io import checkpoint_global_step
from hybrid_ir.utils.paths import CACHE_ENV, DATA_ENV, cache_dir, default_data_root
from tests.helpers.jsonl import write_jsonl
from tests.helpers.repo import REPO

from .runs import DELAY, kill_after_checkpoint, run_env, step_losses

pytestmark = pytest.mark.slow

STEPS = 6
KILL_AFTER_STEP = 2
LOSS_TOL = 1e-5  # 32-true: the two nodes and the single process agree to float rounding
TIMEOUT_S = 480
# How long node 0 may take to end once node 1 is gone (gloo sees the closed connection at its next collective).
SURVIVOR_TIMEOUT_S = 180
LANGS = ["de", "en", "es"]
HOST = "127.0.0.1"


def _overrides(data: Path) -> tuple[str, ...]:
    return (
        "experiment=smoke",
        "data=jsonl",
        f"data.train.0.path={data}",
        "data.train.0.name=xquad3",
        "data.batch_size=8",
        f"trainer.max_steps={STEPS}",
        "trainer.precision=32-true",
        "module.lr=1e-3",
        "module.warmup_ratio=0.0",
        "+model.config_overrides.hidden_dropout_prob=0.0",
        "+model.config_overrides.attention_probs_dropout_prob=0.0",
        "~callbacks.zero_shot_eval",
        "~callbacks.export_encoder",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    )


NODES = ("trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2")


def _write_jsonl(path: Path) -> Path:
    """XQuAD-R in three languages as a JSONL training input (read into a record table, then a token store)."""
    corpus = load_corpus({"name": "xquad-r", "languages": LANGS}, default_data_root(), download=False)
    return write_jsonl(
        path,
        (
            {"id": parallel_id, "lang": lang, "question": pair.question, "passage": pair.passage}
            for lang in LANGS
            for parallel_id, pair in corpus.pairs[lang].items()
        ),
    )


def _node_cache(path: Path) -> Path:
    """An empty node-local cache that shares only the session's converted model (no tables, no stores)."""
    path.mkdir(parents=True)
    (path / "models").symlink_to(cache_dir("models"), target_is_directory=True)
    return path


@dataclass
class Proc:
    """A ``train.py`` process and the file its output goes to."""

    proc: subprocess.Popen
    log: Path

    def wait(self, timeout: float = TIMEOUT_S) -> int | str:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "timeout"

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def _start(run_dir: Path, log: Path, cache: Path, env: dict[str, str], *overrides: str) -> Proc:
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *overrides],
            cwd=REPO,
            env={**run_env(), CACHE_ENV: str(cache), DATA_ENV: str(default_data_root()), **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return Proc(proc, log)


@dataclass
class Cluster:
    """The two node processes of one launch and the rendezvous store they join (hosted here, on a port the OS
    picked, so no port is picked free and bound again later: see tests/helpers/ddp.py)."""

    nodes: list[Proc]
    store: dist.TCPStore


def _start_nodes(run_dir: Path, caches: tuple[Path, Path], *overrides: str) -> Cluster:
    store = dist.TCPStore(
        HOST, 0, is_master=True, timeout=timedelta(seconds=TIMEOUT_S), wait_for_workers=False
    )
    rendezvous = {"MASTER_ADDR": HOST, "MASTER_PORT": str(store.port), "TORCHELASTIC_USE_AGENT_STORE": "True"}
    nodes = []
    for rank, cache in enumerate(caches):
        naming = (f"hydra.job.name=train_node{rank}",) if rank else ()
        log = run_dir.parent / f"{run_dir.name}.node{rank}.log"
        env = {**rendezvous, "NODE_RANK": str(rank)}
        nodes.append(_start(run_dir, log, cache, env, *NODES, *naming, *overrides))
    return Cluster(nodes, store)


def _finish(procs: list[Proc]) -> None:
    for p in procs:
        rc = p.wait()
        if rc != 0:
            pytest.fail(f"{p.log.name} ended with {rc}:\n{p.tail()}")


def _builds(log: Path) -> dict[str, int]:
    """How many record tables and token stores a process's output says it built."""
    text = log.read_text(errors="replace")
    return {"tables": text.count("] - record table of "), "stores": text.count("] - token store of ")}


def _built_entries(cache: Path) -> dict[str, int]:
    """The complete record tables and token stores (folders with their ``meta.json``) in a cache."""
    return {kind: len(list((cache / kind).glob("*/meta.json"))) for kind in ("tables", "stores")}


@dataclass
class Runs:
    base: Path
    caches: dict[str, Path]
    resume_step: int
    killed_rc: int | str
    survivor_rc: int | str
    survivor_s: float


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    base = tmp_path_factory.mktemp("multinode")
    data = _write_jsonl(base / "xquad3.jsonl")
    caches = {
        name: _node_cache(base / f"cache-{name}")
        for name in ("single", "nodes-node0", "nodes-node1", "killed-shared")
    }
    over = _overrides(data)
    single = _start(base / "single", base / "single.log", caches["single"], {}, *over)
    nodes = _start_nodes(base / "nodes", (caches["nodes-node0"], caches["nodes-node1"]), *over)
    shared = (caches["killed-shared"], caches["killed-shared"])
    killed = _start_nodes(base / "killed", shared, *over, *DELAY)
    started: list[Proc] = [single, *nodes.nodes, *killed.nodes]
    try:
        node0, node1 = killed.nodes
        ckpt = base / "killed" / "checkpoints" / "last.ckpt"
        kill_after_checkpoint(node1.proc, ckpt, KILL_AFTER_STEP, TIMEOUT_S)
        killed_rc = node1.proc.returncode
        if not ckpt.is_file():
            pytest.fail(f"the killed run wrote no checkpoint:\n{node0.tail()}")
        start = time.monotonic()
        survivor_rc = node0.wait(SURVIVOR_TIMEOUT_S)
        survivor_s = time.monotonic() - start
        resume_step = checkpoint_global_step(ckpt)
        for p in killed.nodes:
            p.log.rename(p.log.with_name(p.log.name.replace("killed", "killed-first")))
        resumed = _start_nodes(base / "killed", shared, *over, "ckpt_path=last")
        started += resumed.nodes
        _finish([single, *nodes.nodes, *resumed.nodes])
        yield Runs(base, caches, resume_step, killed_rc, survivor_rc, survivor_s)
    finally:
        for p in started:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()


def test_two_nodes_match_one_process(runs: Runs) -> None:
    single, nodes = step_losses(runs.base / "single"), step_losses(runs.base / "nodes")
    assert sorted(single) == sorted(nodes) == list(range(STEPS))
    assert len({round(v, 6) for v in single.values()}) > 1, "losses do not vary: the comparison would be weak"
    for step, loss in single.items():
        assert nodes[step] == pytest.approx(loss, abs=LOSS_TOL), f"step {step}"


def test_each_node_builds_its_table_and_store_once_in_its_own_cache(runs: Runs) -> None:
    for rank in (0, 1):
        assert _builds(runs.base / f"nodes.node{rank}.log") == {"tables": 1, "stores": 1}, f"node {rank}"
        assert _built_entries(runs.caches[f"nodes-node{rank}"]) == {"tables": 1, "stores": 1}, f"node {rank}"


def test_only_node_0_logs_the_epoch_plans(runs: Runs) -> None:
    """Node 1 plans epoch 0 for its checks too, before its Trainer knows its rank (``NODE_RANK`` says it)."""
    for rank, expected in ((0, 1), (1, 0)):
        text = (runs.base / f"nodes.node{rank}.log").read_text(errors="replace")
        assert text.count("] - epoch 0: ") == 2 * expected, f"node {rank}"  # the plan and its mono share


def test_nodes_sharing_one_cache_build_once(runs: Runs) -> None:
    """The shared-storage case on one machine: the file lock lets one node build, the other waits and maps it."""
    logs = [runs.base / f"killed-first.node{rank}.log" for rank in (0, 1)]
    builds = [_builds(log) for log in logs]
    assert sum(b["tables"] for b in builds) == 1 and sum(b["stores"] for b in builds) == 1, builds
    assert _built_entries(runs.caches["killed-shared"]) == {"tables": 1, "stores": 1}


def test_the_surviving_node_ends_when_its_peer_is_killed(runs: Runs) -> None:
    assert runs.killed_rc == -9, "node 1 was to be killed while running"
    assert runs.survivor_rc not in (0, "timeout"), (
        f"node 0 should fail once node 1 is gone (rc {runs.survivor_rc} after {runs.survivor_s:.0f} s)"
    )


def test_both_nodes_resume_from_the_checkpoint_with_the_same_losses(runs: Runs) -> None:
    reference = step_losses(runs.base / "single")
    resumed = step_losses(runs.base / "killed")
    start = runs.resume_step
    assert 0 < start < STEPS
    after = sorted(s for s in resumed if s >= start)
    assert after == list(range(start, STEPS))
    for step in after:
        assert resumed[step] == pytest.approx(reference[step], abs=LOSS_TOL), f"step {step}"
    for rank in (0, 1):
        assert _builds(runs.base / f"killed.node{rank}.log") == {"tables": 0, "stores": 0}, "cached: no build"
