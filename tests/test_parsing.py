"""Answer parsing: a table of realistic model answers and what the curator should get from each."""

from __future__ import annotations

import time

import pytest

from selectllm_core.select.parsing import ParsedAnswer, parse_answer, repair_message

REPEATED_PROMPT = """[1]
### Instruction: Write a poem about the sea.

### Response:
[2]
### Instruction: Explain photosynthesis to a child.

### Response:
[3]
### Instruction: List three uses of baking soda.

### Response:"""

# (answer, n, k, expected picks, expected reasons or None)
GOOD = [
    pytest.param(
        '{"picks": [{"id": 3, "reason": "asks for reasoning"}]}',
        14,
        1,
        [3],
        {3: "asks for reasoning"},
        id="json-object-one-pick",
    ),
    pytest.param(
        '{"picks": [{"id": 7, "reason": "rare topic"}, {"id": 2, "reason": "long input"}]}',
        14,
        2,
        [7, 2],
        {7: "rare topic", 2: "long input"},
        id="json-keeps-model-order",
    ),
    pytest.param('{"picks": [3, 7]}', 14, 2, [3, 7], {}, id="json-int-list"),
    pytest.param('{"ids": [5, 1]}', 5, 2, [5, 1], {}, id="json-ids-key"),
    pytest.param('{"selected": [4]}', 5, 1, [4], {}, id="json-selected-key"),
    pytest.param(
        '{"Picks": [{"ID": 2, "Reason": "x", "score": 9}], "confidence": 0.4, "notes": "n/a"}',
        5,
        1,
        [2],
        {2: "x"},
        id="json-extra-keys-and-case",
    ),
    pytest.param(
        'Sure! Here is my selection:\n```json\n{"picks": [{"id": 4, "reason": "multi-step"}]}\n```\n'
        "Let me know if you need more.",
        14,
        1,
        [4],
        {4: "multi-step"},
        id="fenced-json-with-prose",
    ),
    pytest.param('My answer is {"picks": [{"id": 9}]} as requested.', 14, 1, [9], {}, id="json-inside-prose"),
    pytest.param("[3, 7]", 14, 2, [3, 7], {}, id="paper-list"),
    pytest.param("[3] [7]", 14, 2, [3, 7], {}, id="separate-brackets"),
    pytest.param("[3], [7]", 14, 2, [3, 7], {}, id="separate-brackets-commas"),
    pytest.param("I pick [3] and [7] because both need multi-step reasoning.", 14, 2, [3, 7], {}, id="prose-bracketed"),
    pytest.param('["3", "7"]', 14, 2, [3, 7], {}, id="string-ids"),
    pytest.param('{"picks": [{"id": "[3]", "reason": "r"}]}', 14, 1, [3], {3: "r"}, id="bracketed-string-id"),
    pytest.param('{"picks": [3.0, 5.0]}', 14, 2, [3, 5], {}, id="integral-floats"),
    pytest.param("Instructions 3 and 7 are the most informative.", 14, 2, [3, 7], {}, id="prose-keyword"),
    pytest.param("#12", 14, 1, [12], {}, id="hash-id"),
    pytest.param("3, 7", 14, 2, [3, 7], {}, id="bare-numbers"),
    pytest.param(
        '{"picks": [{"id": 3, "reason": {"novelty": "high", "note": "better than [5]"}}]}',
        14,
        1,
        [3],
        {3: '{"novelty": "high", "note": "better than [5]"}'},
        id="nested-reason-object",
    ),
    pytest.param(
        '[{"id": 6, "reason": "covers [2] and [4] too"}]',
        14,
        1,
        [6],
        {6: "covers [2] and [4] too"},
        id="json-list-of-objects-brackets-in-reason",
    ),
    pytest.param(
        "[3]: needs code\n[11]: long context", 14, 2, [3, 11], {3: "needs code", 11: "long context"}, id="reason-lines"
    ),
    pytest.param(
        '{"picks": [{"id": 3, "reason": "good"}, {"id": 8, "reason": "rare"}, {"id": 1, "rea',
        14,
        2,
        [3, 8],
        {3: "good", 8: "rare"},
        id="truncated-json-salvaged",
    ),
    pytest.param('{"answer": {"picks": [2]}}', 5, 1, [2], {}, id="nested-picks"),
    pytest.param(
        'Final choice: {"id": 4, "reason": "unusual domain"}', 5, 1, [4], {4: "unusual domain"}, id="lone-pick-object"
    ),
    pytest.param("As the docs say [1](https://example.org), I pick [4].", 14, 1, [4], {}, id="markdown-link-ignored"),
    pytest.param(
        "1. [3] - needs math\n2. [7] - rare domain",
        14,
        2,
        [3, 7],
        {3: "needs math", 7: "rare domain"},
        id="numbered-reason-lines",
    ),
    pytest.param(
        '{"picks": [3, 7], "reasons": {"3": "a", "7": "b"}}', 14, 2, [3, 7], {3: "a", 7: "b"}, id="sibling-reasons-map"
    ),
]

# (answer, n, k, substring of the error)
BAD = [
    pytest.param("", 14, 1, "empty", id="empty"),
    pytest.param("   \n ", 14, 1, "empty", id="whitespace"),
    pytest.param('{"picks": [17]}', 14, 1, "named id 17 but the subset has 14 candidates", id="out-of-range"),
    pytest.param("[3, 15]", 14, 2, "named id 15 but the subset has 14 candidates", id="list-out-of-range"),
    pytest.param('{"picks": [0]}', 14, 1, "named id 0 but ids start at [1]", id="zero"),
    pytest.param("[-2, 4]", 14, 2, "named id -2 but ids start at [1]", id="negative"),
    pytest.param("[3, 3]", 14, 2, "named id 3 more than once", id="duplicate"),
    pytest.param('{"picks": [{"id": 5}, {"id": "5"}]}', 14, 2, "named id 5 more than once", id="duplicate-mixed-types"),
    pytest.param("[3]", 14, 2, "named 1 id (3) but exactly 2 were asked for", id="too-few"),
    pytest.param("[1, 2, 3]", 14, 2, "named 3 ids (1, 2, 3) but exactly 2 were asked for", id="too-many"),
    pytest.param(
        "I pick [3] because it is better than [5].", 14, 1, "named 2 ids (3, 5)", id="prose-ambiguous-not-guessed"
    ),
    pytest.param("These are all good instructions, hard to choose.", 14, 1, "found no candidate ids", id="no-ids"),
    pytest.param("The top 2 are the best.", 14, 2, "found no candidate ids", id="bare-number-in-prose-ignored"),
    pytest.param('{"picks": []}', 14, 1, "names no ids", id="empty-picks"),
    pytest.param('{"choice": "first"}', 14, 1, 'has no "picks" list (its keys: choice)', id="json-wrong-key"),
    pytest.param('{"picks": [{"reason": "good one"}]}', 14, 1, 'has no "id"', id="pick-without-id"),
    pytest.param('{"picks": [3.5]}', 14, 1, "not a whole number", id="fractional-float"),
    pytest.param('{"picks": [true]}', 14, 1, "named true where a candidate id was expected", id="bool-id"),
    pytest.param('{"picks": ["three"]}', 14, 1, "named 'three' where a candidate id", id="word-id"),
    pytest.param('{"picks": [{"id": "three"}]}', 14, 1, "'three' where a candidate id", id="word-id-object"),
    pytest.param(
        '{"picks": [{"id": 3, "reason": "good"}, {"id": 8, "rea',
        14,
        2,
        "cut off after 1 complete pick(s) of 2",
        id="truncated-too-few",
    ),
    pytest.param('{"picks": [{"id": 3, "rea', 14, 1, "cut off before any complete pick", id="truncated-nothing"),
    pytest.param('{"picks": [3, 7', 14, 2, "cut off before any complete pick", id="truncated-int-list"),
    pytest.param(REPEATED_PROMPT, 3, 1, "repeated the candidate list instead of choosing", id="repeated-prompt"),
    pytest.param(
        REPEATED_PROMPT + '\n{"picks": [{"id": 3, "reason": "..."}]}',
        3,
        1,
        "repeated the candidate list",
        id="repeated-prompt-with-echoed-example",
    ),
]


@pytest.mark.parametrize(("answer", "n", "k", "picks", "reasons"), GOOD)
def test_usable_answers(answer: str, n: int, k: int, picks: list[int], reasons: dict[int, str]) -> None:
    parsed = parse_answer(answer, n=n, k=k)
    assert parsed.error is None
    assert parsed.ok
    assert parsed.picks == picks
    assert parsed.reasons == reasons


@pytest.mark.parametrize(("answer", "n", "k", "message"), BAD)
def test_unusable_answers_say_why(answer: str, n: int, k: int, message: str) -> None:
    parsed = parse_answer(answer, n=n, k=k)
    assert not parsed.ok
    assert parsed.picks == [] and parsed.reasons == {}, "a failed answer must never carry picks"
    assert message in (parsed.error or "")


def test_quoting_own_picks_is_not_a_repeated_prompt() -> None:
    answer = "[2]\n### Instruction: Explain photosynthesis.\n\n[3]\n### Instruction: List uses of soda."
    parsed = parse_answer(answer, n=14, k=2)
    assert parsed.ok and parsed.picks == [2, 3]


def test_repair_message_names_problem_and_range() -> None:
    parsed = parse_answer("[17]", n=14, k=1)
    message = repair_message(parsed, n=14, k=1)
    assert "named id 17 but the subset has 14 candidates" in message
    assert "[1] to [14]" in message
    with pytest.raises(ValueError):
        repair_message(ParsedAnswer(ok=True, picks=[1]), n=14, k=1)


def test_long_digit_runs_do_not_backtrack() -> None:
    hostile = "[" + "1" * 5000 + " x" + " 12" * 2000 + " and"
    start = time.perf_counter()
    parsed = parse_answer(hostile, n=14, k=1)
    assert time.perf_counter() - start < 1.0
    assert not parsed.ok
