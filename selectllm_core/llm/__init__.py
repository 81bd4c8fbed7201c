"""Chat backends: the protocol, local llama.cpp models in a child process (the bundled one and the registry of
`llm.models`), and any OpenAI-compatible server.

`make_backend` is the one factory: a kind and its settings give a ChatBackend.

Heavy libraries (llama_cpp, openai) are imported only when a backend first needs them.
"""

from __future__ import annotations

from selectllm_core.errors import ConfigError
from selectllm_core.llm.base import (
    BACKEND_KINDS,
    BUNDLED_MODEL_FILE,
    LOCAL_N_CTX,
    ChatBackend,
    ChatResult,
    ScoreResult,
    backend_identity,
    bundled_model_path,
    can_score,
    score_answer_tokens,
    top_logprobs_of,
)
from selectllm_core.llm.local import LocalLlamaBackend
from selectllm_core.llm.models import DEFAULT_LOCAL_MODEL, LOCAL_MODELS, LocalModel, local_model
from selectllm_core.llm.openai_compat import OpenAICompatibleBackend


def make_backend(
    kind: str = "local",
    *,
    model: str | None = None,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    api_key: str | None = None,
    concurrency: int | None = None,
    timeout: float = 120.0,
    context_window: int | None = None,
) -> ChatBackend:
    """Build a chat backend from plain settings (CLI flags, app sidebar, run manifests).

    Args:
        kind: "local" (in-process llama.cpp) or "openai" (any OpenAI-compatible server).
        model: For "local", an installed local model's name (`selectllm models`: "smollm2-135m", the bundled
            default, or "qwen2.5-coder-1.5b") or a GGUF file path (None: the bundled SmolLM2); for "openai",
            the model name.
        base_url: For "openai", the server URL such as ``http://127.0.0.1:8080/v1`` (None: OpenAI).
        api_key_env: Name of the environment variable holding the key ("openai" only).
        api_key: The key itself, overriding the environment ("openai" only).
        concurrency: Calls in flight (None: 1 for local, 8 for openai).
        timeout: Seconds to wait for one answer ("openai" only).
        context_window: The model's context in tokens (subsets are capped to fit); for "local" it is n_ctx.

    Returns:
        A ChatBackend; nothing is loaded or contacted until the first call.

    Raises:
        ConfigError: settings that cannot work, or a named local model that is not installed (the message
            gives the install command).
    """
    if kind == "local":
        if concurrency not in (None, 1):
            raise ConfigError("the local backend runs one call at a time; leave concurrency at 1")
        entry = LOCAL_MODELS.get(model or DEFAULT_LOCAL_MODEL)
        n_ctx = context_window or (entry.n_ctx if entry else LOCAL_N_CTX)
        return LocalLlamaBackend(model_path=model, n_ctx=n_ctx)
    if kind == "openai":
        if not model:
            raise ConfigError("an OpenAI-compatible backend needs a model name, e.g. gpt-4o-mini")
        backend = OpenAICompatibleBackend(
            base_url=base_url,
            model=model,
            api_key=api_key,
            api_key_env=api_key_env,
            timeout=timeout,
            concurrency=concurrency or 8,
        )
        backend.context_window = context_window
        return backend
    raise ConfigError(f"unknown backend kind {kind!r}; choose one of: {', '.join(BACKEND_KINDS)}")


__all__ = [
    "ChatBackend",
    "ChatResult",
    "ScoreResult",
    "LocalLlamaBackend",
    "BUNDLED_MODEL_FILE",
    "LOCAL_N_CTX",
    "LOCAL_MODELS",
    "LocalModel",
    "DEFAULT_LOCAL_MODEL",
    "OpenAICompatibleBackend",
    "backend_identity",
    "bundled_model_path",
    "can_score",
    "score_answer_tokens",
    "local_model",
    "make_backend",
    "top_logprobs_of",
]
