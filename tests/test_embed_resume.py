"""Embedding resumes after kill -9: a real child process embeds through the on-disk cache, is killed mid-pool
with SIGKILL, and the same call again computes only the rows the cache lacks (the batch in flight at most)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from selectllm_core.embed import EmbeddingCache, text_key

REPO = Path(__file__).resolve().parent.parent
ROWS, BATCH = 200, 10
CHILD = f"""
import json, sys, time
import numpy as np
from selectllm_core.embed import EmbeddingCache, embed_texts
from tests.conftest import FakeEmbedder

class SlowFake(FakeEmbedder):
    def encode(self, texts):
        with open(sys.argv[2], "a") as log:  # the rows this process started to compute
            log.write(json.dumps(list(texts)) + "\\n")
        time.sleep(0.1)
        return super().encode(texts)

texts = [f"### Instruction: row {{i}} " + "x" * (i % 7) for i in range({ROWS})]
result = embed_texts(texts, embedder=SlowFake(), cache=EmbeddingCache(sys.argv[1]), batch_size={BATCH},
                     progress=lambda done, total: print("progress", done, total, flush=True))
same = bool(np.array_equal(result.vectors, FakeEmbedder().encode(texts)))
print(json.dumps({{"computed": result.computed, "cached": result.cached, "same": same}}), flush=True)
"""
TEXTS = [f"### Instruction: row {i} " + "x" * (i % 7) for i in range(ROWS)]


def start(cache: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(cache), str(log)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started_rows(log: Path) -> list[str]:
    return [t for line in log.read_text().splitlines() for t in json.loads(line)]


def test_a_pool_killed_mid_embedding_resumes_computing_only_what_the_cache_lacks(tmp_path: Path) -> None:
    cache_dir, first_log, second_log = tmp_path / "cache", tmp_path / "first.log", tmp_path / "second.log"
    # 1. embed, and kill -9 once half the pool's batches are reported stored
    first = start(cache_dir, first_log)
    reports = []
    for line in first.stdout:
        reports.append(tuple(map(int, line.split()[1:])))
        if reports[-1][0] >= ROWS // 2:
            os.kill(first.pid, signal.SIGKILL)
            break
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL, first.stderr.read()
    assert reports[0] == (0, ROWS) and reports[-1] == (ROWS // 2, ROWS)
    # 2. every reported batch is on disk; at most the batch in flight was computed and lost
    keys = {text_key(t): t for t in TEXTS}
    stored = {keys[k] for k in EmbeddingCache(cache_dir).get_many("fake-embedder", list(keys))}
    computed_first = started_rows(first_log)
    assert ROWS // 2 <= len(stored) < ROWS
    assert stored <= set(computed_first) and len(computed_first) - len(stored) <= BATCH
    # 3. the same call again computes exactly the rows not stored, and returns the whole pool in order
    second = start(cache_dir, second_log)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {"computed": ROWS - len(stored), "cached": len(stored), "same": True}
    computed_second = started_rows(second_log)
    assert sorted(computed_second) == sorted(set(TEXTS) - stored)
    assert len(set(computed_first) & set(computed_second)) <= BATCH  # recomputed: the lost batch at most
    assert EmbeddingCache(cache_dir).count("fake-embedder") == ROWS
