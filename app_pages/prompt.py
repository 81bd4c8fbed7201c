"""Prompt: pick a preset or edit the template, see it rendered on a real subset, and what the run will cost."""

from __future__ import annotations

import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from app_pages._map import PARAMS
from selectllm_core.select.prompts import KNOWN, PRESETS, validate
from selectllm_core.studio import prompt_view

ss = st.session_state
st.title("Prompt")
prompt = ss.prompt
presets = [*PRESETS, "custom"]
titles = {name: p.title for name, p in PRESETS.items()} | {"custom": "Custom (edited)"}


def on_preset() -> None:
    """A preset replaces the template ("custom" keeps the current text)."""
    if ss.prompt_preset in PRESETS:
        ss.prompt.update(preset=ss.prompt_preset, template=PRESETS[ss.prompt_preset].template)
        ss.prompt_template = ss.prompt["template"]


def on_edit() -> None:
    """An edit makes the template custom, unless it is a preset's text again."""
    ss.prompt["template"] = ss.prompt_template
    ss.prompt["preset"] = prompt_view.preset_name(ss.prompt_template)
    ss.prompt_preset = ss.prompt["preset"]


c1, c2 = st.columns([1, 2])
preset = c1.selectbox("Preset", presets, presets.index(prompt["preset"]), format_func=titles.get,
                      key="prompt_preset", on_change=on_preset)
if preset in PRESETS:
    c2.caption(PRESETS[preset].description)
if preset == "domain" or "{domain}" in prompt["template"]:
    prompt["domain"] = c2.text_input("Domain focus (fills {domain})", prompt["domain"], key="prompt_domain",
                                     placeholder="for example: medicine, law, Python programming",
                                     help=PARAMS["domain"].help)
template = st.text_area("Template", prompt["template"], height=260, key="prompt_template", on_change=on_edit,
                        help="Placeholders: " + ", ".join(f"{{{k}}}" for k in KNOWN) + ". Other braces are text.")
cut = st.columns(3)[0].number_input(
    "Cut each input to (characters, 0 = never)", 0, 100_000, int(ss.run_config["max_input_chars"] or 0), step=500,
    key="prompt_cut", help=PARAMS["max_input_chars"].help + " A cut input ends with [...]; the instruction is never cut.")
ss.run_config["max_input_chars"] = int(cut) or None
problems = validate(template, domain=prompt["domain"])
for problem in problems:
    st.error(problem, icon=":material/error:")
if problems:
    st.stop()

build, budget = _map.build_map(), shared.budget_plan()
cfg, frame = ss.run_config, shared.pool(ss.pool_id).frame
prompts = prompt_view.subset_prompts(frame, build.plan.subsets, build.plan.cluster_of, template=template,
                                     k=budget.picks_per_subset, domain=prompt["domain"], seed=cfg["seed"],
                                     shuffle=cfg["shuffle"], max_input_chars=cfg["max_input_chars"])
if not prompts:
    st.error("No subset has enough rows to choose from: lower the budget or raise the subset size on the Map page.")
    st.stop()

st.subheader("Cost of the whole run")
local = ss.backend["kind"] == "local"
c1, c2 = st.columns([1, 3])
prompt["price_per_1k"] = c1.number_input("Price per 1k tokens ($)", 0.0, 1000.0, float(prompt["price_per_1k"]),
                                         step=0.0005, format="%.4f", key="prompt_price")
counter = shared.local_backend().count_tokens if local else None
with st.spinner("Counting tokens…"):
    est = prompt_view.estimate_cost(prompts, k=budget.picks_per_subset, answer_format=shared.answer_format(),
                                    price_per_1k=prompt["price_per_1k"], count_tokens=counter)
m1, m2, m3, m4 = c2.columns(4)
m1.metric("LLM calls", f"{est.calls:,}")
m2.metric("Prompt tokens" + ("" if est.prompt_exact else " (estimate)"), f"{est.prompt_tokens:,}")
m3.metric("Answer tokens (estimate)", f"{est.completion_tokens:,}")
m4.metric("Cost (estimate)", f"${est.cost:,.4f}")
if est.prompt_exact:
    st.caption("Prompt tokens are counted exactly with the local model's tokenizer (the chat template adds a few "
               "per call); the local model itself costs nothing, so the price shows what these tokens would cost "
               "on a paid API. Answer tokens are estimated; repair retries of unusable answers add to both.")
else:
    st.caption("Remote model: tokens are estimated at about 4 characters a token. Check your provider's tokenizer "
               "and price; repair retries of unusable answers add to the total.")

st.subheader("Rendered on a real subset")
c1, c2 = st.columns([1, 3])
index = c1.number_input(f"Subset (0 to {len(prompts) - 1})", 0, len(prompts) - 1, 0, key="prompt_subset")
c2.caption(f"{budget.describe()}. Candidates appear in the shuffled order the model will see.")
st.code(prompts[int(index)], language=None, wrap_lines=True)
