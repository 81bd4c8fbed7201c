"""`--engine ray` on a real two-node Ray cluster gives the local engine's run, and both nodes do the work.

The fixture starts the cluster the way docs/scaling.md tells an operator to, with the `ray` command of this
Python: a head (`ray start --head`) and a second node that joins it (`ray start --address`), one CPU each, on
this machine. Ray 2.60 lets a second raylet join from the same host without extra ports (it numbers the second
node's sockets); each node still gets its own --temp-dir, so its logs and its `ray_current_cluster` file stay
in the test's folder (no other `ray.init()` on this machine joins this cluster), and its own dashboard agent
port (52365 for both otherwise, which the full `ray[default]` install listens on). Each node runs
`ray start --block` in a process group of its own, and stopping the cluster signals those groups only:
`ray stop` would stop every Ray on the machine.

The cluster uses token authentication with a fresh token. Ray takes its authentication settings when it is
imported (set later, in a process that had imported Ray, they did not connect), so the run on Ray is driven
from a child process that has them and RAY_ADDRESS in its environment from the start, as a real driver does;
the test compares that workspace with a local-engine run of the same pool, embedder and OpenAI-compatible
server.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import FakeEmbedder
from tests.fakes import shown_instructions

if TYPE_CHECKING:
    from selectllm_core.llm import OpenAICompatibleBackend
    from selectllm_core.methods.selectllm import RunResult
    from selectllm_core.store import Store

ray = pytest.importorskip("ray", reason="needs Ray: pip install -r requirements-scale.txt")

REPO = Path(__file__).resolve().parent.parent
RAY_CLI = Path(sys.executable).with_name("ray")
NODES = 2
# a tournament: 20 subsets of 10 pick 1 each, and their 20 winners play a second round of 2 subsets
CONFIG = {"budget": 5, "subset_size": 10}
DRIVER = "import json, sys, test_ray_cluster; test_ray_cluster.drive(json.loads(sys.argv[1]))"


# --- the cluster ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_node(folder: Path, args: list[str], env: dict) -> subprocess.Popen:
    """`ray start --block ...` for one node, in its own process group, its output in folder/ray-start.log."""
    folder.mkdir()
    with open(folder / "ray-start.log", "w") as log:
        return subprocess.Popen([str(RAY_CLI), "start", "--block", "--temp-dir", str(folder), "--num-cpus", "1",
                                 "--object-store-memory", str(80 * 2**20), "--disable-usage-stats",
                                 "--dashboard-agent-listen-port", str(_free_port()), *args],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_started(node: subprocess.Popen, folder: Path, timeout: float = 60) -> None:
    log = folder / "ray-start.log"
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text():
        if node.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"`ray start` did not start a node:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def _stop_node(node: subprocess.Popen) -> None:
    """SIGTERM to the node's process group (`ray start --block` then stops its processes), SIGKILL after 20 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGTERM)
        try:
            node.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(node.pid, signal.SIGKILL)
            node.wait(5)
        os.killpg(node.pid, signal.SIGKILL)  # what is left of the group once its leader is gone (its workers)


WAIT_FOR_NODES = """
import sys, time, ray
ray.init(log_to_driver=False)
deadline = time.monotonic() + 60
while (alive := sum(1 for n in ray.nodes() if n["Alive"])) < int(sys.argv[1]):
    if time.monotonic() > deadline:
        sys.exit(f"only {alive} node(s) alive after 60 s")
    time.sleep(0.2)
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    """A head and a second node on this machine, one CPU each; yields the driver's environment."""
    if not RAY_CLI.exists():
        pytest.skip(f"the `ray` command is not installed next to {sys.executable}: "
                    "pip install -r requirements-scale.txt")
    root = Path(tempfile.mkdtemp(prefix="rayc-"))  # short: Ray's socket paths live under it
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",  # stop at once: nothing to drain in a test
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}  # workers unpickle the test's helpers
    env.pop("RAY_ADDRESS", None)
    driver_env = {**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
    nodes: list[subprocess.Popen] = []
    try:
        nodes.append(_start_node(root / "head", ["--head", "--port", str(port), "--include-dashboard", "false"], env))
        _wait_started(nodes[0], root / "head")
        nodes.append(_start_node(root / "node2", ["--address", driver_env["RAY_ADDRESS"]], env))
        _wait_started(nodes[1], root / "node2")
        waited = subprocess.run([sys.executable, "-c", WAIT_FOR_NODES, str(NODES)], env=driver_env, timeout=90,
                                capture_output=True, text=True)
        if waited.returncode:
            raise RuntimeError(f"the cluster did not come up:\n{waited.stderr[-3000:]}")
        yield driver_env
    finally:
        for node in reversed(nodes):
            _stop_node(node)
        shutil.rmtree(root, ignore_errors=True)


# --- what the run uses, on the driver and in Ray's workers -----------------------------------------------
# Workers import this module to unpickle these helpers, so the module imports little; the pipeline is
# imported by the functions that only the test and the driver run.


def _node_id() -> str:
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _note(folder: str, stage: str, **fields: Any) -> None:
    """Append one record to this process's log file (one file per process: no two writers share one)."""
    with open(Path(folder) / f"{stage}-{os.getpid()}.jsonl", "a") as f:
        f.write(json.dumps({"node": _node_id(), "pid": os.getpid(), **fields}) + "\n")


def _notes(folder: Path, stage: str) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob(f"{stage}-*.jsonl")) for line in f.read_text().splitlines()]


class NodeNotingEmbedder(FakeEmbedder):
    """FakeEmbedder's vectors; notes the node and process of every encode.

    With `meet`, an encode first waits (up to 30 s) until encodes have started on that many nodes, and notes
    whether they did: encodes that ran one after the other would never meet.
    """

    def __init__(self, folder: Path, *, meet: int = 0) -> None:
        super().__init__()
        self.folder, self.meet = str(folder), meet

    def encode(self, texts):  # noqa: ANN001, ANN201 - the Embedder protocol
        met = None
        if self.meet:
            Path(self.folder, f"busy-{_node_id()}-{os.getpid()}").touch()
            deadline = time.monotonic() + 30
            while not (met := len({p.name.split("-")[1] for p in Path(self.folder).glob("busy-*")}) >= self.meet):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        _note(self.folder, "embed", rows=len(texts), met=met)
        return super().encode(texts)


def _noted_unit(folder: str, work: Callable, resource: Any, index: int, payload: Any) -> Any:
    """The run's own work function for one subset, then a note of where it ran."""
    outcome = work(resource, index, payload)
    _note(folder, "unit", subset=index)
    return outcome


class NodeNotingExecutor:
    """The run's executor, each unit noting the node it ran on."""

    def __init__(self, inner: Any, folder: Path) -> None:
        self.inner, self.folder = inner, str(folder)

    def map(self, work: Callable, items: Iterable, *, stop: Callable[[], bool]) -> Iterator:
        return self.inner.map(functools.partial(_noted_unit, self.folder, work), items, stop=stop)


def _backend(base_url: str) -> OpenAICompatibleBackend:
    from selectllm_core.llm import OpenAICompatibleBackend

    return OpenAICompatibleBackend(base_url=base_url, model="judge", concurrency=4, max_retries=0)


def drive(spec: dict) -> None:
    """The Ray run, in the driver process: `pipeline.run(engine="ray")`; writes what the test checks to spec["out"]."""
    from selectllm_core import pipeline
    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.methods import selectllm
    from selectllm_core.store import Store

    folder = Path(spec["notes"])
    executor_for = selectllm.executor_for
    selectllm.executor_for = lambda engine, backend, *, meter=None: NodeNotingExecutor(
        executor_for(engine, backend, meter=meter), folder)
    result = pipeline.run(spec["pool"], pipeline.RunConfig(**CONFIG), store=Store(spec["workspace"]),
                          backend=_backend(spec["base_url"]), embedder=NodeNotingEmbedder(folder, meet=NODES),
                          cache=EmbeddingCache(spec["cache"]), engine="ray")
    nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    Path(spec["out"]).write_text(json.dumps({"run_id": result.run_id, "summary": result.summary,
                                             "stats": result.stats, "nodes": nodes, "driver": os.getpid()}, default=str))


class Judge:
    """The fake server's model: picks each subset's k candidates whose instructions hash lowest, whatever
    order they are shown in; counts the requests in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight = self.most = 0

    def __call__(self, body: dict, index: int) -> dict:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        try:
            time.sleep(0.05)  # a little model time, so calls sent together are in flight together
        finally:
            with self.lock:
                self.in_flight -= 1
        prompt = next(m["content"] for m in body["messages"] if m["role"] == "user")
        shown = shown_instructions(prompt)
        k = int(re.search(r"select (\d+) instructions", prompt).group(1))
        best = sorted(range(len(shown)), key=lambda i: hashlib.sha256(shown[i].encode()).hexdigest())[:k]
        return {"content": json.dumps({"picks": [{"id": i + 1, "reason": f"hash rank {r}"}
                                                 for r, i in enumerate(best)]})}


# --- the test ---------------------------------------------------------------------------------------


def _outcomes(store: Store, run_id: str) -> list[dict]:
    keep = ("subset", "status", "members", "picks", "reasons", "raw", "attempts", "error", "note")
    return [{k: r[k] for k in keep} for r in store.subset_results(run_id)]


def _run_on_ray(driver_env: dict[str, str], pool_file: Path, base_url: str, folder: Path) -> dict:
    """The same run with engine="ray", driven by a child process that has RAY_ADDRESS and the token."""
    spec = {"pool": str(pool_file), "workspace": str(folder / "ray.sqlite"), "cache": str(folder / "cache-ray"),
            "base_url": base_url, "notes": str(folder / "notes-ray"), "out": str(folder / "ray-run.json")}
    Path(spec["notes"]).mkdir()
    driver = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)], env=driver_env, cwd=REPO,
                            capture_output=True, text=True, timeout=150)
    assert driver.returncode == 0, driver.stderr[-4000:]
    return json.loads(Path(spec["out"]).read_text())


def test_engine_ray_on_two_nodes_gives_the_local_run(cluster: dict[str, str], shared_data: Path, tmp_path: Path) -> None:
    from fake_openai_server import FakeOpenAIServer
    from test_methods import dolly_frame

    from selectllm_core import pipeline
    from selectllm_core.embed import EmbeddingCache
    from selectllm_core.store import Store

    pool_file = tmp_path / "dolly-200.jsonl"
    dolly_frame(shared_data, 200).to_json(pool_file, orient="records", lines=True)
    (tmp_path / "notes-local").mkdir()
    judge = Judge()
    with FakeOpenAIServer(responder=judge, max_requests=100, lifetime=180) as server:
        local = pipeline.run(str(pool_file), pipeline.RunConfig(**CONFIG), store=Store(tmp_path / "local.sqlite"),
                             backend=_backend(server.base_url), embedder=NodeNotingEmbedder(tmp_path / "notes-local"),
                             cache=EmbeddingCache(tmp_path / "cache-local"), engine="local", responses=False)
        assert len(server.requests) == 22  # 20 subsets, then 2 among their winners
        judge.most = 0
        on_ray = _run_on_ray(cluster, pool_file, server.base_url, tmp_path)
    _assert_same_run(local, Store(tmp_path / "ray.sqlite"), on_ray, [r["body"] for r in server.requests])
    _assert_both_nodes_worked(tmp_path / "notes-local", tmp_path / "notes-ray", on_ray)
    assert judge.most >= 2  # the LLM calls from Ray were in flight together


def _assert_same_run(local: RunResult, theirs: Store, on_ray: dict, bodies: list[dict]) -> None:
    """The same run id, plan, rounds, subset outcomes and selection, from the same requests."""
    import pandas as pd

    run_id, ours = local.run_id, local.store
    assert (on_ray["run_id"], on_ray["summary"]) == (run_id, json.loads(json.dumps(local.summary, default=str)))
    pd.testing.assert_frame_equal(theirs.plan(run_id), ours.plan(run_id))
    rounds = ours.rounds(run_id)
    assert [r["n_subsets"] for r in rounds] == [20, 2] and theirs.rounds(run_id) == rounds
    pd.testing.assert_frame_equal(theirs.round_plan(run_id, 2), ours.round_plan(run_id, 2))
    assert _outcomes(theirs, run_id) == _outcomes(ours, run_id)
    assert {r["status"] for r in _outcomes(ours, run_id)} == {"ok"}
    picked = ours.selection(run_id)[["id", "reason"]]
    assert len(picked) == CONFIG["budget"]
    pd.testing.assert_frame_equal(theirs.selection(run_id)[["id", "reason"]], picked)
    sent = sorted(json.dumps(b, sort_keys=True) for b in bodies[22:])
    assert len(bodies) == 44 and sent == sorted(json.dumps(b, sort_keys=True) for b in bodies[:22])
    assert (on_ray["stats"]["embedded_new"], on_ray["stats"]["llm_calls_new"], on_ray["stats"]["llm_calls_sent"]) == (
        200, 22, 22)  # the meter counts the calls Ray workers made, as the run driver records them


def _assert_both_nodes_worked(local_notes: Path, ray_notes: Path, on_ray: dict) -> None:
    """On Ray, workers on both nodes embedded at the same time, then ran each round's subsets."""
    nodes = set(on_ray["nodes"])
    assert len(nodes) == NODES
    assert {n["pid"] for n in _notes(local_notes, "embed")} == {os.getpid()}
    embedded = _notes(ray_notes, "embed")
    assert {n["node"] for n in embedded} == nodes and sum(n["rows"] for n in embedded) == 200
    assert all(n["met"] for n in embedded), embedded  # the two nodes' batches were running at the same time
    units = _notes(ray_notes, "unit")
    assert sorted(n["subset"] for n in units) == list(range(22)) and on_ray["driver"] not in {n["pid"] for n in units}
    for first, count in ((0, 20), (20, 2)):  # round 1, then round 2 among its winners
        assert {n["node"] for n in units if first <= n["subset"] < first + count} == nodes
    # round 2 ran on round 1's actors (their processes and the backends they built), not on new ones
    assert {n["pid"] for n in units if n["subset"] >= 20} <= {n["pid"] for n in units if n["subset"] < 20}
