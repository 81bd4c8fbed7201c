"""The Python API: one call per step, and `run` for the whole SelectLLM pipeline.

    from selectllm_core import pipeline
    result = pipeline.run("pool.jsonl", pipeline.RunConfig(budget=300))
    pipeline.export_run(result.store, result.run_id, "batch.csv")

A façade: each name lives in the one module that owns the concept (SelectLLM's run in methods/selectllm.py,
manifests in runs/manifest.py, exports in runs/export.py), and the CLI, the studio and library users all call
the same functions, so each behaviour (resume, trimming, manifests) exists once.

A run is identified by everything that decides its outcome (pool, parameters, prompt, backend), so running
the same thing again finds the stored run: finished subsets are not called again and cached embeddings
are not computed again.
"""

from __future__ import annotations

from typing import Any

from selectllm_core.engines import StageProgress
from selectllm_core.errors import ConfigError
from selectllm_core.llm import backend_identity
from selectllm_core.methods import get
from selectllm_core.methods.base import load
from selectllm_core.methods.selectllm import (
    NAME as METHOD,
)
from selectllm_core.methods.selectllm import (
    RunConfig,
    RunResult,
    check_orders,
    embed,
    plan,
    run,
    run_id_of,
    subsets_from_plan,
)
from selectllm_core.methods.selectllm import (
    retry_failed as _retry_selectllm,
)
from selectllm_core.pool.load import column_map, sample_pool
from selectllm_core.runs.export import export_run
from selectllm_core.runs.manifest import degradations, manifest, rounds
from selectllm_core.runs.picks import selection_frame, which_picks
from selectllm_core.store import Store


def retry_failed(store: Store, run_id: str, *, backend, subsets: list[int] | None = None,
                 progress: StageProgress | None = None, **meter: Any) -> dict:
    """Call failed (or the given) subsets of a stored SelectLLM run again, then re-trim the selection.

    The backend must describe itself as the run's backend did, so a retry cannot mix models silently. Runs
    of other methods are retried by running their command again; the error says which.
    """
    stored = store.get_run(run_id)
    if stored["method"] != METHOD:
        raise ConfigError(
            f"Run {run_id} is a {stored['method']} run; `selectllm retry` retries SelectLLM runs. Run its command "
            f"again (add --retry-failed for alpagasus and selectit): {get(stored['method']).repeat_command(stored)}"
        )
    return _retry_selectllm(store, run_id, backend=backend, subsets=subsets, progress=progress, **meter)


__all__ = ["METHOD", "RunConfig", "RunResult", "backend_identity", "check_orders", "column_map", "degradations",
           "embed", "export_run", "load", "manifest", "plan", "retry_failed", "rounds", "run", "run_id_of", "sample_pool",
           "selection_frame", "subsets_from_plan", "which_picks"]
