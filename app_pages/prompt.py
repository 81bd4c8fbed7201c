"""Prompt: pick a preset or edit the template, see it rendered on a real subset, and what the run will cost."""

from __future__ import annotations

import streamlit as st

from app_pages import _map
from app_pages import _shared as shared
from app_pages._map import PARAMS
from selectllm_core.llm.prices import money
from selectllm_core.select.prompts import KNOWN, PRESETS, validate
from selectllm_core.studio import prompt_view, rounds_view
from selectllm_core.studio.text import md_escape

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
local, model = ss.backend["kind"] == "local", ss.backend["model"]
c1, c2 = st.columns([1, 3])
price = shared.price()
if local:
    c1.caption("The bundled local model costs nothing: calls are priced at $0.")
elif model:
    c1.caption(f"Price of **{md_escape(model)}**, per million tokens: "
               + (f"{price.source}." if price else "none known yet: set it, or the cost stays unknown."))
    p_in = c1.number_input("Prompt tokens ($ per million)", 0.0, 1e4, price.input_per_mtok if price else 0.0,
                           0.05, format="%.3f", key="prompt_price_in")
    p_out = c1.number_input("Answer tokens ($ per million)", 0.0, 1e4, price.output_per_mtok if price else 0.0,
                            0.05, format="%.3f", key="prompt_price_out")
    if c1.button("Save this price", key="prompt_price_save", help="Saved in the workspace's price table; every "
                 "call recorded from now on is costed with it (`selectllm prices` shows the table)."):
        shared.store().set_price(model, p_in, p_out)
        st.rerun()
with st.spinner("Counting tokens…"):
    est = shared.spend_estimate(build.plan, budget)
m1, m2, m3, m4 = c2.columns(4)
m1.metric("LLM calls to send", f"{est.to_send:,}", help=f"{est.calls:,} subsets, {est.cached:,} of them answered "
          "by the response cache (no call, no cost)")
m2.metric("Prompt tokens" + ("" if est.prompt_exact else " (estimate)"), f"{est.prompt_tokens:,}")
m3.metric("Answer tokens (estimate)", f"{est.completion_tokens:,}")
m4.metric("Cost (estimate)", money(est.cost) if est.price else "unknown",
          help=f"At most {money(est.cost_bound)} if every answer used its full length." if est.price else
          "No price is known for this model: set one on the left.")
c2.caption(("Prompt tokens are counted with the local model's tokenizer (the chat template adds a few per call). "
            if est.prompt_exact else "Remote model: tokens are estimated at about 4 characters a token. ")
           + "Answer tokens are estimated; a repair retry per unusable answer adds to both. `selectllm plan` "
           "prints the same numbers.")
if budget.next_rounds:  # a tournament: say so before the curator pays for it
    c2.info(md_escape(rounds_view.plan_summary(budget)) + ". " + rounds_view.ROUNDS_HELP
            + " Later rounds are estimated from round 1.", icon=":material/account_tree:")
    c2.dataframe(rounds_view.plan_table(budget, est), hide_index=True, key="prompt_rounds")

st.subheader("Rendered on a real subset")
c1, c2 = st.columns([1, 3])
index = c1.number_input(f"Subset (0 to {len(prompts) - 1})", 0, len(prompts) - 1, 0, key="prompt_subset")
c2.caption(md_escape(budget.rounds[0].describe_round() if budget.next_rounds else budget.describe())
           + (" (round 1)" if budget.next_rounds else "") + ". Candidates appear in the shuffled order the model will see.")
st.code(prompts[int(index)], language=None, wrap_lines=True)
