"""Turn a model's selection answer into display ids, or say plainly why it cannot be used.

The parser never invents picks: an answer that names ids outside ``1..n``, repeats an id, names
fewer or more than ``k`` ids, or names none is rejected with a message written for a curator.

What is accepted, tried in this order:

1. JSON (the whole answer, a fenced ```json block, or the first JSON object inside prose):
   ``{"picks": [{"id": 3, "reason": "..."}]}``, ``{"picks": [3, 7]}``, ``{"ids": [...]}``,
   ``{"selected": [...]}`` (also ``selection``, ``chosen``, ``choices``, ``answer``), a bare list
   ``[3, 7]`` or ``[{"id": 3}, ...]``. Extra keys are ignored. An id may be ``3``, ``3.0``, ``"3"``
   or ``"[3]"``; ``3.5``, ``true`` or ``"three"`` are rejected.
2. Truncated JSON (the answer was cut off by ``max_tokens``): the complete ``{"id": ..}`` objects
   are salvaged only when exactly ``k`` of them are present, all valid; otherwise it is rejected as
   cut off. A truncated plain list (``{"picks": [3, 7``) is always rejected.
3. Bracketed ids anywhere: ``[3, 7]``, ``[3] [7]``, ``[3], [7]``, ``I pick [3] and [7] because``.
   Every bracket group that holds only numbers counts, so ``[3] is better than [5]`` names two
   ids; with ``k = 1`` that is rejected rather than guessed. A line ``[3]: reason`` keeps the reason.
   Markdown links ``[1](https://...)`` are not ids.
4. A bare list of numbers as the whole answer: ``3, 7`` or ``Answer: 3``.
5. Numbers right after the words instruction(s), candidate(s), id(s), option(s) or ``#``:
   ``Instructions 3 and 7``, ``#3``. Other numbers in prose ("the top 2") are never read as ids.

Before all of that, an answer holding more ``### Instruction`` blocks than ``k`` is rejected: the
model repeated the candidate list (and any example ids in the prompt) instead of choosing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_PICK_KEYS = ("picks", "ids", "selected", "selection", "chosen", "choices", "answer", "identifiers")
_ID_KEYS = ("id", "identifier", "index", "candidate", "number")
_REASON_KEYS = ("reason", "why", "rationale", "explanation")

_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_NUM = r"-?\d+(?:\.\d+)?"
_ITEM = r"[\"']?" + _NUM + r"[\"']?"
_SEP = r"(?:\s*(?:,|and|&)\s*|\s+)"  # a separator is required, so digit runs never backtrack
# "(?!\()": a markdown link such as [1](https://...) is a footnote, not a pick.
_BRACKET_GROUP = re.compile(r"\[\s*(" + _ITEM + r"(?:(?:\s*,\s*|\s+)" + _ITEM + r")*)\s*,?\s*\](?!\()")
_BARE_LIST = re.compile(
    r"^\s*(?:(?:ids?|picks?|answer|selected|selection)\s*:\s*)?"
    r"(" + _NUM + r"(?:" + _SEP + _NUM + r")*)\s*\.?\s*$",
    re.IGNORECASE,
)
_KEYWORD_IDS = re.compile(
    r"(?:\b(?:instructions?|candidates?|ids?|options?)\b\s*(?:#|no\.?|number)?\s*:?\s*|#\s*)"
    r"(" + _NUM + r"(?:\s*(?:,|and|&)\s*#?\s*" + _NUM + r")*)",
    re.IGNORECASE,
)
_REASON_LINE = re.compile(r"^\s*(?:[-*]|\d+[.)])?\s*\[\s*(\d+)\s*\]\s*[:\-–—]\s*(.+?)\s*$", re.MULTILINE)
_PICKS_OPENING = re.compile(r"\{\s*\"(?:" + "|".join(_PICK_KEYS) + r")\"\s*:", re.IGNORECASE)
_REPEAT_MARK = re.compile(r"#{2,}\s*Instruction\s*:", re.IGNORECASE)


@dataclass
class ParsedAnswer:
    """The outcome of parsing one answer: usable picks, or the reason it is unusable."""

    ok: bool
    picks: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)
    error: str | None = None


class _Unusable(Exception):
    """Internal: the answer cannot be used; the message is the curator-facing reason."""


def parse_answer(text: str, *, n: int, k: int) -> ParsedAnswer:
    """Read the display ids (1..n) a model picked from one subset.

    Args:
        text: The raw answer text.
        n: How many candidates the subset listed (ids run from 1 to n).
        k: How many picks the prompt asked for.

    Returns:
        ParsedAnswer with ``ok=True``, the picks in the model's order and any reasons; or
        ``ok=False``, no picks, and ``error`` saying what was wrong.
    """
    try:
        items = _extract(text or "", k=k)
        picks, reasons = _validate(items, n=n, k=k)
    except _Unusable as exc:
        return ParsedAnswer(ok=False, error=str(exc))
    return ParsedAnswer(ok=True, picks=picks, reasons=reasons)


def repair_message(parsed: ParsedAnswer, *, n: int, k: int) -> str:
    """Write the follow-up user message that asks the model to fix an unusable answer.

    Args:
        parsed: The failed parse (``ok=False``).
        n: How many candidates the subset listed.
        k: How many picks were asked for.

    Returns:
        A message naming the problem and restating the expected answer.
    """
    if parsed.ok:
        raise ValueError("repair_message needs a failed ParsedAnswer; this one is usable")
    ids = "id" if k == 1 else f"{k} different ids"
    return (
        f"Your answer could not be used: {parsed.error}. "
        f"Choose exactly {ids} from the candidates [1] to [{n}] above. "
        "Answer in the format asked for, for example "
        '{"picks": [{"id": <id>, "reason": "<one sentence>"}]} or a list such as [<id>], '
        "and do not repeat the candidates."
    )


# --- extraction ------------------------------------------------------------------------------


def _extract(text: str, *, k: int) -> list[tuple[Any, str | None]]:
    """Find the (raw id, reason) items in an answer, trying the accepted forms in order."""
    stripped = text.strip()
    if not stripped:
        raise _Unusable("the answer is empty; the model returned no text")
    repeats = len(_REPEAT_MARK.findall(stripped))
    if repeats >= 2 and repeats > k:
        raise _Unusable("the model repeated the candidate list instead of choosing")
    found = _from_json(stripped)
    if found is not None:
        return found
    for finder in (_from_brackets, _from_bare_list, _from_keywords):
        items = finder(stripped)
        if items:
            return items
    raise _Unusable(f"found no candidate ids in the answer; expected {_k_ids(k)} such as [3]")


def _json_candidates(text: str) -> list[str]:
    """Texts that may hold the JSON answer: fenced blocks first, then the whole answer."""
    return [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]


def _from_json(text: str) -> list[tuple[Any, str | None]] | None:
    """Items from a JSON answer; None when the answer holds no JSON answer at all."""
    decoder = json.JSONDecoder()
    for chunk in _json_candidates(text):
        try:
            return _items_from_value(json.loads(chunk))
        except ValueError:
            pass
        for match in re.finditer(r"\{", chunk):
            try:
                value, _ = decoder.raw_decode(chunk, match.start())
            except ValueError:
                continue
            if isinstance(value, dict) and _find_picks(value) is not None:
                return _items_from_value(value)
    for chunk in _json_candidates(text):
        if _PICKS_OPENING.search(chunk):
            return _salvage_truncated(chunk)
    return _single_pick_object(text)


def _single_pick_object(text: str) -> list[tuple[Any, str | None]] | None:
    """A lone pick object inside prose ('My choice: {"id": 3, "reason": ...}'), for k = 1."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and _dict_id(value) is not None:
            return [(_dict_id(value), _dict_reason(value))]
    return None


def _find_picks(value: dict, depth: int = 0) -> Any | None:
    """The value under the first known picks key, searching nested objects two levels deep."""
    lowered = {str(key).lower(): val for key, val in value.items()}
    for key in _PICK_KEYS:
        if key in lowered:
            return lowered[key]
    if depth < 2:
        for val in value.values():
            if isinstance(val, dict) and (found := _find_picks(val, depth + 1)) is not None:
                return found
    return None


def _items_from_value(value: Any) -> list[tuple[Any, str | None]]:
    """Items from decoded JSON: a picks object, a list, or a single id."""
    if isinstance(value, dict):
        picks = _find_picks(value)
        if picks is None:
            if _dict_id(value) is not None:
                return [(_dict_id(value), _dict_reason(value))]
            keys = ", ".join(sorted(map(str, value))) or "none"
            raise _Unusable(f'the JSON answer has no "picks" list (its keys: {keys})')
        return _attach_reasons(_items_from_value(picks), value)
    if isinstance(value, list):
        return [_item(entry) for entry in value]
    if isinstance(value, str) and not _is_id_like(value):
        return _from_brackets(value) or _from_bare_list(value)
    return [(value, None)]


def _item(entry: Any) -> tuple[Any, str | None]:
    """One list entry as (raw id, reason): a number, a string, a one-element list or an object."""
    if isinstance(entry, dict):
        raw = _dict_id(entry)
        if raw is None:
            keys = ", ".join(sorted(map(str, entry))) or "none"
            raise _Unusable(f'a pick in the JSON answer has no "id" (its keys: {keys})')
        return raw, _dict_reason(entry)
    if isinstance(entry, list) and len(entry) == 1:
        return entry[0], None
    return entry, None


def _dict_id(entry: dict) -> Any | None:
    """The id of a pick object under any accepted key."""
    lowered = {str(key).lower(): val for key, val in entry.items()}
    return next((lowered[key] for key in _ID_KEYS if key in lowered), None)


def _dict_reason(entry: dict) -> str | None:
    """The reason of a pick object as text (objects and lists are kept as compact JSON)."""
    lowered = {str(key).lower(): val for key, val in entry.items()}
    reason = next((lowered[key] for key in _REASON_KEYS if key in lowered), None)
    if reason is None or isinstance(reason, str):
        return reason.strip() if isinstance(reason, str) else None
    return json.dumps(reason, ensure_ascii=False)


def _attach_reasons(items: list[tuple[Any, str | None]], value: dict) -> list[tuple[Any, str | None]]:
    """Fill reasons from a sibling "reasons" mapping ({"3": "..."}) or parallel list."""
    reasons = {str(key).lower(): val for key, val in value.items()}.get("reasons")
    if isinstance(reasons, list) and len(reasons) == len(items):
        return [(raw, why or (str(r) if r else None)) for (raw, why), r in zip(items, reasons, strict=True)]
    if isinstance(reasons, dict):
        return [(raw, why or _lookup_reason(reasons, raw)) for raw, why in items]
    return items


def _lookup_reason(reasons: dict, raw: Any) -> str | None:
    """A reason keyed by the id in any of its spellings ("3", "[3]")."""
    for key, val in reasons.items():
        if str(key).strip("[] ") == str(raw).strip("[] ") and isinstance(val, str):
            return val
    return None


def _salvage_truncated(chunk: str) -> list[tuple[Any, str | None]]:
    """Complete pick objects from cut-off JSON, or raise when the answer was cut short."""
    decoder = json.JSONDecoder()
    start = chunk.find("[")
    items: list[tuple[Any, str | None]] = []
    for match in re.finditer(r"\{", chunk[start + 1 :] if start >= 0 else ""):
        try:
            value, _ = decoder.raw_decode(chunk, start + 1 + match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and _dict_id(value) is not None:
            items.append((_dict_id(value), _dict_reason(value)))
    if not items:
        raise _Unusable("the JSON answer is cut off before any complete pick; raise max_tokens")
    return [("__truncated__", None)] + items


def _from_brackets(text: str) -> list[tuple[Any, str | None]]:
    """Ids from every bracket group holding only numbers, with reasons from "[3]: why" lines."""
    items: list[tuple[Any, str | None]] = []
    for group in _BRACKET_GROUP.finditer(text):
        items.extend((raw, None) for raw in re.findall(_NUM, group.group(1)))
    reasons = {m.group(1): m.group(2) for m in _REASON_LINE.finditer(text)}
    return [(raw, reasons.get(raw)) for raw, _ in items]


def _from_bare_list(text: str) -> list[tuple[Any, str | None]]:
    """Ids when the whole answer is only numbers: "3, 7" or "Answer: 3"."""
    match = _BARE_LIST.match(text)
    return [(raw, None) for raw in re.findall(_NUM, match.group(1))] if match else []


def _from_keywords(text: str) -> list[tuple[Any, str | None]]:
    """Ids written after instruction(s)/candidate(s)/id(s)/option(s) or '#'."""
    items: list[tuple[Any, str | None]] = []
    for match in _KEYWORD_IDS.finditer(text):
        items.extend((raw, None) for raw in re.findall(_NUM, match.group(1)))
    return items


# --- validation ------------------------------------------------------------------------------


def _validate(items: list[tuple[Any, str | None]], *, n: int, k: int) -> tuple[list[int], dict[int, str]]:
    """Check the extracted ids against 1..n, uniqueness and k; return picks and reasons."""
    truncated = bool(items) and items[0][0] == "__truncated__"
    items = items[1:] if truncated else items
    if truncated and len(items) != k:
        raise _Unusable(f"the JSON answer is cut off after {len(items)} complete pick(s) of {k}; raise max_tokens")
    if not items:
        raise _Unusable(f"the answer names no ids; expected {_k_ids(k)} between [1] and [{n}]")
    picks = [_to_id(raw) for raw, _ in items]
    for pick in picks:
        if pick < 1:
            raise _Unusable(f"named id {pick} but ids start at [1] (the subset has {n} candidates)")
        if pick > n:
            raise _Unusable(f"named id {pick} but the subset has {n} candidates ([1] to [{n}])")
    seen: set[int] = set()
    for pick in picks:
        if pick in seen:
            raise _Unusable(f"named id {pick} more than once; each pick must be a different candidate")
        seen.add(pick)
    if len(picks) != k:
        named = ", ".join(map(str, picks))
        raise _Unusable(f"named {_k_ids(len(picks))} ({named}) but exactly {k} {'was' if k == 1 else 'were'} asked for")
    reasons = {pick: why for pick, (_, why) in zip(picks, items, strict=True) if why}
    return picks, reasons


def _to_id(raw: Any) -> int:
    """One raw id (int, integral float, "3", "[3]", "#3") as an int, or raise."""
    if isinstance(raw, bool):
        raise _Unusable(f"named {str(raw).lower()} where a candidate id was expected")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        if raw.is_integer():
            return int(raw)
        raise _Unusable(f"named id {raw}, which is not a whole number")
    if isinstance(raw, str) and _is_id_like(raw):
        return _to_id(float(raw.strip().strip("[]#").strip()))
    shown = json.dumps(raw, ensure_ascii=False) if not isinstance(raw, str) else repr(raw)
    raise _Unusable(f"named {shown[:60]} where a candidate id such as 3 was expected")


def _is_id_like(raw: str) -> bool:
    """True for strings like "3", " [3] ", "#3", "3.0"."""
    return re.fullmatch(r"\s*\[?\s*#?\s*" + _NUM + r"\s*\]?\s*", raw) is not None


def _k_ids(k: int) -> str:
    """ "1 id" / "3 ids"."""
    return f"{k} id" if k == 1 else f"{k} ids"
