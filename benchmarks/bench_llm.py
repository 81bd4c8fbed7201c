"""LLM stage: concurrency scaling, client overhead, and tokens per selected instruction (ratios from one run).

    python benchmarks/bench_llm.py --data DIR                              # every section
    python benchmarks/bench_llm.py --data DIR --sections fake              # client scaling, no model (~1 min)
    python benchmarks/bench_llm.py --data DIR --sections server,overhead,tokens --threads 2

Sections:
- fake: selection.execute + OpenAICompatibleBackend against the test suite's fake OpenAI-compatible server,
  which sleeps a fixed service time per request and serves requests in parallel: does the client keep
  `concurrency` calls in flight? (subsets/s vs concurrency 1, 2, 4, 8; ideal speed-up = concurrency).
- server: the same against a real `python -m llama_cpp.server` with the bundled SmolLM2-135M
  (--n_threads/--n_threads_batch = --threads). llama-cpp-python's server runs one request at a time.
- overhead: our path (fresh OpenAICompatibleBackend + execute + SQLite writes) vs replaying the very same
  HTTP request bodies (recorded from our client, probes and repairs included) with http.client, one at a
  time, same order; rounds alternate which goes first. Overhead = ours / raw - 1.
- tokens: pipeline.run on real Dolly rows shaped like the paper's Dolly 3k run (subsets of 14, 3 picks each),
  usage read back from the workspace; cost at gpt-3.5-turbo-1106 prices ($1/M input, $2/M output) beside
  the paper's $2.82 for 3k. Token counts are SmolLM2's tokenizer, not GPT-3.5's.
The server's log goes to a file (never a pipe: it would fill and block the server).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fake server lives with the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._data import data_dir  # noqa: E402
from selectllm_core.llm import OpenAICompatibleBackend, bundled_model_path  # noqa: E402
from selectllm_core.pool.load import format_text, read_table  # noqa: E402
from selectllm_core.select.listwise import Candidate, PromptSpec, execute  # noqa: E402
from selectllm_core.select.prompts import PRESETS  # noqa: E402
from selectllm_core.store import Store  # noqa: E402

PAPER_COST_3K = 2.82  # USD, the paper's SelectLLM 3k selection with gpt-3.5-turbo-1106
PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per million tokens, gpt-3.5-turbo-1106 at the time


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--sections", default="fake,server,overhead,tokens")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--service-time", type=float, default=0.2, help="fake server: seconds per request")
    p.add_argument("--fake-subsets", type=int, default=32)
    p.add_argument("--server-concurrency", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--server-subsets", type=int, default=4, help="subsets per concurrency level (real server)")
    p.add_argument("--overhead-subsets", type=int, default=3, help="overhead section, real server")
    p.add_argument("--overhead-fake-subsets", type=int, default=40,
                   help="overhead section, fake server (a run's fixed costs spread over this many calls)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--subset-size", type=int, default=8, help="server/overhead sections: candidates per subset")
    p.add_argument("--max-tokens", type=int, default=160, help="server/overhead sections: answer cap")
    p.add_argument("--token-queries", type=int, default=8, help="tokens section: queries per preset")
    p.add_argument("--threads", type=int, default=1,
                   help="llama.cpp server threads: 1 on a shared machine (llama.cpp's threads spin-wait, so with "
                        "other work on the cores 2 threads can be many times slower); the core count on a "
                        "dedicated one")
    p.add_argument("--workdir", default=None, help="keeps workspaces and the server log (default: temporary)")
    return p.parse_args()


# --- data ------------------------------------------------------------------------------------------


def dolly_rows(folder: Path, n: int, *, skip: int = 0) -> list[Candidate]:
    """n distinct real Dolly rows (instruction, input) as candidates."""
    frame = read_table(folder / "dolly_alpagasus_3k.jsonl.gz")
    seen, out = set(), []
    for r in frame.itertuples():
        inst, inp = str(r.instruction).strip(), str(r.input or "").strip()
        if format_text(inst, inp) in seen:
            continue
        seen.add(format_text(inst, inp))
        out.append(Candidate(f"d{len(seen)}", inst, inp))
    return out[skip : skip + n]


def subsets_of(rows: list[Candidate], size: int) -> dict[int, list[Candidate]]:
    return {i: rows[i * size : (i + 1) * size] for i in range(len(rows) // size)}


def fresh_store(work: Path, name: str) -> Store:
    store = Store(work / f"{name}-{time.monotonic_ns()}.sqlite")
    store.create_run("bench", pool_id="p", method="selectllm", params={}, prompt="t", backend={"kind": "bench"})
    return store


# --- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def llama_server(work: Path, threads: int, n_ctx: int = 8192) -> Iterator[str]:
    """A real llama-cpp-python OpenAI-compatible server with the bundled SmolLM2; yields its /v1 URL."""
    if importlib.util.find_spec("llama_cpp.server") is None:
        raise SystemExit("llama-cpp-python[server] is not installed")
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_model_path()), "--model_alias",
           "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx),
           "--n_threads", str(threads), "--n_threads_batch", str(threads), "--n_batch", "1024",
           "--flash_attn", "true"]
    log = work / "llama-server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"llama_cpp.server did not start; log tail:\n{log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=1):
                    break
            except OSError:
                time.sleep(0.25)
        print(f"llama_cpp.server up at {url} (threads {threads}); log {log}", file=sys.stderr)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- sections --------------------------------------------------------------------------------------


def run_execute(url: str, model: str, subsets: dict, *, concurrency: int, work: Path, k: int, prompt: PromptSpec,
                client: object = None) -> tuple[float, dict, Store]:
    """Wall seconds of one execute() over the subsets with a fresh backend."""
    backend = OpenAICompatibleBackend(base_url=url, model=model, concurrency=concurrency, timeout=600,
                                      max_retries=0, client=client)
    store = fresh_store(work, "exec")
    t0 = time.perf_counter()
    counts = execute(store, "bench", subsets, backend=backend, k=k, prompt=prompt, seed=0)
    return time.perf_counter() - t0, counts, store


def scaling_table(times: dict[int, list[float]], n_subsets: int, *, completion: dict[int, int] | None = None,
                  ideal: float | None = None) -> pd.DataFrame:
    rows = []
    for c, secs in times.items():
        ratios = [times[1][i] / s for i, s in enumerate(secs)] if 1 in times else [float("nan")]
        row = {"concurrency": c, "median s": round(statistics.median(secs), 2),
               "subsets/s": round(n_subsets / statistics.median(secs), 2),
               "speed-up vs 1 (median of rounds)": round(statistics.median(ratios), 2)}
        if ideal is not None:
            row["ideal s"] = round(ideal * n_subsets / c, 2)
            row["efficiency"] = round(ideal * n_subsets / c / statistics.median(secs), 2)
        if completion:
            row["completion tok/s"] = round(completion[c] / statistics.median(secs), 1)
        rows.append(row)
    return pd.DataFrame(rows)


def section_fake(args: argparse.Namespace, folder: Path, work: Path) -> pd.DataFrame:
    from fake_openai_server import FakeOpenAIServer

    subsets = subsets_of(dolly_rows(folder, args.fake_subsets * 14), 14)
    prompt = PromptSpec(PRESETS["default"].template, "json")
    times: dict[int, list[float]] = {c: [] for c in args.concurrency}
    n_requests = args.fake_subsets * len(args.concurrency) * args.rounds + 10
    with FakeOpenAIServer(max_requests=n_requests, lifetime=1800) as server:
        run_execute(server.base_url, "fake-model", {0: subsets[0]}, concurrency=1, work=work, k=1,
                    prompt=prompt)  # warm-up: imports, first connection
        for r in range(args.rounds):
            for c in args.concurrency if r % 2 == 0 else args.concurrency[::-1]:
                server.script(*[{"sleep": args.service_time}] * args.fake_subsets)
                secs, counts, _ = run_execute(server.base_url, "fake-model", subsets, concurrency=c, work=work,
                                              k=1, prompt=prompt)
                assert counts["ok"] == args.fake_subsets, counts
                times[c].append(secs)
            print(f"fake round {r + 1}: " + ", ".join(f"c={c} {v[-1]:.2f}s" for c, v in times.items()),
                  file=sys.stderr)
    return scaling_table(times, args.fake_subsets, ideal=args.service_time)


def section_server(args: argparse.Namespace, url: str, folder: Path, work: Path) -> pd.DataFrame:
    subsets = subsets_of(dolly_rows(folder, args.server_subsets * args.subset_size, skip=1000), args.subset_size)
    prompt = PromptSpec(PRESETS["default"].template, "json", max_tokens=args.max_tokens)
    run_execute(url, "smollm2", {0: subsets[0]}, concurrency=1, work=work, k=1, prompt=prompt)  # warm-up
    times: dict[int, list[float]] = {c: [] for c in args.server_concurrency}
    completion: dict[int, int] = {}
    for c in args.server_concurrency:
        secs, counts, store = run_execute(url, "smollm2", subsets, concurrency=c, work=work, k=1, prompt=prompt)
        times[c].append(secs)
        completion[c] = store.usage("bench")["completion_tokens"]
        print(f"server c={c}: {secs:.1f}s {counts}", file=sys.stderr)
    return scaling_table(times, len(subsets), completion=completion)


def recording_client(url: str, bodies: list[bytes]) -> object:
    """An openai client that keeps every request body it sends (to replay them raw)."""
    import openai

    def keep(request: object) -> None:
        if request.url.path.endswith("/chat/completions"):
            bodies.append(request.read())

    http_client = openai.DefaultHttpx2Client(event_hooks={"request": [keep]})
    return openai.OpenAI(base_url=url, api_key="not-needed", max_retries=0, timeout=600, http_client=http_client)


def replay(url: str, bodies: list[bytes]) -> float:
    """Send the bodies one after another on one keep-alive connection; wall seconds."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    t0 = time.perf_counter()
    for body in bodies:
        conn.request("POST", parts.path + "/chat/completions", body=body,
                     headers={"content-type": "application/json", "authorization": "Bearer not-needed"})
        response = conn.getresponse()
        json.loads(response.read() or b"{}")
    secs = time.perf_counter() - t0
    conn.close()
    return secs


SERVER_TOTAL = re.compile(r"llama_perf_context_print:\s+total time =\s+([\d.]+) ms")


def server_seconds(log: Path, start: int) -> float:
    """Seconds llama.cpp itself reported ("total time" per answered request) since byte offset `start`."""
    with log.open("rb") as handle:
        handle.seek(start)
        text = handle.read().decode("utf-8", errors="replace")
    return sum(float(ms) for ms in SERVER_TOTAL.findall(text)) / 1000


def overhead_rounds(url: str, subsets: dict, prompt: PromptSpec, work: Path, rounds: int,
                    log: Path | None = None) -> dict[str, list[float]]:
    """Per round: wall seconds of our path and of the raw replay (and llama.cpp's own seconds for each)."""
    out: dict[str, list[float]] = {"ours": [], "raw": [], "ours server": [], "raw server": [], "requests": []}
    bodies: list[bytes] = []
    model = "smollm2" if log else "fake-model"

    def ours() -> None:
        bodies.clear()
        mark = log.stat().st_size if log else 0
        secs, counts, _ = run_execute(url, model, subsets, concurrency=1, work=work, k=1, prompt=prompt,
                                      client=recording_client(url, bodies))
        out["ours"].append(secs)
        out["ours server"].append(server_seconds(log, mark) if log else 0.0)
        out["requests"].append(len(bodies))

    def raw() -> None:
        mark = log.stat().st_size if log else 0
        out["raw"].append(replay(url, bodies))
        out["raw server"].append(server_seconds(log, mark) if log else 0.0)

    ours()  # records the bodies the raw replay sends; not timed
    for key in out:
        out[key].clear()
    for r in range(rounds):
        for step in (ours, raw) if r % 2 == 0 else (raw, ours):
            step()
        print(f"overhead round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in out.items()), file=sys.stderr)
    return out


def section_overhead(args: argparse.Namespace, url: str, log: Path, folder: Path, work: Path) -> pd.DataFrame:
    """Our client's extra time per request, against a zero-latency fake server and against llama.cpp."""
    from fake_openai_server import FakeOpenAIServer

    size = args.subset_size
    many = subsets_of(dolly_rows(folder, args.overhead_fake_subsets * size, skip=2000), size)
    prompt = PromptSpec(PRESETS["default"].template, "json", max_tokens=args.max_tokens)
    with FakeOpenAIServer(max_requests=100_000, lifetime=1800) as fake:
        quick = overhead_rounds(fake.base_url, many, prompt, work, max(args.rounds, 5))
    few = {i: many[i] for i in range(args.overhead_subsets)}
    real = overhead_rounds(url, few, prompt, work, args.rounds, log=log)
    rows = []
    for label, m in (("fake server, no service time", quick), ("llama_cpp.server, SmolLM2", real)):
        n = statistics.median(m["requests"])

        def per_request(values: list[float], n: float = n) -> float:
            return 1000 * statistics.median(values) / n

        # time outside llama.cpp's own compute, per round: subtracting cancels the compute's noise
        ours_out = [w - s for w, s in zip(m["ours"], m["ours server"], strict=True)]
        raw_out = [w - s for w, s in zip(m["raw"], m["raw server"], strict=True)]
        extra = per_request([o - r for o, r in zip(ours_out, raw_out, strict=True)])
        server = per_request(m["ours server"])
        rows.append({
            "server": label, "requests/round": int(n),
            "ours ms/request": round(per_request(m["ours"]), 1), "raw ms/request": round(per_request(m["raw"]), 1),
            "llama.cpp ms/request (its log)": round(server, 1) if server else "-",
            "ours outside llama.cpp ms/request": round(per_request(ours_out), 1),
            "raw outside llama.cpp ms/request": round(per_request(raw_out), 1),
            "our client's extra ms/request": round(extra, 1),
            "extra / llama.cpp time": f"{100 * extra / server:+.2f}%" if server else "-"})
    return pd.DataFrame(rows)


def section_tokens(args: argparse.Namespace, url: str, folder: Path, work: Path) -> pd.DataFrame:
    from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder
    from selectllm_core.pipeline import RunConfig, run

    size, picks = 14, 3  # the paper's Dolly run: subsets of 14, 3 picks per query for a 3k budget
    rows = dolly_rows(folder, args.token_queries * size)
    frame = pd.DataFrame({"id": [c.row_id for c in rows], "instruction": [c.instruction for c in rows],
                          "input": [c.input for c in rows]})
    out = []
    for preset in ("paper", "default"):
        store = Store(work / f"tokens-{preset}.sqlite")
        backend = OpenAICompatibleBackend(base_url=url, model="smollm2", concurrency=1, timeout=600, max_retries=0)
        config = RunConfig(budget=args.token_queries * picks, subset_size=size, picks_per_subset=picks,
                           prompt=preset)
        result = run(frame, config, store=store, backend=backend, embedder=SentenceTransformerEmbedder(),
                     cache=EmbeddingCache(work / "emb-cache"))
        usage = store.usage(result.run_id)
        selected = result.summary["selected"]
        queries = args.token_queries
        # every call counts, repairs included: that is what a provider bills
        cost_per_query = (usage["prompt_tokens"] * PRICE_IN + usage["completion_tokens"] * PRICE_OUT) / 1e6 / queries
        out.append({
            "prompt preset": preset, "queries": queries, "calls (with repairs)": usage["calls"],
            "subsets ok": result.summary["subsets"].get("ok", 0), "selected": selected,
            "prompt tok / query": round(usage["prompt_tokens"] / queries),
            "completion tok / query": round(usage["completion_tokens"] / queries),
            "tokens / selected instruction": round((usage["prompt_tokens"] + usage["completion_tokens"])
                                                   / max(1, selected)),
            "est. $ for 3k (1000 queries)": round(cost_per_query * 1000, 2),
            "paper $ for 3k": PAPER_COST_3K})
        print(f"tokens {preset}: {usage} {result.summary}", file=sys.stderr)
    return pd.DataFrame(out)


def main() -> None:
    args = parse_args()
    folder = data_dir(args.data)
    sections = {s.strip() for s in args.sections.split(",")}
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-llm-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs; rounds {args.rounds}; workdir {work}\n")
    if "fake" in sections:
        print(f"### Client scaling against a fake server ({args.service_time:g} s per request, "
              f"{args.fake_subsets} subsets of 14)\n")
        print(section_fake(args, folder, work).to_markdown(index=False) + "\n")
    if not sections & {"server", "overhead", "tokens"}:
        return
    with llama_server(work, args.threads) as url:
        if "server" in sections:
            print(f"### Real llama_cpp.server, SmolLM2-135M, {args.threads} threads ({args.server_subsets} subsets "
                  f"of {args.subset_size}, max_tokens {args.max_tokens})\n")
            print(section_server(args, url, folder, work).to_markdown(index=False) + "\n")
        if "overhead" in sections:
            print(f"### Client overhead: our backend + execute vs raw HTTP replay of the same bodies (subsets of "
                  f"{args.subset_size}: {args.overhead_fake_subsets} against the fake server, "
                  f"{args.overhead_subsets} against llama.cpp; {args.rounds} rounds, at least 5 on the fake)\n")
            print(section_overhead(args, url, work / "llama-server.log", folder, work).to_markdown(index=False)
                  + "\n")
        if "tokens" in sections:
            print(f"### Tokens per selected instruction ({args.token_queries} queries of 14 real Dolly rows, "
                  "3 picks each)\n")
            print(section_tokens(args, url, folder, work).to_markdown(index=False) + "\n")


if __name__ == "__main__":
    main()
