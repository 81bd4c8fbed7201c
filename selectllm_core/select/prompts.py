"""Selection prompt templates: presets, placeholders, rendering, validation, answer schemas.

A template is plain text. Placeholders are `{name}` with a lower-case identifier; any other brace (for
example the JSON `{"picks": ...}` in an answer format) is literal text, so no escaping is needed.

| placeholder    | value                                                                    |
| -------------- | ------------------------------------------------------------------------ |
| `{candidates}` | required: the subset, listed `[1]` .. `[n]` with `### Instruction:` / `### Input:` blocks |
| `{n}`          | number of candidates in the subset                                       |
| `{k}`          | number of instructions to pick                                           |
| `{example1}`   | an example answer, `[1, .., k]` (the paper's)                           |
| `{example2}`   | a second example answer, `[k+1, .., 2k]`                                 |
| `{domain}`     | the domain focus given with --domain (required by the domain preset)    |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from selectllm_core.errors import PromptError

PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
KNOWN = ("candidates", "n", "k", "example1", "example2", "domain")

_PAPER_INTRO = (
    "The following are {n} unannotated examples of instructions that describe a task, "
    "each indicated by a number identifier [].\n\n{candidates}"
)
_PAPER_TASK = (
    "Examine the provided list of {n} instructions, each uniquely identified by a number in brackets []. "
    "Your task is to select {k} instructions that will be annotated by human annotators for model fine-tuning. "
    "Look for instructions that are clear and relevant, exhibit a high level of complexity and detail, "
    "represent a diverse range of scenarios and contexts, offer significant instructional value and potential "
    "learning gain, and present unique challenges and specificity. These selected instructions should ideally "
    "be the most beneficial for model fine-tuning after being annotated by human annotators."
)
_PAPER_ANSWER = (
    " Present your selections using the format []. e.g., {example1} or {example2}.\n\n"
    "The most impactful {k} instructions (only identifiers) are:"
)
_JSON_ANSWER = (
    "\n\nAnswer with JSON only, in exactly this form, with exactly {k} picks and a one-sentence reason for each:\n"
    '{"picks": [{"id": <number of the instruction>, "reason": "<why it is worth annotating>"}]}'
)
_LOW_TOXICITY = (
    " Do not select instructions that ask for, or would lead to, hateful, harassing, sexual, violent, "
    "dangerous or otherwise harmful content; prefer safe, constructive instructions."
)
_DOMAIN = " Prefer instructions about {domain}; among those, apply the criteria above."


@dataclass(frozen=True)
class Preset:
    """A named template and the answer format it asks for ("ids" or "json")."""

    name: str
    title: str
    template: str
    answer_format: str
    description: str


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("default", "Studio default (picks with reasons)", _PAPER_INTRO + _PAPER_TASK + _JSON_ANSWER, "json",
               "The paper's criteria; the model names each pick and says why, as JSON."),
        Preset("paper", "SelectLLM paper (ids only)", _PAPER_INTRO + _PAPER_TASK + _PAPER_ANSWER, "ids",
               "The paper's prompt verbatim; the answer is a list of ids, so picks carry no reason."),
        Preset("low-toxicity", "Low toxicity", _PAPER_INTRO + _PAPER_TASK + _LOW_TOXICITY + _JSON_ANSWER, "json",
               "The default, told to pass over instructions that invite harmful content."),
        Preset("domain", "Domain focus", _PAPER_INTRO + _PAPER_TASK + _DOMAIN + _JSON_ANSWER, "json",
               "The default, told to prefer one domain (set it with --domain)."),
    )
}


def placeholders(template: str) -> list[str]:
    """Placeholder names in order of appearance."""
    return PLACEHOLDER.findall(template)


def validate(template: str, *, domain: str = "") -> list[str]:
    """Problems with a template, each a sentence saying how to fix it (empty when valid)."""
    found = placeholders(template)
    problems = [
        f"Unknown placeholder {{{name}}}: use one of " + ", ".join(f"{{{k}}}" for k in KNOWN) + "."
        for name in dict.fromkeys(found) if name not in KNOWN
    ]
    if "candidates" not in found:
        problems.append("The template never shows the instructions: add {candidates} where they should go.")
    if found.count("candidates") > 1:
        problems.append("{candidates} appears more than once: keep a single one.")
    if "k" not in found and "example1" not in found:
        problems.append("The template never says how many to pick: add {k}.")
    if "domain" in found and not domain.strip():
        problems.append("The template uses {domain} but no domain is set: give one (for example --domain medicine).")
    return problems


def check(template: str, *, domain: str = "") -> None:
    """Raise PromptError listing every problem of the template."""
    problems = validate(template, domain=domain)
    if problems:
        raise PromptError("The prompt template is not usable:\n- " + "\n- ".join(problems))


def format_candidates(candidates: list[tuple[str, str]]) -> str:
    """List candidates as the paper does: `[i]`, then the instruction and, when present, the input."""
    parts = []
    for i, (instruction, input_) in enumerate(candidates, start=1):
        block = f"[{i}]\n\n### Instruction:\n {instruction}\n\n"
        if input_:
            block += f"### Input:\n {input_}\n\n"
        parts.append(block)
    return "".join(parts)


def render(template: str, candidates: list[tuple[str, str]], *, k: int, domain: str = "") -> str:
    """Fill a template for one subset.

    Args:
        template: template text (validated here).
        candidates: (instruction, input) pairs in the order shown to the model.
        k: number of instructions to pick.
        domain: value of {domain}.

    Returns:
        The prompt text.
    """
    check(template, domain=domain)
    values = {
        "candidates": format_candidates(candidates),
        "n": str(len(candidates)),
        "k": str(k),
        "example1": str(list(range(1, k + 1))),
        "example2": str(list(range(k + 1, 2 * k + 1))),
        "domain": domain,
    }
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def answer_schema(*, n: int, k: int, answer_format: str, max_reason: int = 200) -> dict:
    """JSON schema that constrains an answer to k ids from 1..n (with a reason each for "json").

    Ids are bounded with `enum` (llama.cpp grammars ignore integer minimum/maximum), reasons with maxLength
    (small models otherwise ramble until the answer is cut off), and the root is an object, as OpenAI's
    structured outputs require.
    """
    ids = {"type": "integer", "enum": list(range(1, n + 1))}
    if answer_format == "ids":
        picks = {"type": "array", "items": ids, "minItems": k, "maxItems": k}
        return {"type": "object", "properties": {"picks": picks}, "required": ["picks"]}
    pick = {
        "type": "object",
        "properties": {"id": ids, "reason": {"type": "string", "maxLength": max_reason}},
        "required": ["id", "reason"],
    }
    return {
        "type": "object",
        "properties": {"picks": {"type": "array", "items": pick, "minItems": k, "maxItems": k}},
        "required": ["picks"],
    }


# The answer begun for the model in a score pass, by answer format: its next token is the first id.
SCORE_PREFILL = {"ids": "[", "json": '{"picks": [{"id": '}


def score_prefill(answer_format: str) -> str:
    """What a score pass begins the answer with, so the next token the model would write is the first id."""
    return SCORE_PREFILL.get(answer_format, SCORE_PREFILL["json"])


def load_template(spec: str) -> tuple[str, str]:
    """Resolve a preset name or a template file to (template text, answer format).

    A file's answer format is "json" when it mentions "picks", else "ids".
    """
    if spec in PRESETS:
        return PRESETS[spec].template, PRESETS[spec].answer_format
    path = Path(spec)
    if not path.is_file():
        raise PromptError(
            f"No preset or file named {spec!r}. Presets: {', '.join(PRESETS)}; or pass a path to a template file."
        )
    text = path.read_text(encoding="utf-8")
    return text, ("json" if '"picks"' in text else "ids")


def estimate_tokens(text: str) -> int:
    """Rough token count for remote models (about four characters a token in English)."""
    return max(1, round(len(text) / 4))
