"""Offline judging: do the local models pick instructions by their content, or by where they are shown?

    python benchmarks/bench_judge.py --data DIR                      # every installed local model, one order
    python benchmarks/bench_judge.py --data DIR --orders 1,2,4,8     # also Borda over P orders (position-debiased)
    python benchmarks/bench_judge.py --data DIR --models qwen2.5-coder-1.5b --extra qwen0.5b=FILE.gguf

Method (the same for every model): 12 seeded subsets of n = 10 real Dolly rows (dolly_alpagasus_3k), k = 2
picks each, the `default` preset with its JSON schema, asked exactly as a run asks (`select_subset`: the
project's prompt builder, the schema-constrained call, its parser and its one repair message), each subset
shown in its order and then reversed.

- valid answers: share of requests that ended in usable picks (after at most the run's one repair);
- order consistency: share of the k picks both orders of a subset agree on (chance k / n = 0.20; 1.00: the
  same picks whatever the order); z: standard errors above chance (`select.orders.run_consistency`);
- picks at shown positions 1-2: share of picks the model took from the first two places shown (uniform 0.20;
  1.00 is a position picker);
- unsafe prompt picked: 12 more subsets, each of 9 other Dolly rows and one `unsafe` XSTest prompt at a seeded
  place, under the `default` and the `low-toxicity` preset: share of subsets whose picks include it (random
  k / n); per mode, the picks are those of the first P orders (Borda for P >= 2), as a run would make them;
- s/call: mean wall seconds of a call when it was sent (an answer from the benchmark's response cache counts
  the time its call took).

--orders P (P >= 2) adds the position-debiased mode of `selectllm run --orders P`: each subset is shown in 2P
distinct orders (`select.orders.orders_of`: as shown, reversed, then seeded shuffles), split into two disjoint
groups of P (orders 1, 3, 5, ... and 2, 4, 6, ...); each group's answers are aggregated with Borda counts
(`select.orders.borda`) and the consistency is the agreement of the two groups' picks. P = 1 is the shown and
the reversed order above. Larger P costs 2P calls per subset here (P in a run). The modes table also gives,
per P, the share of the run's picks (Borda over orders 1..P) at positions 1-2 of the order first shown, the
unsafe share under both presets, and s/subset: the measured seconds of the P calls a run makes per subset.

--scores adds SelectLLM's score aggregation (`selectllm run --aggregation scores --orders P`) for every P:
the same views, each a one-token score pass (`score_ids`: the probability of every id after the answer is
begun, no grammar, nothing generated); the position prior is taken over every pass of the measurement's
subsets (as a run takes it over its round), each group's picks are the k best calibrated scores
(`select.scores.calibrated`), and the run's picks those of views 1..P. Its s/subset is the P passes plus the
mean measured time of the one reasoned call a run then makes per subset (asked for the largest P's picks).

--prompt paper asks the subsets with the paper's ids-only prompt instead of the default JSON one (no reasons, so
the score aggregation makes no reasoned call); the unsafe probes keep the default and low-toxicity presets.

Answers are kept in a response cache under benchmarks/.cache/judge (keyed by model file, prompt and schema, as a
run's are), so a longer --orders list reuses the answers of a shorter one; --no-cache asks again.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchmarks._data import command_line, data_dir, read_jsonl  # noqa: E402
from selectllm_core.engines.meter import Meter  # noqa: E402
from selectllm_core.llm import ChatBackend, ChatResult, LocalLlamaBackend, backend_identity  # noqa: E402
from selectllm_core.llm.cache import ResponseCache, request_key, score_key  # noqa: E402
from selectllm_core.llm.local import stop_model_processes  # noqa: E402
from selectllm_core.llm.models import LOCAL_MODELS, is_installed, model_path  # noqa: E402
from selectllm_core.select.listwise import Candidate, PromptSpec, first_request, select_subset  # noqa: E402
from selectllm_core.select.orders import borda, orders_of, run_consistency  # noqa: E402
from selectllm_core.select.prompts import PRESETS, score_prefill  # noqa: E402
from selectllm_core.select.scores import SCORE, calibrated, position_prior, reason_request, top_k  # noqa: E402

DOLLY, XSTEST = "dolly_alpagasus_3k.jsonl.gz", "xstest_prompts.jsonl.gz"
CACHE = Path(__file__).resolve().parent / ".cache" / "judge"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="instruction-data folder (or env SELECTLLM_DATA_DIR)")
    p.add_argument("--models", default=None, help="registry names, comma-separated (default: every one offered)")
    p.add_argument("--extra", action="append", default=[], metavar="LABEL=FILE",
                   help="also measure a GGUF file the registry does not offer (repeatable)")
    p.add_argument("--subsets", type=int, default=12, help="subsets per measurement")
    p.add_argument("--n", type=int, default=10, help="rows per subset")
    p.add_argument("--k", type=int, default=2, help="picks per subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--orders", default="1", help="comma-separated P values, e.g. 1,2,4,8 (P = 1 always runs)")
    p.add_argument("--no-unsafe", action="store_true", help="skip the XSTest measurement")
    p.add_argument("--prompt", default="default", choices=["default", "paper"],
                   help="the subsets' preset: default (JSON with reasons) or paper (ids only, as the paper asks); "
                        "the unsafe probes always use the default and low-toxicity presets")
    p.add_argument("--scores", action="store_true", help="also measure the score aggregation for every P")
    p.add_argument("--scores-only", action="store_true", help="measure the score aggregation and not the generated "
                   "answers (P = 1's table then reads the score passes)")
    p.add_argument("--no-cache", action="store_true", help="ask every request again (default: reuse answers)")
    return p.parse_args()


def build_subsets(folder: Path, *, subsets: int, n: int, seed: int) -> tuple[list[list[Candidate]], list[list[Candidate]]]:
    """Dolly subsets, and the unsafe-probe subsets (n - 1 other Dolly rows + one unsafe XSTest prompt each)."""
    rng = np.random.default_rng(seed)
    dolly = read_jsonl(folder / DOLLY)
    order = rng.permutation(len(dolly))
    rows = [Candidate(f"dolly-{i}", dolly[i]["instruction"], dolly[i].get("input") or "") for i in order]
    plain = [rows[s * n:(s + 1) * n] for s in range(subsets)]
    filler = rows[subsets * n:]
    unsafe = [r for r in read_jsonl(folder / XSTEST) if r["label"] == "unsafe"]
    picked = rng.choice(len(unsafe), size=subsets, replace=False)
    probes = []
    for s, u in enumerate(picked):
        members = list(filler[s * (n - 1):(s + 1) * (n - 1)])
        members.insert(int(rng.integers(0, n)), Candidate(f"unsafe-{unsafe[u]['id']}", unsafe[u]["prompt"], ""))
        probes.append(members)
    return plain, probes


@dataclass
class Tally:
    """What one model's requests gave: answers per subset and view, and the time of the calls sent."""

    answers: dict[tuple[int, int], list[str] | None] = field(default_factory=dict)
    requests: int = 0
    usable: int = 0
    repairs: int = 0
    first_two: int = 0
    picks: int = 0
    sent_seconds: list[float] = field(default_factory=list)
    view_seconds: dict[tuple[int, int], float] = field(default_factory=dict)  # every call of a (subset, view)
    probe_answers: dict[tuple[str, int, int], list[str] | None] = field(default_factory=dict)

    def ask(self, backend: ChatBackend, shown: list[Candidate], *, subset: int, k: int, spec: PromptSpec,
            count: bool = True, view: tuple[int, int] | None = None) -> list[str] | None:
        """One request as a run makes it (shuffle off: `shown` is the order); its picks or None."""
        out = select_subset(backend, shown, subset=subset, k=k, prompt=spec, shuffle=False)
        self.sent_seconds += [c["elapsed"] for c in out.calls if c.get("ok") and np.isfinite(c["elapsed"])]
        if view is not None:
            self.view_seconds[view] = float(sum(c["elapsed"] for c in out.calls if np.isfinite(c["elapsed"])))
        if not count:
            return out.picks if out.status == "ok" else None
        self.requests += 1
        self.repairs += len(out.calls) > 1
        if out.status != "ok":
            return None
        self.usable += 1
        self.picks += len(out.picks)
        self.first_two += sum(out.members.index(rid) < 2 for rid in out.picks)
        return out.picks


class Timed:
    """A metered backend that remembers how long each request took when it was sent, so s/call survives the cache."""

    def __init__(self, metered: ChatBackend, inner: ChatBackend, timings: Path) -> None:
        self.metered, self.timings = metered, timings
        self.identity = backend_identity(inner.describe())
        self.name, self.concurrency = metered.name, metered.concurrency
        self.seconds = json.loads(timings.read_text()) if timings.is_file() else {}

    def __getattr__(self, name: str):  # noqa: ANN204 - describe, count_tokens, ... of the metered backend
        return getattr(self.metered, name)

    def chat(self, messages: list[dict], **kwargs) -> ChatResult:  # noqa: ANN003 - the ChatBackend keywords
        result = self.metered.chat(messages, **kwargs)
        key = request_key(self.identity, messages, json_schema=kwargs.get("json_schema"),
                          temperature=kwargs.get("temperature", 0.0), max_tokens=kwargs.get("max_tokens", 512))
        if not result.cached:
            self.seconds[key] = result.elapsed
            self.timings.write_text(json.dumps(self.seconds))
        result.elapsed = self.seconds.get(key, float("nan"))
        return result

    def score_ids(self, messages: list[dict], *, prefill: str, ids: list[str]):  # noqa: ANN201 - a ScoreResult
        result = self.metered.score_ids(messages, prefill=prefill, ids=ids)
        key = score_key(self.identity, messages, prefill=prefill, ids=ids)
        if not result.cached:
            self.seconds[key] = result.elapsed
            self.timings.write_text(json.dumps(self.seconds))
        result.elapsed = self.seconds.get(key, float("nan"))
        return result


def measure(label: str, backend: ChatBackend, plain: list[list[Candidate]], probes: list[list[Candidate]], *,
            k: int, orders: list[int], seed: int, prompt: str = "default") -> dict:
    """Every number of the tables for one model."""
    default, careful = PRESETS["default"], PRESETS["low-toxicity"]
    spec = PromptSpec(PRESETS[prompt].template, PRESETS[prompt].answer_format)
    tally, views_needed = Tally(), 2 * max(orders)
    started = time.perf_counter()
    for s, members in enumerate(plain):
        views = orders_of(len(members), views_needed, seed=[seed, s])
        for j, view in enumerate(views):
            # P = 1's two orders count for validity and positions; the other views only feed the Borda modes
            tally.answers[s, j] = tally.ask(backend, [members[i] for i in view], subset=s, k=k, spec=spec,
                                            count=j < 2, view=(s, j))
        print(f"  {label}: subset {s + 1}/{len(plain)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    for name, preset in (("default", default), ("low-toxicity", careful)):
        probe_spec = PromptSpec(preset.template, preset.answer_format)
        for s, members in enumerate(probes):
            for j, view in enumerate(orders_of(len(members), max(orders), seed=[seed, 1000 + s])):
                tally.probe_answers[name, s, j] = tally.ask(backend, [members[i] for i in view], subset=1000 + s,
                                                            k=k, spec=probe_spec, count=False)
            print(f"  {label}: {name} probe {s + 1}/{len(probes)} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr)
    n = len(plain[0])
    modes = {p: mode_numbers(tally, plain, probes, p, k=k) for p in orders}
    unsafe = modes[1]["unsafe"]["low-toxicity"]
    return {"label": label, "tally": tally, "modes": modes, "n": n, "k": k,
            "unsafe": unsafe[0], "unsafe_ok": unsafe[1], "probes": len(probes)}


def mode_numbers(tally: Tally, plain: list[list[Candidate]], probes: list[list[Candidate]], p: int, *,
                 k: int) -> dict:
    """One mode's numbers: consistency, position share and s/subset of the run's P orders, unsafe shares."""
    first_two, picked, seconds = 0, 0, []
    for s, members in enumerate(plain):
        usable = [tally.answers[s, j] for j in range(p) if tally.answers.get((s, j))]
        if usable:
            run_picks = borda(usable, k) if p > 1 else usable[0]
            shown = [c.row_id for c in members]  # view 0 is the subset as shown
            first_two += sum(shown.index(rid) < 2 for rid in run_picks)
            picked += len(run_picks)
        spent = [tally.view_seconds.get((s, j), float("nan")) for j in range(p)]
        if all(np.isfinite(spent)):
            seconds.append(sum(spent))
    unsafe = {}
    for name in ("default", "low-toxicity"):
        hits, answered = 0, 0
        for s in range(len(probes)):
            usable = [tally.probe_answers[name, s, j] for j in range(p) if tally.probe_answers.get((name, s, j))]
            if usable:
                answered += 1
                hits += any(rid.startswith("unsafe-") for rid in (borda(usable, k) if p > 1 else usable[0]))
        unsafe[name] = ((hits / answered) if answered else None, answered)
    return {"consistency": consistency_of(tally, plain, p), "first_two": (first_two / picked) if picked else None,
            "unsafe": unsafe, "seconds": float(np.mean(seconds)) if seconds else None}


def consistency_of(tally: Tally, plain: list[list[Candidate]], p: int):  # noqa: ANN201 - a Consistency
    """Agreement of Borda picks over views 0, 2, 4, ... with those over views 1, 3, 5, ... (P of each)."""
    results = []
    for s, members in enumerate(plain):
        groups = []
        for start in (0, 1):
            answers = [tally.answers[s, j] for j in range(start, 2 * p, 2) if tally.answers.get((s, j))]
            groups.append({"picks": borda(answers, len(answers[0])) if answers else None})
        results.append({"members": [c.row_id for c in members], "orders": groups})
    return run_consistency(results)


def score_views(backend: ChatBackend, members: list[Candidate], views: list[list[int]], *, k: int,
                spec: PromptSpec) -> tuple[list[dict], list[float]]:
    """One score pass per view: stored as a run stores them, with each pass's measured seconds."""
    passes, seconds = [], []
    ids = [str(i) for i in range(1, len(members) + 1)]
    for view in views:
        shown = [members[i] for i in view]
        messages, _schema = first_request(shown, k=k, prompt=spec)
        got = backend.score_ids(messages, prefill=score_prefill(spec.answer_format), ids=ids)
        passes.append({"role": SCORE, "shown": [c.row_id for c in shown], "logprobs": [got.logprobs[i] for i in ids]})
        seconds.append(got.elapsed)
    return passes, seconds


def measure_scores(label: str, backend: ChatBackend, plain: list[list[Candidate]], probes: list[list[Candidate]], *,
                   k: int, orders: list[int], seed: int, prompt: str = "default") -> dict:
    """The score aggregation's numbers for every P (the same views as the Borda modes)."""
    default, careful = PRESETS["default"], PRESETS["low-toxicity"]
    spec = PromptSpec(PRESETS[prompt].template, PRESETS[prompt].answer_format)
    started = time.perf_counter()
    passes, seconds = {}, {}
    for s, members in enumerate(plain):
        views = orders_of(len(members), 2 * max(orders), seed=[seed, s])
        passes[s], seconds[s] = score_views(backend, members, views, k=k, spec=spec)
        print(f"  {label}: scored subset {s + 1}/{len(plain)} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr)
    prior = position_prior([{"orders": v} for v in passes.values()])
    probe_passes = {}
    for name, preset in (("default", default), ("low-toxicity", careful)):
        probe_spec = PromptSpec(preset.template, preset.answer_format)
        for s, members in enumerate(probes):
            views = orders_of(len(members), max(orders), seed=[seed, 1000 + s])
            probe_passes[name, s], _ = score_views(backend, members, views, k=k, spec=probe_spec)
        print(f"  {label}: scored the {name} probes ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    # one reasoned call per subset, for the largest P's picks: what a run adds to its passes (none for ids only)
    reason_seconds = []
    for s, members in enumerate(plain if spec.answer_format == "json" else []):
        picks = top_k(calibrated(passes[s][: max(orders)], prior), k, passes[s][0]["shown"])
        messages, schema = reason_request(members, picks, k=k, prompt=spec)
        reason_seconds.append(backend.chat(messages, json_schema=schema, max_tokens=spec.max_tokens).elapsed)
    modes = {}
    for p in orders:
        results, first_two, picked = [], 0, 0
        for s, members in enumerate(plain):
            groups = [{"picks": top_k(calibrated(passes[s][start:2 * p:2], prior), k, passes[s][start]["shown"])}
                      for start in (0, 1)]
            results.append({"members": [c.row_id for c in members], "orders": groups})
            run_picks = top_k(calibrated(passes[s][:p], prior), k, passes[s][0]["shown"])
            first_two += sum(passes[s][0]["shown"].index(rid) < 2 for rid in run_picks)
            picked += len(run_picks)
        unsafe = {}
        for name in ("default", "low-toxicity") if probes else ():
            mine = [probe_passes[name, s] for s in range(len(probes))]
            probe_prior = position_prior([{"orders": v} for v in mine])
            hits = sum(any(rid.startswith("unsafe-") for rid in top_k(calibrated(v[:p], probe_prior), k, v[0]["shown"]))
                       for v in mine)
            unsafe[name] = ((hits / len(mine)) if mine else None, len(mine))
        spent = [sum(seconds[s][:p]) + (float(np.mean(reason_seconds)) if reason_seconds else 0.0) for s in seconds]
        modes[p] = {"consistency": run_consistency(results), "first_two": first_two / max(picked, 1),
                    "unsafe": unsafe, "seconds": float(np.nanmean(spent)) if spent else None,
                    "pass_seconds": float(np.nanmean([x for v in seconds.values() for x in v]))}
    return modes


def backends(args: argparse.Namespace) -> tuple[list[tuple[str, ChatBackend]], list[str]]:
    """(label, backend) for every model to measure, and lines saying which were skipped and why."""
    names = args.models.split(",") if args.models else list(LOCAL_MODELS)
    out, skipped = [], []
    for name in names:
        model = LOCAL_MODELS[name]
        if not is_installed(model):
            skipped.append(f"{name}: not installed (`{model.install_command()}`)")
            continue
        out.append((name, LocalLlamaBackend(model_path(model), n_ctx=model.n_ctx)))
    for extra in args.extra:
        label, _, path = extra.partition("=")
        out.append((label, LocalLlamaBackend(path)))
    return out, skipped


def print_tables(rows: list[dict], orders: list[int], *, subsets: int, skipped: list[str], command: str,
                 load: tuple, seed: int, prompt: str = "default") -> None:
    n, k = rows[0]["n"], rows[0]["k"]
    chance = k / n
    print(f"### Offline judging: {subsets} Dolly subsets of {n}, "
          f"k = {k}, {prompt} preset, {'JSON schema' if PRESETS[prompt].answer_format == 'json' else 'ids only'}\n")
    print(f"`{command}`\n")
    print(f"| model | valid answers | order consistency (chance {chance:.2f}) | z | picks at shown positions 1–2 "
          f"(uniform {2 / n:.2f}) | unsafe prompt picked (random {chance:.2f}) | s/call |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        if "tally" not in r:  # --scores-only: no generated answers
            continue
        t, c = r["tally"], r["modes"][1]["consistency"]
        consistency = f"{c.value:.2f} ({c.subsets} subsets)" if c.value is not None else "not measured"
        z = f"{c.z:.1f}" if c.value is not None and np.isfinite(c.z) else "—"
        unsafe = f"{r['unsafe']:.2f} ({r['unsafe_ok']}/{r['probes']} answered)" if r["unsafe"] is not None else "—"
        seconds = f"{np.mean(t.sent_seconds):.1f}" if t.sent_seconds else "cached"
        print(f"| {r['label']} | {t.usable}/{t.requests} ({t.usable / max(t.requests, 1):.2f}); {t.repairs} "
              f"repaired | {consistency} | {z} | {t.first_two / max(t.picks, 1):.2f} | {unsafe} | {seconds} |")
    print(f"\nPer mode (P = 1: the paper, one order; P >= 2: Borda over P orders; scores: P one-token score passes "
          "calibrated by the position prior, then one reasoned call). Random picks: consistency "
          f"{chance:.2f}, positions 1–2 {2 / n:.2f}, unsafe {chance:.2f}.\n")
    print("| model | mode | order consistency | z | run's picks at positions 1–2 | unsafe picked, default | "
          "unsafe picked, low-toxicity | calls per subset | s/subset |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        for p in orders if "modes" in r else []:
            m = r["modes"][p]
            c = m["consistency"]
            value = f"{c.value:.2f}" if c.value is not None else "not measured"
            z = f"{c.z:.1f}" if c.value is not None and np.isfinite(c.z) else "—"
            pos = f"{m['first_two']:.2f}" if m["first_two"] is not None else "—"
            unsafe = [f"{v:.2f} ({a}/{r['probes']})" if v is not None else "—" for v, a in
                      (m["unsafe"].get("default", (None, 0)), m["unsafe"].get("low-toxicity", (None, 0)))]
            seconds = f"{m['seconds']:.1f}" if m["seconds"] is not None else "cached"
            mode = "paper, P = 1" if p == 1 else f"Borda, P = {p}"
            print(f"| {r['label']} | {mode} | {value} | {z} | {pos} | {unsafe[0]} | {unsafe[1]} | {p} | {seconds} |")
        for p in orders if r.get("scores") else []:
            m = r["scores"][p]
            c = m["consistency"]
            value = f"{c.value:.2f}" if c.value is not None else "not measured"
            z = f"{c.z:.1f}" if c.value is not None and np.isfinite(c.z) else "—"
            unsafe = [f"{v:.2f} ({a}/{r['probes']})" if v is not None else "—" for v, a in
                      (m["unsafe"].get("default", (None, 0)), m["unsafe"].get("low-toxicity", (None, 0)))]
            calls = f"{p} pass{'es' if p > 1 else ''}" + (" + 1 call" if PRESETS[prompt].answer_format == "json" else "")
            print(f"| {r['label']} | scores, P = {p} | {value} | {z} | {m['first_two']:.2f} | {unsafe[0]} | "
                  f"{unsafe[1]} | {calls} | {m['seconds']:.1f} |")
    for line in skipped:
        print(f"\nSkipped {line}")
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs; load average {load[0]:.1f} before, {load[1]:.1f} after; "
          f"seed {seed}")


def main() -> None:
    args = parse_args()
    orders = sorted({1, *(int(p) for p in args.orders.split(","))})
    folder = data_dir(args.data)
    plain, probes = build_subsets(folder, subsets=args.subsets, n=args.n, seed=args.seed)
    if args.no_unsafe:
        probes = []
    CACHE.mkdir(parents=True, exist_ok=True)
    meter = Meter(price=None, cache=None if args.no_cache else ResponseCache(CACHE))
    chosen, skipped = backends(args)
    if not chosen:
        raise SystemExit("no local model to measure: " + "; ".join(skipped))
    load_before = os.getloadavg()[0]
    rows = []
    try:
        for label, backend in chosen:
            timed = Timed(meter.wrap(backend), backend, CACHE / "seconds.json")
            if args.scores_only:
                row = {"label": label, "n": args.n, "k": args.k, "probes": len(probes)}
            else:
                row = measure(label, timed, plain, probes, k=args.k, orders=orders, seed=args.seed,
                              prompt=args.prompt)
            if args.scores or args.scores_only:
                row["scores"] = measure_scores(label, timed, plain, probes, k=args.k, orders=orders, seed=args.seed,
                                               prompt=args.prompt)
            rows.append(row)
    finally:
        stop_model_processes()
    print_tables(rows, orders, subsets=len(plain), skipped=skipped, command=command_line("bench_judge.py", sys.argv[1:]),
                 load=(load_before, os.getloadavg()[0]), seed=args.seed, prompt=args.prompt)


if __name__ == "__main__":
    main()
