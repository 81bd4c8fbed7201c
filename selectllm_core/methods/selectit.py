"""SelectIT (Liu et al., 2024, arXiv 2402.16705): uncertainty-aware self-reflection from rating-digit probabilities.

For each row, each of K rating prompts and each model, the model's next-token distribution after the prompt
gives the probabilities of the digits "1".."5". Then, as in the paper (docs/methods.md has the worked formulas):

- token level:    P'_k = P_k / sum_j P_j;  S_base = argmax_k P'_k;
                  S_token = S_base * (1 / (5 - 1)) * sum_k |P'_k - P'_{S_base}|
- sentence level: S_sent = mean(S_token over the K prompts) / (1 + alpha * std(S_token)),  alpha = 0.2, K = 5
                  (population std; prompts whose top tokens hold no digit are left out, at least one is needed)
- model level:    S_model = sum_m theta_m / sum_n theta_n * S_sent_m,  theta = parameter count of model m
                  (a row needs a sentence score from every model)

Digit tokens are found by text, for any tokenizer: each returned token is stripped of whitespace and of the
word-start markers "▁" (SentencePiece) and "Ġ"/"Ċ" (byte-level BPE); tokens that are then exactly "1".."5" add
their probability to that digit (so "4", " 4" and "▁4" all count as 4). Digits absent from the top tokens count
as 0. SelectIT rated (instruction, response) pairs; here the instruction alone is rated, as the pool has no
responses yet.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pandas as pd

from selectllm_core.llm import ChatBackend, top_logprobs_of
from selectllm_core.methods.base import Context, Selection, rank_desc
from selectllm_core.methods.rating import RowRating, batch_of, call_record, rate_pool, raw_by_row, workers_for
from selectllm_core.select.prompts import estimate_tokens
from selectllm_core.store import Store

LEVELS = 5
DIGITS = tuple(str(k) for k in range(1, LEVELS + 1))
_MARKERS = re.compile(r"[\s▁ĠĊ]")

# K = 5 phrasings of the rating request (the paper varies the prompt wording, K = 5), for instructions alone.
PHRASINGS = (
    "Rate how useful the following instruction would be for fine-tuning a language model, once a person writes "
    "a good response to it. Use a scale from 1 to 5, where 5 is the most useful.",
    "On a scale of 1 to 5, how clear, specific and instructive is the following task as training data for an AI "
    "assistant? 5 means excellent.",
    "Score the following instruction from 1 (not worth annotating) to 5 (very much worth annotating), by how much "
    "a model would learn from a good answer to it.",
    "Judge the quality of the following instruction as instruction-tuning data: give 1 for poor, 3 for average "
    "and 5 for excellent.",
    "Give the following instruction a score between 1 and 5 for its value in an instruction-tuning data set, "
    "considering clarity, complexity and usefulness.",
)
ANSWER = "Answer with a single digit from 1 to 5 and nothing else."


def render(phrasing: str, instruction: str, input_text: str = "") -> str:
    """One rating prompt: the phrasing, the instruction (and input), and the one-digit answer request."""
    block = f"\n\n### Input:\n{input_text}" if input_text else ""
    return f"{phrasing}\n\n### Instruction:\n{instruction}{block}\n\n{ANSWER}"


def prompt_text(params: dict) -> str:
    """The K rating prompts of a run, as stored with it."""
    return "\n---\n".join(f"{p}\n\n### Instruction:\n{{instruction}}\n\n{ANSWER}" for p in PHRASINGS[: params["phrasings"]])


def digit_probabilities(top_logprobs: dict[str, float]) -> np.ndarray:
    """P_1..P_5: summed probabilities of the tokens that read as each digit (not renormalised)."""
    probs = np.zeros(LEVELS)
    for token, logprob in top_logprobs.items():
        text = _MARKERS.sub("", token)
        if text in DIGITS:
            probs[int(text) - 1] += math.exp(logprob)
    return probs


def token_score(probs: np.ndarray) -> float | None:
    """S_token of one rating from P_1..P_5 (None when no digit has any probability)."""
    probs = np.asarray(probs, dtype=np.float64)
    total = probs.sum()
    if not total > 0:
        return None
    p = probs / total
    base = int(np.argmax(p))  # first maximum: ties go to the lower rating
    uncertainty = np.abs(p - p[base]).sum() / (LEVELS - 1)
    return (base + 1) * float(uncertainty)


def sentence_score(token_scores: list[float], *, alpha: float = 0.2) -> float:
    """S_sent = mean / (1 + alpha * population std) of the token scores of one row under K prompts."""
    values = np.asarray(token_scores, dtype=np.float64)
    return float(values.mean() / (1.0 + alpha * values.std()))


def model_score(sentence_scores: list[float], parameters: list[float]) -> float:
    """S_model = sum of sentence scores weighted by parameter count / total parameter count."""
    weights = np.asarray(parameters, dtype=np.float64)
    return float((weights / weights.sum()) @ np.asarray(sentence_scores, dtype=np.float64))


def row_score(entries: list[dict], *, n_models: int, parameters: list[float], alpha: float
              ) -> tuple[float | None, str]:
    """S_model of one row from its raw top-logprob entries, and a reason listing the ratings."""
    per_model: list[float] = []
    shown: list[str] = []
    for m in range(n_models):
        ratings = sorted(((e["prompt"], e["top_logprobs"]) for e in entries if e["model"] == m), key=lambda r: r[0])
        scores, bases = [], []
        for _j, top in ratings:
            probs = digit_probabilities(top)
            s = token_score(probs)
            if s is not None:
                scores.append(s)
                bases.append(str(int(np.argmax(probs)) + 1))
        if not scores:
            return None, f"model {m + 1} gave no digit probability for this row"
        per_model.append(sentence_score(scores, alpha=alpha))
        shown.append(",".join(bases))
    score = model_score(per_model, parameters)
    return score, f"SelectIT {score:.3f}; most likely rating per prompt: " + " | ".join(shown)


def rater(models: list[tuple[ChatBackend, float]], *, k: int, top_n: int):  # noqa: ANN201 - returns a RateRow
    """A function rating one row: K prompts x every model, one top-logprobs call each."""

    def rate(row: dict) -> RowRating:
        out = RowRating(row_id=row["id"])
        for m, (backend, _w) in enumerate(models):
            for j in range(k):
                text = render(PHRASINGS[j], row["instruction"], row["input"])
                t0 = time.perf_counter()
                top = top_logprobs_of(backend, [{"role": "user", "content": text}], n=top_n)
                out.raw.append({"model": m, "prompt": j, "top_logprobs": top})
                # top_logprobs reports no usage: count the prompt (exactly when the tokenizer is local)
                tokens = backend.count_tokens(text) or estimate_tokens(text)
                out.calls.append(call_record(prompt_tokens=tokens, completion_tokens=1,
                                             elapsed=time.perf_counter() - t0))
        for m in range(len(models)):
            if not any(digit_probabilities(e["top_logprobs"]).sum() > 0 for e in out.raw if e["model"] == m):
                out.error = f"model {m + 1}: no rating digit among the most likely first tokens of any prompt"
        return out

    return rate


def scores_from_raw(raw: dict[str, list[dict]], ids: list[str], *, parameters: list[float], alpha: float
                    ) -> tuple[np.ndarray, list[str]]:
    """S_model per pool row (NaN when unscored) and the reason per row."""
    scores, reasons = np.full(len(ids), np.nan), [""] * len(ids)
    for p, rid in enumerate(ids):
        if rid in raw:
            s, reasons[p] = row_score(raw[rid], n_models=len(parameters), parameters=parameters, alpha=alpha)
            scores[p] = np.nan if s is None else s
    return scores, reasons


def stored_scores(store: Store, run_id: str) -> pd.Series:
    """Every scored row's S_model in a stored SelectIT run (row id -> score)."""
    run = store.get_run(run_id)
    params = run["params"]
    raw = raw_by_row(store, run_id)
    ids = list(raw)
    scores, _ = scores_from_raw(raw, ids, parameters=params["model_parameters"], alpha=params["alpha"])
    return pd.Series(scores, index=ids).dropna()


def select_selectit(ctx: Context, *, alpha: float, phrasings: int, batch_size: int, top_n: int) -> Selection:
    """Rate every row with K prompt phrasings on every model; rank by S_model, best first; the first `budget`."""
    raw = rate_pool(ctx, rater(ctx.models, k=phrasings, top_n=top_n), batch_size=batch_size,
                    workers=workers_for(ctx.models))
    ids = ctx.frame["id"].tolist()
    parameters = [w for _b, w in ctx.models]
    scores, reasons = scores_from_raw(raw, ids, parameters=parameters, alpha=alpha)
    positions = [int(p) for p in rank_desc(scores)[: ctx.budget]]
    mass = [digit_probabilities(e["top_logprobs"]).sum() for entries in raw.values() for e in entries]
    scored = int(np.isfinite(scores).sum())
    flags = {"scored": scored, "unscored": len(ids) - scored,
             "mean_digit_mass": round(float(np.mean(mass)), 4) if mass else None}
    return Selection(positions=positions, scores=[float(scores[p]) for p in positions],
                     reasons=[reasons[p] for p in positions], flags=flags,
                     subset_of=batch_of(len(ids), batch_size), complete=scored == len(ids))
