"""The studio's exception hierarchy.

Every message says what is wrong and how to fix it. The CLI and the app turn these into
user-facing messages at their boundary; nothing inside the core prints or exits.
"""

from __future__ import annotations


class SelectLLMError(Exception):
    """Base class for every error the studio raises on purpose."""


class PoolError(SelectLLMError):
    """The pool file cannot be read or mapped (bad format, missing column, bad rows)."""


class ConfigError(SelectLLMError):
    """Parameters that cannot work together (budget, subset size, clusters, paths)."""


class PromptError(SelectLLMError):
    """A prompt template is invalid (unknown or missing placeholder)."""


class BackendError(SelectLLMError):
    """The chat backend cannot be reached or refuses the request."""


class BackendUnavailable(BackendError):
    """The backend is not installed or configured (missing model file, missing key)."""


class PromptTooLong(BackendError):
    """The prompt and its answer do not fit the model's context window (smaller subsets or inputs fix it)."""


class ModelCrashed(BackendError):
    """The process running the local model died during a call (the next call starts a new one)."""


class CapabilityError(BackendError):
    """The backend lacks a capability a method needs (for example token probabilities)."""


class AnswerError(SelectLLMError):
    """A model answer cannot be used as picks (kept raw; never turned into fake picks)."""

    def __init__(self, message: str, raw: str | None = None, *, halts: bool = False) -> None:
        super().__init__(message)
        self.raw = raw  # the answer itself, for the curator to read
        self.halts = halts  # no other answer from this backend would do better: the run should stop


class WorkspaceError(SelectLLMError):
    """The workspace file cannot be opened or written, or holds something it should not."""


class UnknownPoolError(WorkspaceError):
    """No pool with this id in the workspace (a page may be showing one that another workspace holds)."""


class UnknownRunError(WorkspaceError):
    """No run with this id in the workspace (a run the studio has started but not yet recorded, for one)."""


class ExportError(SelectLLMError):
    """An export cannot be written (nothing to export, unwritable path)."""


class SpendCapReached(BackendError):
    """The next call could pass the run's spending cap: the run stops before it, and resumes with a higher cap."""


class RunStopped(BackendError):
    """The curator stopped the run: no new call starts, finished work is kept, and resuming continues it."""
