"""The Ray engine: embedding and selection on Ray actors give what the in-process engine gives.

Ray 2.60 removed `local_mode` (ray.init(local_mode=True) raises RuntimeError), so these tests start a
real one-CPU Ray on this machine once per module; workers are separate processes, as on a cluster.
"""

from __future__ import annotations

import functools
import inspect
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectllm_core import pipeline
from selectllm_core.embed import EmbeddingCache, embed_texts
from selectllm_core.errors import BackendError, ConfigError
from selectllm_core.select.listwise import Candidate, PromptSpec, execute, select_subset, subset_work
from selectllm_core.select.prompts import PRESETS
from selectllm_core.store import Store
from tests.conftest import FakeEmbedder
from tests.fakes import ScriptedBackend

ray = pytest.importorskip("ray")
engines = pytest.importorskip("selectllm_core.engines.ray")

REPO = Path(__file__).resolve().parent.parent
PROMPT = PromptSpec(PRESETS["default"].template, "json")
# lengths vary, so the Ray embedder's longest-first batching must put the vectors back in input order
TEXTS = [f"### Instruction: task {i} about {'cats' * (i % 5)}\n\n### Response:" for i in range(23)]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """A one-CPU Ray whose workers can import the test helpers (tests.fakes, fake_openai_server)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests"), *([old] if old else [])])
    ray.init(num_cpus=1, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def make_subsets(n_subsets: int = 7, size: int = 5) -> dict[int, list[Candidate]]:
    return {s: [Candidate(f"r{s}-{i}", f"instruction {s}-{i}", "") for i in range(size)] for s in range(n_subsets)}


def test_embed_with_ray_matches_in_process_order_and_values() -> None:
    vectors = engines.embed_with_ray(TEXTS, embedder_factory=FakeEmbedder, batch_size=4)
    np.testing.assert_array_equal(vectors, FakeEmbedder().encode(TEXTS))
    assert engines.embed_with_ray([], embedder_factory=FakeEmbedder).shape == (0, 0)


def test_ray_embedder_goes_through_the_cache(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    with engines.RayEmbedder(FakeEmbedder, batch_size=5) as embedder:
        assert embedder.model_id == FakeEmbedder.model_id  # same cache keys as the in-process engine
        first = embed_texts(TEXTS, embedder=embedder, cache=cache, batch_size=10)
        again = embed_texts(TEXTS + TEXTS[:3], embedder=embedder, cache=cache)
    assert (first.computed, first.cached) == (len(TEXTS), 0)
    assert (again.computed, again.cached) == (0, len(TEXTS) + 3)
    assert (cache.misses, cache.hits) == (len(TEXTS), len(TEXTS) + 3)
    np.testing.assert_array_equal(first.vectors, FakeEmbedder().encode(TEXTS))


def test_select_with_ray_gives_the_in_process_outcomes() -> None:
    subsets = make_subsets()
    factory = functools.partial(ScriptedBackend, concurrency=3)
    work = functools.partial(subset_work, k=2, prompt=PROMPT, seed=5, shuffle=True)
    got = {o.subset: o for o in engines.RayExecutor(factory).map(work, subsets.items())}
    assert sorted(got) == sorted(subsets)
    for s, members in subsets.items():
        want = select_subset(ScriptedBackend(), members, subset=s, k=2, prompt=PROMPT, seed=5, shuffle=True)
        assert (got[s].status, got[s].members, got[s].picks, got[s].reasons) == \
            (want.status, want.members, want.picks, want.reasons)


def test_execute_with_ray_stores_like_execute_and_resumes(tmp_path: Path) -> None:
    ray_store, ref_store = Store(tmp_path / "ray.sqlite"), Store(tmp_path / "ref.sqlite")
    for st in (ray_store, ref_store):
        st.create_run("run-x", pool_id="p", method="selectllm", params={}, prompt="t", backend={"kind": "fake"})
    subsets = make_subsets()
    seen: list[int] = []
    counts = execute(ray_store, "run-x", subsets, executor=engines.RayExecutor(ScriptedBackend), k=1,
                     prompt=PROMPT, seed=2, progress=lambda _stage, d, t: seen.append(d))
    execute(ref_store, "run-x", subsets, backend=ScriptedBackend(), k=1, prompt=PROMPT, seed=2)
    assert counts == {"ok": 7, "failed": 0, "error": 0, "skipped": 0, "called": 7}
    assert seen == list(range(8))
    strip = [{k: v for k, v in r.items() if k not in ("created_at", "updated_at")}
             for r in ray_store.subset_results("run-x")]
    assert strip == [{k: v for k, v in r.items() if k not in ("created_at", "updated_at")}
                     for r in ref_store.subset_results("run-x")]
    # a repeat finds every subset done: no actor is started, no call is made
    again = execute(ray_store, "run-x", subsets, executor=engines.RayExecutor(ScriptedBackend), k=1,
                    prompt=PROMPT, seed=2)
    assert again["called"] == 0 and ray_store.count_calls("run-x") == 7


def test_execute_with_ray_stops_after_consecutive_errors_and_keeps_calls_in_flight(tmp_path: Path) -> None:
    from fake_openai_server import FakeOpenAIServer

    from selectllm_core.llm import OpenAICompatibleBackend

    store = Store(tmp_path / "ws.sqlite")
    store.create_run("run-x", pool_id="p", method="selectllm", params={}, prompt="t", backend={"kind": "fake"})
    with FakeOpenAIServer(max_requests=40, lifetime=60) as server:
        server.script(*[{"sleep": 0.05, "status": 503, "body": {"error": {"message": "down"}}}] * 30)
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="m", concurrency=3, max_retries=0,
                                          json_mode="off")
        with pytest.raises(BackendError, match="run the same command again"):
            execute(store, "run-x", make_subsets(12), executor=engines.RayExecutor.for_backend(backend), k=1,
                    prompt=PROMPT)
    results = store.subset_results("run-x")
    assert 3 <= len(results) < 12 and {r["status"] for r in results} == {"error"}
    # every request the server saw belongs to a stored outcome: no call in flight was dropped at the stop
    assert len(server.requests) == len(results) == store.count_calls("run-x")
    assert store.get_run("run-x")["status"] == "interrupted"


def test_openai_backend_rebuilt_in_ray_workers_talks_http(tmp_path: Path) -> None:
    from fake_openai_server import FakeOpenAIServer

    from selectllm_core.llm import OpenAICompatibleBackend

    with FakeOpenAIServer(max_requests=20, lifetime=60) as server:
        backend = OpenAICompatibleBackend(base_url=server.base_url, model="m", concurrency=2, max_retries=0)
        factory = engines.backend_factory_for(backend)
        rebuilt = pickle.loads(pickle.dumps(factory))()
        assert rebuilt.describe() == backend.describe()
        assert rebuilt._api_key is None  # the key is read on each node, never shipped
        work = functools.partial(subset_work, k=1, prompt=PROMPT, seed=0, shuffle=True)
        outcomes = list(engines.RayExecutor(factory).map(work, make_subsets(4).items()))
    assert sorted(o.subset for o in outcomes) == [0, 1, 2, 3]
    assert all(o.status == "ok" and len(o.picks) == 1 for o in outcomes)
    assert len(server.requests) >= 4


def test_local_backend_recipe_keeps_its_settings() -> None:
    from selectllm_core.llm import LocalLlamaBackend

    local = LocalLlamaBackend("/models/x.gguf", n_ctx=2048, n_threads=2, seed=4)
    rebuilt = pickle.loads(pickle.dumps(engines.backend_factory_for(local)))()
    assert rebuilt.describe() == local.describe() and rebuilt.n_threads == 2
    with pytest.raises(ConfigError, match="backend_factory"):
        engines.backend_factory_for(ScriptedBackend())  # holds a lock: cannot be copied into workers


def test_embed_texts_with_ray_reads_and_writes_the_cache_in_the_driver(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    first = engines.embed_texts_with_ray(TEXTS, embedder=FakeEmbedder(), cache=cache)
    again = engines.embed_texts_with_ray(TEXTS, embedder=FakeEmbedder(), cache=cache)
    assert (first.computed, again.cached, first.model_id) == (len(TEXTS), len(TEXTS), FakeEmbedder.model_id)
    np.testing.assert_array_equal(again.vectors, FakeEmbedder().encode(TEXTS))


@pytest.mark.skipif("engine" not in inspect.signature(pipeline.run).parameters,
                    reason="pipeline.run has no engine option yet (see the diff in benchmarks/README.md)")
def test_pipeline_run_on_ray_is_the_local_run_and_resumes(tmp_path: Path) -> None:
    from fake_openai_server import FakeOpenAIServer

    from selectllm_core.llm import OpenAICompatibleBackend

    frame = pd.DataFrame({"instruction": [f"Explain idea {i} about {'cats' if i % 2 else 'sums'}." for i in range(40)]})
    config = pipeline.RunConfig(budget=5, subset_size=8)
    with FakeOpenAIServer(max_requests=40, lifetime=120) as server:
        results = {}
        for engine in ("local", "ray"):
            backend = OpenAICompatibleBackend(base_url=server.base_url, model="m", concurrency=2, max_retries=0)
            results[engine] = pipeline.run(frame, config, store=Store(tmp_path / f"{engine}.sqlite"), backend=backend,
                                           embedder=FakeEmbedder(), cache=EmbeddingCache(tmp_path / engine),
                                           engine=engine)
        local, on_ray = results["local"], results["ray"]
        assert on_ray.run_id == local.run_id and on_ray.summary == local.summary
        picked = {name: r.store.selection(r.run_id)["id"].tolist() for name, r in results.items()}
        assert picked["ray"] == picked["local"]
        again = pipeline.run(frame, config, store=on_ray.store, backend=backend, embedder=FakeEmbedder(),
                             cache=EmbeddingCache(tmp_path / "ray"), engine="ray")
    assert again.stats["llm_calls_new"] == 0 and again.stats["embedded_new"] == 0
