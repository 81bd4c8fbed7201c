"""The local model runs in a child process, so a native crash is an error here, never the end of the app or a run.

llama.cpp is native code: a build for instructions the CPU cannot run dies with SIGILL, and an out-of-memory
kill or a bug dies with SIGKILL or SIGSEGV. Run in-process, any of these takes the Streamlit server (and every
curator's session) or the CLI run down with it. Here the model lives in `python -m selectllm_core.llm.worker`,
which answers one JSON request per line on a private pipe. When it dies mid-call the parent raises ModelCrashed
with what the signal means and how to fix it; the run records the subset as an error (so resuming calls it
again), and the next call starts a fresh process.

Protocol: the parent writes {"op": ..., ...} lines to the child's stdin; the child answers each with one line on
a dedicated descriptor (its stdout is pointed at stderr, so native logging cannot corrupt the pipe):
{"ok": result} or {"error": kind, "message": text}.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from selectllm_core.errors import BackendError, BackendUnavailable, CapabilityError, ModelCrashed, PromptTooLong
from selectllm_core.llm.lazy_grammar import GRAMMAR_MODES, lazy_greedy_chain

_ERRORS: dict[str, type[BackendError]] = {
    "unavailable": BackendUnavailable, "context": PromptTooLong, "capability": CapabilityError, "failed": BackendError,
}
REBUILD_HINT = ("Rebuild it for this machine with `bash scripts/install.sh` (it tests which instruction sets "
                "run and enables only those), or choose the flags yourself with "
                "SELECTLLM_LLAMA_CMAKE_ARGS=\"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON\"")


def crash_message(returncode: int | None, stderr_tail: str) -> str:
    """What a dead model process means, in words a curator can act on."""
    if returncode is not None and returncode < 0:
        sig = -returncode
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else f"signal {sig}"
        if sig == signal.SIGILL:
            return ("The local model process died with SIGILL (illegal instruction): llama-cpp-python was built "
                    "with CPU instructions this machine cannot execute (a virtual machine can report instruction "
                    f"sets such as AVX-512 or AMX that it cannot run). {REBUILD_HINT}. The run is kept: run it "
                    "again to resume.")
        if sig == signal.SIGKILL:
            return ("The local model process was killed (SIGKILL), often by the system running out of memory. "
                    "Close other programs or use a smaller model, then run again: finished subsets are kept.")
        return (f"The local model process died with {name}. Run again to resume (finished subsets are kept); "
                f"if it keeps happening, reinstall with `bash scripts/install.sh`.{_tail(stderr_tail)}")
    return (f"The local model process exited unexpectedly (exit code {returncode}). Run again to resume; "
            f"if it keeps happening, reinstall with `bash scripts/install.sh`.{_tail(stderr_tail)}")


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()][-3:]
    return f" Its last output: {' | '.join(lines)[-400:]}" if lines else ""


class ModelProcess:
    """One child process holding one model; calls are serialised (a llama.cpp context is not thread-safe).

    Args:
        config: Llama settings (model_path, n_ctx, n_threads, seed, vocab_only).
    """

    def __init__(self, config: dict) -> None:
        self.config = config
        self._proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (tests kill it to check crash handling)."""
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; a dead child raises ModelCrashed, and the next call restarts it."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            line = json.dumps({"op": op, **args}) + "\n"
            try:
                self._proc.stdin.write(line.encode())
                self._proc.stdin.flush()
                answer = self._proc.stdout.readline()
            except (BrokenPipeError, OSError):
                answer = b""
            if not answer:
                raise self._died()
        return _result(json.loads(answer))

    def _start(self) -> None:
        """Start the child and wait until its model is loaded (its load errors come back as errors here)."""
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the child's stderr, kept while it lives
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "selectllm_core.llm.worker", json.dumps(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env,
            start_new_session=True)  # a Ctrl-C in the terminal reaches the run, which stops the child itself
        ready = self._proc.stdout.readline()
        if not ready:
            raise self._died()
        try:
            _result(json.loads(ready))
        except BackendError:
            self.close()
            raise

    def _died(self) -> ModelCrashed:
        """The error for a child that is gone; its process is reaped so the next call starts anew."""
        proc, self._proc = self._proc, None
        code = proc.wait() if proc else None
        tail = ""
        if self._log is not None:
            self._log.seek(0)
            tail = self._log.read().decode("utf-8", "replace")[-2000:]
            self._log.close()
            self._log = None
        return ModelCrashed(crash_message(code, tail))

    def close(self) -> None:
        """Stop the child (it also exits by itself when this process goes away and its stdin closes)."""
        proc, self._proc = self._proc, None
        if proc and proc.poll() is None:
            proc.kill()
        if proc:
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _result(message: dict) -> Any:
    """A reply's result, or the error it carries as the matching exception."""
    if "error" in message:
        raise _ERRORS.get(message["error"], BackendError)(message["message"])
    return message["ok"]


# -- the child side ---------------------------------------------------------------------------------------------


def _load(config: dict) -> Any:
    """The Llama object for this process, or a BackendUnavailable reply-worthy error."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise BackendUnavailable("the local backend needs llama-cpp-python; run `bash scripts/install.sh`") from None
    path = Path(config["model_path"])
    if not path.is_file():
        raise BackendUnavailable(f"model file not found: {path}; pass the path of a GGUF file")
    threads = config.get("n_threads") or max(1, os.cpu_count() or 1)
    try:
        if config.get("vocab_only"):
            return Llama(model_path=str(path), vocab_only=True, verbose=False)
        # flash attention and a large batch make prompt evaluation (most of a selection call) markedly faster
        cls = _lazy_grammar_llama(Llama) if config.get("grammar", GRAMMAR_MODES[0]) == GRAMMAR_MODES[0] else Llama
        return cls(model_path=str(path), n_ctx=config["n_ctx"], n_threads=threads, n_threads_batch=threads,
                   n_batch=1024, flash_attn=True, seed=config.get("seed", 0), verbose=False)
    except (ValueError, RuntimeError) as exc:
        raise BackendUnavailable(f"llama.cpp could not load {path.name} ({exc}); check that it is a GGUF "
                                 "model file") from None


_NEUTRAL = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0, "mirostat_mode": 0}


def _lazy_grammar_llama(base: type) -> type:
    """Llama whose greedy answers under a grammar check only the chosen token (`lazy_grammar`), as llama.cpp's own
    sampler does, instead of the whole vocabulary at every step; the tokens chosen are the same."""
    class LazyGrammarLlama(base):
        def _init_sampler(self, **kwargs: Any) -> Any:
            grammar = kwargs.get("grammar")
            plain = all(kwargs.get(k, v) == v for k, v in _NEUTRAL.items())
            if grammar is None or kwargs.get("temp") != 0.0 or kwargs.get("logits_processor") or not plain:
                return super()._init_sampler(**kwargs)
            chain = lazy_greedy_chain(self._model, grammar)
            self.lazy_grammar = chain.lazy  # read by `_chat` for the reply
            return chain

    return LazyGrammarLlama


class _EngineTimer:
    """llama.cpp's own time for one request: its counters are reset here and read by `add_to`."""

    def __init__(self, llm: Any) -> None:
        import llama_cpp  # the worker process has it loaded already

        self._llama = llama_cpp
        # llama.cpp's context of the loaded model (None: a build that does not expose its timings)
        self._ctx = getattr(getattr(llm, "_ctx", None), "ctx", None) if hasattr(
            llama_cpp, "llama_perf_context") else None
        if self._ctx is not None:
            llama_cpp.llama_perf_context_reset(self._ctx)

    def add_to(self, reply: dict) -> None:
        """Put the timings in the reply, named as llama.cpp's server names them: reading the prompt (the tokens a
        cached prefix did not cover) and generating."""
        if self._ctx is None:
            return
        perf = self._llama.llama_perf_context(self._ctx)
        reply["timings"] = {"prompt_n": int(perf.n_p_eval), "prompt_ms": float(perf.t_p_eval_ms),
                            "predicted_n": int(perf.n_eval), "predicted_ms": float(perf.t_eval_ms)}


def _chat(llm: Any, req: dict, n_ctx: int) -> dict:
    timer = _EngineTimer(llm)
    llm.lazy_grammar = None
    try:
        response = llm.create_chat_completion(messages=req["messages"], **req["kwargs"])
    except ValueError as exc:
        if "exceed context window" in str(exc):
            raise PromptTooLong(f"the prompt does not fit the local model's context of {n_ctx} tokens ({exc}); "
                                "use smaller subsets (--subset-size) or shorter inputs (--max-input-chars)") from None
        raise BackendError(f"the local model failed: {exc}") from None
    timer.add_to(response)
    lazy = llm.lazy_grammar
    if lazy is not None:  # how often the chosen token needed the grammar over the whole vocabulary
        response["grammar_sampling"] = {"checked": lazy.checks, "masked": lazy.full}
    return response


def _top_logprobs(llm: Any, req: dict, n_ctx: int) -> dict[str, float]:
    """Log probabilities of the most likely first answer tokens, most likely first."""
    captured: list[Any] = []

    def capture(_input_ids: Any, logits: Any) -> Any:
        # The first call sees the raw logits of the first answer token, in vocabulary order.
        if not captured:
            captured.append(np.array(logits, dtype=np.float64))
        return logits

    _chat(llm, {"messages": req["messages"],
                "kwargs": {"max_tokens": 1, "temperature": 0.0, "logits_processor": [capture]}}, n_ctx)
    if not captured:
        raise CapabilityError("llama.cpp returned no next-token scores for this model")
    logits = captured[0]
    logprobs = logits - (logits.max() + np.log(np.exp(logits - logits.max()).sum()))
    out: dict[str, float] = {}
    for token_id in np.argsort(-logprobs)[: int(req["n"])]:
        text = llm.detokenize([int(token_id)]).decode("utf-8", errors="replace")
        out.setdefault(text, float(logprobs[token_id]))
    return out


def _chat_prompt(llm: Any, messages: list[dict]) -> str:
    """The conversation as the model's own chat template renders it, ready for the assistant's answer."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = (getattr(llm, "metadata", None) or {}).get("tokenizer.chat_template")
    if not template:
        raise CapabilityError("this model file carries no chat template, so its answers cannot be scored; "
                              "use a chat (instruct) GGUF model")

    def text(token: int) -> str:
        return llm._model.token_get_text(token) if token != -1 else ""

    formatter = Jinja2ChatFormatter(template=template, eos_token=text(llm.token_eos()),
                                    bos_token=text(llm.token_bos()), stop_token_ids=[llm.token_eos()])
    return formatter(messages=messages).prompt


def _score_ids(llm: Any, req: dict, n_ctx: int) -> dict:
    """Log probabilities of each id as the first answer, after the assistant's answer is begun with `prefill`.

    One forward pass over the prompt, plus one token for each id that shares its first tokens with another
    (with digit-by-digit tokenizers, "1" of "10"..). An id that is a prefix of another (1 of 10) keeps only the
    probability that the answer stops there. The probabilities are normalised over the ids asked.
    """
    timer = _EngineTimer(llm)
    head = _chat_prompt(llm, req["messages"]) + req["prefill"]
    ids = [str(i) for i in req["ids"]]
    seqs = {i: tuple(llm.tokenize((head + i).encode("utf-8"), add_bos=False, special=True)) for i in ids}
    first = min(len(s) for s in seqs.values())
    common = next((j for j in range(first) if len({s[j] for s in seqs.values()}) > 1), first)
    if any(len(s) == common for s in seqs.values()) and len(set(seqs.values())) < len(ids):
        raise CapabilityError("two answer ids tokenize the same for this model, so they cannot be told apart")
    if max(len(s) for s in seqs.values()) >= n_ctx:
        raise PromptTooLong(f"the prompt does not fit the local model's context of {n_ctx} tokens; use smaller "
                            "subsets (--subset-size) or shorter inputs (--max-input-chars)")
    scored: dict[tuple, np.ndarray] = {}

    def next_logprobs(prefix: tuple) -> np.ndarray:
        if prefix not in scored:
            captured: list[np.ndarray] = []

            def capture(_input_ids: Any, logits: Any) -> Any:
                if not captured:
                    captured.append(np.array(logits, dtype=np.float64))
                return logits

            # llama-cpp-python reuses the tokens it has already read, so a longer prefix costs its new tokens only
            llm.create_completion(prompt=list(prefix), max_tokens=1, temperature=0.0, logits_processor=[capture])
            if not captured:
                raise CapabilityError("llama.cpp returned no next-token scores for this model")
            z = captured[0]
            scored[prefix] = z - (z.max() + np.log(np.exp(z - z.max()).sum()))
        return scored[prefix]

    out: dict[str, float] = {}
    for i, seq in seqs.items():
        total = 0.0
        for j in range(common, len(seq)):
            total += float(next_logprobs(seq[:j])[seq[j]])
        # the ids whose tokens continue past this one (10..19 after 1): the answer must stop here to be this id
        longer = {s[len(seq)] for s in seqs.values() if len(s) > len(seq) and s[: len(seq)] == seq}
        if longer:
            rest = next_logprobs(seq)
            total += float(np.log(max(1e-12, 1.0 - float(np.exp(rest[sorted(longer)]).sum()))))
        out[i] = total
    norm = float(np.logaddexp.reduce(list(out.values())))
    result = {"logprobs": {i: v - norm for i, v in out.items()}, "prompt_tokens": len(seqs[ids[0]]),
              "mass": float(np.exp(norm))}
    timer.add_to(result)
    return result


def _handle(llm: Any, req: dict, n_ctx: int) -> Any:
    op = req["op"]
    if op == "chat":
        return _chat(llm, req, n_ctx)
    if op == "tokenize":
        return [len(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False)) for t in req["texts"]]
    if op == "top_logprobs":
        return _top_logprobs(llm, req, n_ctx)
    if op == "score_ids":
        return _score_ids(llm, req, n_ctx)
    raise BackendError(f"unknown request {op!r}")


def _kind(exc: BackendError) -> str:
    for kind, cls in _ERRORS.items():
        if type(exc) is cls:
            return kind
    return "failed"


def main(argv: list[str]) -> int:
    """Serve requests until stdin closes (the parent went away or closed us)."""
    config = json.loads(argv[0])
    reply = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # native code printing to stdout must not corrupt the replies

    def send(message: dict) -> None:
        reply.write(json.dumps(message) + "\n")
        reply.flush()

    try:
        llm = _load(config)
    except BackendError as exc:
        send({"error": _kind(exc), "message": str(exc)})
        return 1
    send({"ok": "ready"})
    for line in sys.stdin:
        try:
            send({"ok": _handle(llm, json.loads(line), config.get("n_ctx", 0))})
        except BackendError as exc:
            send({"error": _kind(exc), "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 - the process boundary: every failure becomes a reply
            send({"error": "failed", "message": f"the local model failed: {type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
