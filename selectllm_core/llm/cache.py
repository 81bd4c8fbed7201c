"""The response cache: a stored answer for every request already answered, so asking again costs nothing.

A request is keyed by everything that decides its answer: the backend's identity (kind, model, server URL,
context window, seed, JSON mode; never concurrency or a key), the exact messages, the answer schema, the
temperature and the answer length. Only temperature-0 requests are cached: a sampled answer is meant to vary.

The cache is one SQLite file, `responses.sqlite`, in the cache folder ($SELECTLLM_CACHE_DIR, else
`.selectllm-cache`), beside the embedding cache. Workspaces that share the folder share the answers, so a run
whose subsets and prompt match earlier calls (another budget, another trim, the Select page's preview, a second
workspace) makes no call for them. `selectllm cache info|clear` and the app's sidebar show and clear it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from selectllm_core.errors import WorkspaceError

FILE_NAME = "responses.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY, text TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, model TEXT,
    answer_format TEXT, created_at TEXT, hits INTEGER DEFAULT 0);
"""


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer, with the tokens its original call used (they were paid for once, then)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    answer_format: str | None


def request_key(identity: dict, messages: list[dict], *, json_schema: dict | None, temperature: float,
                max_tokens: int) -> str:
    """The cache key of one chat request (sha256 of its canonical JSON)."""
    blob = json.dumps({"backend": identity, "messages": messages, "schema": json_schema,
                       "temperature": temperature, "max_tokens": max_tokens}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def score_key(identity: dict, messages: list[dict], *, prefill: str, ids: list[str]) -> str:
    """The cache key of one score pass (`score_ids`): the conversation, the begun answer and the ids scored."""
    return request_key(identity, [*messages, {"role": "assistant", "content": prefill}],
                       json_schema={"score_ids": list(ids)}, temperature=0.0, max_tokens=0)


class ResponseCache:
    """Stored answers in `<folder>/responses.sqlite`; safe between threads and between processes (WAL).

    Args:
        folder: the cache folder (created when missing).
    """

    def __init__(self, folder: Path | str) -> None:
        self.path = Path(folder) / FILE_NAME
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise WorkspaceError(
                f"Cannot open the response cache {self.path}: {exc}. Delete the file (only cached answers are "
                "lost), point SELECTLLM_CACHE_DIR elsewhere, or turn the cache off (--no-response-cache)."
            ) from exc

    def get(self, key: str) -> CachedAnswer | None:
        """The stored answer of a request, counting the hit; None when it was never answered."""
        with self._lock:
            row = self._db.execute("SELECT text, prompt_tokens, completion_tokens, model, answer_format FROM answers "
                                   "WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self._db.execute("UPDATE answers SET hits = hits + 1 WHERE key = ?", (key,))
        return CachedAnswer(*row) if row else None

    def peek(self, key: str) -> CachedAnswer | None:
        """The stored answer of a request without counting a hit (estimates look, runs use)."""
        with self._lock:
            row = self._db.execute("SELECT text, prompt_tokens, completion_tokens, model, answer_format FROM answers "
                                   "WHERE key = ?", (key,)).fetchone()
        return CachedAnswer(*row) if row else None

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store an answer (a later answer to the same request replaces it: `selectllm retry` asks again)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
                (key, answer.text, answer.prompt_tokens, answer.completion_tokens, answer.model,
                 answer.answer_format, datetime.now(UTC).isoformat(timespec="seconds")))

    def info(self) -> dict:
        """answers stored, hits served, the file and its size in bytes."""
        with self._lock:
            n, hits = self._db.execute("SELECT COUNT(*), COALESCE(SUM(hits), 0) FROM answers").fetchone()
        size = sum(p.stat().st_size for p in self.path.parent.glob(FILE_NAME + "*") if p.exists())
        return {"answers": n, "hits": hits, "path": str(self.path), "bytes": size}

    def clear(self) -> int:
        """Forget every stored answer; returns how many there were."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()
            self._db.execute("DELETE FROM answers")
            self._db.execute("VACUUM")
        return n

    def close(self) -> None:
        self._db.close()
