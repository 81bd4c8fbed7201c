"""Greedy sampling under a grammar that checks only the token it is about to choose.

llama-cpp-python puts the grammar in its sampler chain before the greedy choice, so at every answer step the
grammar is matched against each token of the vocabulary (152k for Qwen2.5). llama.cpp's own sampler
(`common_sampler_sample`) does the cheaper thing this module does: take the most likely token, ask the grammar
about that one token, and only when the grammar rejects it apply the grammar to the whole vocabulary and take the
most likely token it allows. For greedy decoding the answer is the same token by token: the most likely allowed
token is the most likely token whenever that one is allowed.

Only the model's worker process uses it; llama_cpp is imported when a sampler is made.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

GRAMMAR_MODES = ("lazy", "full")  # the worker's way of holding an answer to its schema; the first is the default

_TOKEN_DATA = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)


class LazyGrammarGreedy:
    """A llama.cpp sampler: greedy, with the grammar asked about the chosen token first.

    Args:
        model: llama-cpp-python's LlamaModel (for its vocabulary).
        grammar: The LlamaGrammar the answer must match.
    """

    def __init__(self, model: Any, grammar: Any) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self.grammar = llama_cpp.llama_sampler_init_grammar(
            model.vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
        if not self.grammar:
            raise ValueError("llama.cpp could not compile the answer's grammar")
        self.checks = 0  # tokens asked about one at a time
        self.full = 0  # steps where the chosen token was rejected and the whole vocabulary was masked
        self._one = (llama_cpp.llama_token_data * 1)()
        self._one_array = llama_cpp.llama_token_data_array(data=self._one, size=1, selected=-1, sorted=False)
        # the callbacks must outlive the sampler, so they are kept on it
        self._iface = llama_cpp.llama_sampler_i(
            name=llama_cpp.llama_sampler_i_name(0),
            accept=llama_cpp.llama_sampler_i_accept(self._accept),
            apply=llama_cpp.llama_sampler_i_apply(self._apply),
            reset=llama_cpp.llama_sampler_i_reset(self._reset),
            clone=llama_cpp.llama_sampler_i_clone(0),
            free=llama_cpp.llama_sampler_i_free(0))
        self.sampler = llama_cpp.llama_sampler(iface=ctypes.pointer(self._iface), ctx=None)

    def get_sampler(self) -> Any:
        """The pointer llama.cpp's sampler chain holds (the interface of llama-cpp-python's CustomSampler)."""
        return ctypes.pointer(self.sampler)

    def _allowed(self, token: int) -> bool:
        self.checks += 1
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        self._llama.llama_sampler_apply(self.grammar, ctypes.byref(self._one_array))
        return self._one[0].logit != -np.inf

    def _apply(self, _sampler: Any, cur_p: Any) -> None:
        cur = cur_p.contents
        data = np.frombuffer((self._llama.llama_token_data * cur.size).from_address(
            ctypes.addressof(cur.data.contents)), dtype=_TOKEN_DATA)
        best = int(np.argmax(data["logit"]))
        if not self._allowed(int(data["id"][best])):
            self.full += 1
            self._llama.llama_sampler_apply(self.grammar, cur_p)  # rejected tokens' logits become -inf
            best = int(np.argmax(data["logit"]))
        cur.selected = best

    def _accept(self, _sampler: Any, token: int) -> None:
        self._llama.llama_sampler_accept(self.grammar, token)

    def _reset(self, _sampler: Any) -> None:
        self._llama.llama_sampler_reset(self.grammar)

    def close(self) -> None:
        """Free the grammar sampler (called as the chain that held this sampler is freed)."""
        if self.grammar:
            self._llama.llama_sampler_free(self.grammar)
            self.grammar = None


def lazy_greedy_chain(model: Any, grammar: Any) -> Any:
    """llama-cpp-python's LlamaSampler holding only the lazy grammar's greedy choice."""
    import llama_cpp
    from llama_cpp import _internals

    chain = _internals.LlamaSampler()
    lazy = LazyGrammarGreedy(model, grammar)
    chain.custom_samplers.append((llama_cpp.llama_sampler_chain_n(chain.sampler), lazy))
    llama_cpp.llama_sampler_chain_add(chain.sampler, lazy.get_sampler())
    # the grammar is freed with the chain (which removes, and does not free, the sampler it was lent)
    chain._exit_stack.callback(lazy.close)
    chain.lazy = lazy
    return chain
