"""Templates: presets are valid, placeholders validated, rendering in the paper's format."""

from __future__ import annotations

import json

import pytest

from selectllm_core.errors import PromptError
from selectllm_core.select.prompts import PRESETS, answer_schema, check, load_template, render, validate

CANDIDATES = [("Name three birds.", ""), ("Summarise this.", "A long text."), ("Say hi {k}.", "")]


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_are_valid_and_render(name: str) -> None:
    text = render(PRESETS[name].template, CANDIDATES, k=1, domain="biology")
    assert "[1]\n\n### Instruction:\n Name three birds." in text
    assert "### Input:\n A long text." in text
    leftover = [p for p in ("{n}", "{k}", "{candidates}", "{domain}", "{example1}") if p in text.replace("Say hi {k}.", "")]
    assert leftover == []


def test_paper_prompt_is_verbatim() -> None:
    text = render(PRESETS["paper"].template, CANDIDATES, k=2)
    assert text.startswith("The following are 3 unannotated examples of instructions that describe a task")
    assert "e.g., [1, 2] or [3, 4]." in text
    assert text.endswith("The most impactful 2 instructions (only identifiers) are:")


def test_candidate_text_is_not_treated_as_placeholder() -> None:
    text = render(PRESETS["default"].template, CANDIDATES, k=1)
    assert "Say hi {k}." in text


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("Pick {k} of these: {candidats}", "Unknown placeholder {candidats}"),
        ("Pick {k} of these.", "add {candidates}"),
        ("{candidates} {candidates} pick {k}", "more than once"),
        ("{candidates} pick some", "add {k}"),
        ("{candidates} pick {k} about {domain}", "no domain is set"),
    ],
)
def test_template_problems_are_reported(template: str, problem: str) -> None:
    assert any(problem in p for p in validate(template))
    with pytest.raises(PromptError, match="not usable"):
        check(template)


def test_json_braces_are_literal() -> None:
    assert validate('{candidates}\nPick {k}. Answer {"picks": [{"id": 1}]}') == []


def test_answer_schema_bounds_ids() -> None:
    schema = answer_schema(n=4, k=2, answer_format="json")
    item = schema["properties"]["picks"]["items"]
    assert item["properties"]["id"]["enum"] == [1, 2, 3, 4]
    assert schema["properties"]["picks"]["minItems"] == 2 == schema["properties"]["picks"]["maxItems"]
    assert answer_schema(n=3, k=1, answer_format="ids")["properties"]["picks"]["items"]["enum"] == [1, 2, 3]
    assert item["properties"]["reason"]["maxLength"] == 200
    json.dumps(schema)


def test_load_template_from_file(tmp_path) -> None:  # noqa: ANN001
    f = tmp_path / "t.txt"
    f.write_text('{candidates}\nPick {k}. JSON: {"picks": []}', encoding="utf-8")
    assert load_template(str(f))[1] == "json"
    with pytest.raises(PromptError, match="No preset or file"):
        load_template("nonexistent-preset")
