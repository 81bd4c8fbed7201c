"""One manifest builder for every run: pool, parameters, prompt, backend (no secrets), versions, and the
command that repeats it; and what in a run went otherwise than asked (never silent)."""

from __future__ import annotations

from importlib import metadata

from selectllm_core.methods import METHODS, repeat_command
from selectllm_core.methods.selectllm import NAME as SELECTLLM
from selectllm_core.runs.evidence import run_evidence
from selectllm_core.store import Store

VERSIONED = ("selectllm-studio", "sentence-transformers", "k-means-constrained", "llama-cpp-python", "openai",
             "numpy", "pandas")


def manifest(store: Store, run_id: str, *, which: str = "selected") -> dict:
    """Everything needed to repeat a run: pool, parameters, prompt, backend (no secrets), versions."""
    run = store.get_run(run_id)
    pools = store.list_pools()
    pool = pools[pools["pool_id"] == run["pool_id"]].to_dict("records")
    versions = {}
    for dist in VERSIONED:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "run_id": run_id, "method": run["method"], "status": run["status"], "created_at": run["created_at"],
        "pool": pool[0] if pool else {"pool_id": run["pool_id"]}, "params": run["params"],
        "prompt_template": run["prompt"], "backend": run["backend"], "usage": store.usage(run_id),
        "rounds": rounds(store, run_id),
        "degraded": degradations(store, run_id),
        "evidence": run_evidence(store, run_id).record() if run["method"] == SELECTLLM else None,
        "exported": which, "versions": versions,
        "repeat": repeat_command(run) if run["method"] in METHODS else None,
    }


def rounds(store: Store, run_id: str) -> list[dict]:
    """A tournament's rounds: rows, subsets, picks per subset, calls, tokens and money each (one round: [])."""
    usage = store.round_usage(run_id)
    if len(usage) <= 1:
        return []
    picks = {r["round"]: r["plan"]["picks_per_subset"] for r in store.rounds(run_id)}
    return [{**{k: (None if k == "cost" and v != v else v) for k, v in row.items()},  # NaN: no price known
             "picks_per_subset": picks[row["round"]]} for row in usage.to_dict("records")]


def degradations(store: Store, run_id: str) -> list[str]:
    """What in a run went otherwise than asked, in words: never silent (the page, `status` and manifests say it).

    Returns:
        One sentence per degradation: answers without the JSON constraint, subsets given fewer picks.
    """
    run, usage = store.get_run(run_id), store.usage(run_id)
    out = []
    formats = usage.get("answer_formats", {})
    unconstrained = formats.get("none", 0)
    if unconstrained and run["backend"].get("json_mode", "auto") != "off" and run["method"] == SELECTLLM:
        out.append(f"{unconstrained} of {sum(formats.values())} answered calls were sent without a JSON constraint: "
                   "the server refused response_format, so the studio fell back to plain text and parsed the "
                   "answers (invalid ones are failed subsets, never guessed picks).")
    notes = store.subset_notes(run_id)  # not every result: the run panel asks this every 2 s while a run works
    if notes:
        out.append(f"{len(notes)} subset(s) got fewer picks than planned, e.g. subset {notes[0][0]}: {notes[0][1]}.")
    return out
