"""A local call against llama.cpp's own time for the same prompt and answer tokens.

    python benchmarks/bench_local_call.py --data DIR                       # every installed local model
    python benchmarks/bench_local_call.py --data DIR --models smollm2-135m --subsets 8

Each call is a selection request exactly as a run sends it (`listwise.first_request`: the `default` preset's
prompt for a subset of n = 10 real Dolly rows, k = 2, its JSON-schema grammar, greedy), through the studio's
local backend (`LocalLlamaBackend`: llama-cpp-python in its own worker process), one subset after another as a
run asks them, so llama.cpp's cache reuses the prompt prefix they share.

- ours: the wall seconds of `LocalLlamaBackend.chat`, as the run's ledger records them (chat template, grammar,
  sampling, the worker's pipe and JSON, our parsing of nothing yet);
- llama.cpp's own: the seconds llama.cpp itself reports for that very call (its performance counters, reset
  before the call: prompt evaluation of the tokens the cached prefix did not cover, plus generating the answer's
  tokens), so both numbers cover the same prompt and the same answer tokens;
- ratio = ours / llama.cpp's own, per call (median and worst). Both numbers come from the same call, so a loaded
  machine slows both.
- `--free` also sends each request once more without the grammar (the same prompt, answer capped at the grammar
  answer's length) after clearing llama.cpp's cache of that prompt's reuse, to show what the grammar costs.
- `--full-grammar` also sends each request to a second worker that holds the answer to its grammar the way
  llama-cpp-python's own sampler does (`LocalLlamaBackend(grammar="full")`: the grammar matched against the whole
  vocabulary at every step), against the studio's default (`grammar="lazy"`: the grammar asked about the chosen
  token, as llama.cpp's own sampler does), with the same requests in the same order, and counts identical answers.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._data import command_line, data_dir, read_jsonl  # noqa: E402
from selectllm_core.llm import LocalLlamaBackend  # noqa: E402
from selectllm_core.llm.local import stop_model_processes  # noqa: E402
from selectllm_core.llm.models import LOCAL_MODELS, is_installed, model_path  # noqa: E402
from selectllm_core.select.listwise import Candidate, PromptSpec, first_request  # noqa: E402
from selectllm_core.select.prompts import PRESETS  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--models", default=None, help="registry names, comma-separated (default: every installed one)")
    p.add_argument("--subsets", type=int, default=6, help="requests per model")
    p.add_argument("--n", type=int, default=10, help="rows per subset")
    p.add_argument("--k", type=int, default=2, help="picks per subset")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--free", action="store_true", help="also time each request without the grammar")
    p.add_argument("--full-grammar", action="store_true",
                   help="also time each request under llama-cpp-python's whole-vocabulary grammar sampling")
    return p.parse_args()


def subsets(folder: Path, *, count: int, n: int, seed: int) -> list[list[Candidate]]:
    rows = read_jsonl(folder / "dolly_alpagasus_3k.jsonl.gz")
    order = np.random.default_rng(seed).permutation(len(rows))
    cands = [Candidate(f"dolly-{i}", rows[i]["instruction"], rows[i].get("input") or "") for i in order]
    return [cands[s * n:(s + 1) * n] for s in range(count)]


def measure(name: str, groups: list[list[Candidate]], *, k: int, free: bool, full_grammar: bool) -> dict:
    model = LOCAL_MODELS[name]
    backend = LocalLlamaBackend(model_path(model), n_ctx=model.n_ctx)
    full = LocalLlamaBackend(model_path(model), n_ctx=model.n_ctx, grammar="full") if full_grammar else None
    if full is not None:
        full.chat([{"role": "user", "content": "Say OK."}], max_tokens=2)
    preset = PRESETS["default"]
    spec = PromptSpec(preset.template, preset.answer_format)
    backend.chat([{"role": "user", "content": "Say OK."}], max_tokens=2)  # load the model before timing
    calls, frees, fulls = [], [], []
    for s, members in enumerate(groups):
        messages, schema = first_request(members, k=k, prompt=spec)
        got = backend.chat(messages, json_schema=schema, max_tokens=spec.max_tokens, temperature=0.0)
        calls.append(got)
        print(f"  {name}: request {s + 1}/{len(groups)}: {got.elapsed:.2f} s, llama.cpp {got.engine_seconds:.2f} s, "
              f"{got.completion_tokens} answer tokens", file=sys.stderr)
        if full is not None:
            fulls.append(full.chat(messages, json_schema=schema, max_tokens=spec.max_tokens, temperature=0.0))
            print(f"    whole-vocabulary grammar: {fulls[-1].elapsed:.2f} s, llama.cpp {fulls[-1].engine_seconds:.2f} s, "
                  f"same answer: {fulls[-1].text == got.text}", file=sys.stderr)
        if free:
            backend.chat([{"role": "user", "content": "Say OK."}], max_tokens=1)  # no prefix of this prompt left
            frees.append(backend.chat(messages, max_tokens=max(got.completion_tokens, 1), temperature=0.0))
            backend.chat([{"role": "user", "content": "Say OK."}], max_tokens=1)
    stop_model_processes()
    return {"name": name, "title": model.title, "calls": calls, "frees": frees, "fulls": fulls}


def _ratio(calls: list) -> float:
    """Median of ours / llama.cpp's own over the calls."""
    return statistics.median(c.elapsed / c.engine_seconds for c in calls if c.engine_seconds)


def _comparison(rows: list[dict], key: str, title: str, header: list[str], cells) -> None:  # noqa: ANN001
    """A table of the default calls against the same requests sent another way (`rows[i][key]`)."""
    if not any(r[key] for r in rows):
        return
    print(f"\n{title}:\n")
    print("| model | " + " | ".join(header) + " |")
    print("| --- |" + " ---: |" * len(header))
    for r in rows:
        if r[key]:
            print(f"| {r['title']} | " + " | ".join(cells(r["calls"], r[key])) + " |")


def print_table(rows: list[dict], *, command: str, load: tuple[float, float]) -> None:
    print("### A local call against llama.cpp's own time for the same prompt and answer tokens\n")
    print(f"`{command}`\n")
    print("| model | requests | prompt tokens | answer tokens | ours s/call | llama.cpp's own s/call | ratio, median "
          "| ratio, worst |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        calls = r["calls"]
        ratios = [c.elapsed / c.engine_seconds for c in calls if c.engine_seconds]
        print(f"| {r['title']} | {len(calls)} | {statistics.mean(c.prompt_tokens for c in calls):.0f} | "
              f"{statistics.mean(c.completion_tokens for c in calls):.0f} | "
              f"{statistics.mean(c.elapsed for c in calls):.2f} | "
              f"{statistics.mean(c.engine_seconds for c in calls):.2f} | {statistics.median(ratios):.2f} | "
              f"{max(ratios):.2f} |")
    _comparison(rows, "frees", "Without the grammar (same prompts read in full, answers capped at the grammar "
                "answers' length)", ["with the grammar: ours / llama.cpp's own", "without: ours / llama.cpp's own",
                                     "answer tokens with / without"],
                lambda calls, other: [f"{_ratio(calls):.2f}", f"{_ratio(other):.2f}",
                                      f"{sum(c.completion_tokens for c in calls)} / "
                                      f"{sum(c.completion_tokens for c in other)}"])
    _comparison(rows, "fulls", "The grammar asked about the chosen token (lazy, the default) against the whole "
                "vocabulary at every step (full), same requests",
                ["lazy: ours / llama.cpp's own", "full: ours / llama.cpp's own", "full s/call / lazy s/call",
                 "identical answers"],
                lambda calls, other: [f"{_ratio(calls):.2f}", f"{_ratio(other):.2f}",
                                      f"{statistics.median(f.elapsed / c.elapsed for c, f in zip(calls, other)):.2f}",
                                      f"{sum(c.text == f.text for c, f in zip(calls, other))}/{len(calls)}"])
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs; load average {load[0]:.1f} before, {load[1]:.1f} after")


def main() -> None:
    args = parse_args()
    names = args.models.split(",") if args.models else [n for n, m in LOCAL_MODELS.items() if is_installed(m)]
    missing = [n for n in names if not is_installed(LOCAL_MODELS[n])]
    if missing:
        raise SystemExit("not installed: " + ", ".join(f"{n} (`{LOCAL_MODELS[n].install_command()}`)" for n in missing))
    groups = subsets(data_dir(args.data), count=args.subsets, n=args.n, seed=args.seed)
    before = os.getloadavg()[0]
    rows = [measure(name, groups, k=args.k, free=args.free, full_grammar=args.full_grammar) for name in names]
    print_table(rows, command=command_line("bench_local_call.py", sys.argv[1:]), load=(before, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
