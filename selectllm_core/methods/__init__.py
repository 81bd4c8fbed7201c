"""Selection methods, SelectLLM included, each stored as a run and comparable with `selectllm_core.runs.compare`.

    from selectllm_core import methods
    result = methods.run_method("coreset", "pool.jsonl", budget=300, seed=0)
    result.frame()                       # the ranked selection with scores and reasons
    methods.METHODS["alpagasus"].note    # what the UI should say next to the method
    methods.METHODS["deita"].params      # its parameters: name, type, default, help, bounds

Every method takes a pool and a budget and returns exactly `budget` rows, ranked, with a score and/or a reason
per row; docs/methods.md gives the formulas and the two cases that may return fewer (AlpaGasus's threshold,
and rows a model failed to rate, both flagged in `MethodResult.flags`). The registry is `methods/registry.py`.
"""

from __future__ import annotations

from selectllm_core.methods.base import Context, Method, MethodResult, Param, RunPlan, Selection, row_lengths
from selectllm_core.methods.registry import METHODS, get, repeat_command, run_id, run_method, run_scores, setting

__all__ = ["METHODS", "Context", "Method", "MethodResult", "Param", "RunPlan", "Selection", "get", "repeat_command",
           "row_lengths", "run_id", "run_method", "run_scores", "setting"]
