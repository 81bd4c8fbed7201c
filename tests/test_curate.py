"""The curator's control over decisions: the history and undo, imports by id, and curator picks.

Runs are made at our seams (a scripted chat backend, the deterministic fake embedder) on 60 real Dolly rows:
6 subsets of 10 with 2 picks each for a budget of 9, one subset failing until the backend is healed, so the
selection holds model picks the budget left out, passed-over rows and a failed subset's rows.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import FakeEmbedder
from fakes import ScriptedBackend, first_k_json

from selectllm_core.cli import main
from selectllm_core.embed import EmbeddingCache
from selectllm_core.errors import ConfigError, WorkspaceError
from selectllm_core.pipeline import RunConfig, export_run, retry_failed, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store
from selectllm_core.studio import curate, review, run_view

REPO = Path(__file__).resolve().parent.parent


class FailOnce:
    """Garbage for the prompts holding one chosen instruction until `healed`; first-k JSON otherwise."""

    def __init__(self, marker: str) -> None:
        self.marker, self.healed = marker, False

    def __call__(self, prompt: str, n: int, k: int, attempt: int) -> str:
        return "I cannot choose." if self.marker in prompt and not self.healed else first_k_json(prompt, n, k, attempt)


@pytest.fixture
def made(tmp_path: Path) -> dict:
    """A finished run of 9 picks (one subset failed) in the test's workspace."""
    frame = pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True).head(60)
    script = FailOnce(frame["instruction"][7])
    backend, store = ScriptedBackend(script), Store()
    result = run(load_pool(frame, name="dolly 60"), RunConfig(budget=9, subset_size=10, picks_per_subset=2),
                 store=store, backend=backend, embedder=FakeEmbedder(), cache=EmbeddingCache())
    results = store.subset_results(result.run_id)
    failed = next(r["subset"] for r in results if r["status"] == "failed")
    return {"store": store, "run_id": result.run_id, "script": script, "backend": backend, "failed": failed,
            "picks": store.selection(result.run_id)["id"].tolist(), "tmp": tmp_path}


def _state(store: Store, run_id: str) -> dict[str, tuple[str, str]]:
    return {r.id: (r.decision, r.note) for r in store.selection(run_id).itertuples()}


# -- history and undo ----------------------------------------------------------------------------
def test_single_and_bulk_decisions_are_recorded_with_curator_before_and_after(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    assert store.set_decisions(run_id, {picks[0]: ("rejected", "off topic")}, curator="Ana") == 1
    assert store.accept_pending(run_id, curator="Bo") == 8
    assert store.set_decisions(run_id, {picks[0]: ("rejected", "off topic")}, curator="Ana") == 0, "no change"
    history = store.history(run_id)
    assert history["change_id"].nunique() == 2 and len(history) == 9
    single = history[history["action"] == "decide"].iloc[0]
    assert (single["row_id"], single["curator"], single["before_decision"], single["after_decision"],
            single["before_note"], single["after_note"]) == (picks[0], "Ana", "pending", "rejected", "", "off topic")
    bulk = history[history["action"] == "bulk"]
    assert set(bulk["row_id"]) == set(picks[1:]) and set(bulk["curator"]) == {"Bo"}
    assert set(bulk["before_decision"]) == {"pending"} and set(bulk["after_decision"]) == {"accepted"}
    assert bulk["at"].str.match(r"\d{4}-\d\d-\d\dT").all()


def test_undo_reverts_a_whole_bulk_change_and_is_itself_recorded(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    store.set_decisions(run_id, {picks[0]: ("rejected", "vague"), picks[1]: ("pending", "check")}, curator="Ana")
    before = _state(store, run_id)
    bulk = store.accept_pending(run_id, curator="Bo")
    assert bulk == 8 and set(d for d, _ in _state(store, run_id).values()) == {"accepted", "rejected"}
    change_id, help_text = curate.undo_offer(store, run_id)
    assert help_text.startswith("Undo: accepted 8 picks (Bo, ")
    assert store.undo_last(run_id, "Cy", change_id=change_id) == change_id
    assert _state(store, run_id) == before, "every row of the bulk change is back, notes included"
    history = store.history(run_id)
    undo = history[history["action"] == "undo"]
    assert len(undo) == 8 and set(undo["curator"]) == {"Cy"} and set(undo["undoes"]) == {change_id}
    assert set(history.loc[history["change_id"] == change_id, "undone_by"]) == {undo["change_id"].iloc[0]}
    # the next undo goes one change further back: the first, two-row decision
    assert curate.undo_offer(store, run_id)[1].startswith("Undo: rejected 1 pick, changed 2 notes (Ana, ")
    store.undo_last(run_id, "Cy")
    assert set(_state(store, run_id).values()) == {("pending", "")}
    assert store.undo_last(run_id, "Cy") is None
    assert curate.undo_offer(store, run_id) == (None, "Nothing left to undo: every change of this run has been "
                                                      "undone (see the history).")


def test_undo_refuses_when_another_change_came_after_the_one_shown(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    store.accept_pending(run_id, curator="Ana")
    shown, _ = curate.undo_offer(store, run_id)
    Store(store.path).set_decisions(run_id, {picks[3]: ("rejected", "")}, curator="Bo")  # another session
    with pytest.raises(WorkspaceError, match="Nothing was undone"):
        store.undo_last(run_id, "Ana", change_id=shown)
    assert _state(store, run_id)[picks[3]] == ("rejected", "") and _state(store, run_id)[picks[0]][0] == "accepted"


def test_review_saves_record_the_curator_and_keep_the_stale_edit_check(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    drawn = {r: ("pending", "") for r in picks}
    Store(store.path).set_decisions(run_id, {picks[0]: ("rejected", "dup")}, curator="Bo")
    skipped = review.save_edits(store, run_id, *review.bulk_edits(store, run_id, drawn, "accepted"), curator="Ana",
                                action="bulk")
    assert skipped == [(picks[0], "rejected", "dup")]
    last = store.last_change(run_id)
    assert len(last) == 8 and set(last["curator"]) == {"Ana"} and set(last["action"]) == {"bulk"}
    assert curate.describe_change(last).startswith("accepted 8 picks (Ana, ")
    store.set_decisions(run_id, {picks[1]: ("rejected", "")})
    assert "(unnamed, " in curate.undo_offer(store, run_id)[1], "an empty name is shown as (unnamed)"


def test_history_csv_and_changes_list_every_change(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    store.set_decisions(run_id, {picks[0]: ("rejected", "=HYPERLINK(\"x\")")}, curator="Ana")
    store.accept_pending(run_id)
    store.undo_last(run_id, "Ana")
    data = curate.history_csv(store, run_id)
    assert data.startswith(b"\xef\xbb\xbf")
    frame = pd.read_csv(pd.io.common.BytesIO(data), encoding="utf-8-sig", keep_default_na=False, dtype=str)
    assert len(frame) == 1 + 8 + 8 and frame.loc[0, "after_note"].startswith("'="), "formulas are neutralised"
    assert frame.loc[0, "instruction"] == store.selection(run_id).set_index("id").at[picks[0], "instruction"]
    assert set(frame["curator"]) == {"Ana", ""}, "the CSV holds names as recorded"
    changes = curate.history_changes(store, run_id)
    assert changes["what"].tolist() == ["undid change 2", "accepted 8 picks", "rejected 1 pick, changed 1 note"]
    assert changes["curator"].tolist() == ["Ana", "(unnamed)", "Ana"] and changes["undone"][1] == "by change 3"


# -- imports -------------------------------------------------------------------------------------
def _csv(rows: list[dict], bom: bool = True) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode("utf-8-sig" if bom else "utf-8")


def test_a_csv_with_bom_imports_decisions_notes_and_annotations_that_reach_the_export(made: dict) -> None:
    store, run_id, picks, tmp = made["store"], made["run_id"], made["picks"], made["tmp"]
    data = _csv([{"id": picks[0], "decision": "Accepted", "note": "", "response": "Fix the tube, then pump."},
                 {"id": picks[1], "decision": "rejected", "note": "too vague", "response": ""},
                 {"id": picks[2], "decision": "", "note": "", "response": "Nuts are legumes… kitniyot."}])
    plan = curate.plan_import(store, run_id, data, "done.csv")
    assert (plan.problems, plan.unknown, plan.fields) == ([], [], ["response"])
    assert plan.counts == {"accepted": 1, "rejected": 1, "pending": 0, "notes": 1, "annotations": 2, "unchanged": 0}
    assert plan.summary() == ("done.csv: 3 rows for picks of this run. Applying it accepts 1 pick, rejects 1 pick, "
                              "changes 1 note and stores 2 annotations (response).")
    assert curate.apply_import(store, run_id, plan, curator="Ana") == "Imported done.csv: 3 picks changed."
    sel = store.selection(run_id).set_index("id")
    assert sel.loc[picks[0], ["decision", "note", "response"]].tolist() == ["accepted", "", "Fix the tube, then pump."]
    assert sel.loc[picks[1], ["decision", "note"]].tolist() == ["rejected", "too vague"]
    assert pd.isna(sel.loc[picks[1], "response"]) and sel.loc[picks[2], "decision"] == "pending"
    last = store.last_change(run_id)
    assert set(last["action"]) == {"import"} and len(last) == 3 and set(last["curator"]) == {"Ana"}
    export_run(store, run_id, tmp / "out.jsonl", which="all")
    rows = {r["id"]: r for r in map(json.loads, (tmp / "out.jsonl").read_text().splitlines())}
    assert rows[picks[2]]["response"] == "Nuts are legumes… kitniyot." and rows[picks[2]]["origin"] == "model pick"


def test_an_import_is_undone_whole_annotations_included(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    data = "\n".join(json.dumps({"id": p, "decision": "accepted", "output": f"answer {i}"})
                     for i, p in enumerate(picks[:4])).encode()
    plan = curate.plan_import(store, run_id, data, "labels.jsonl")
    assert plan.counts["accepted"] == 4 and plan.counts["annotations"] == 4
    curate.apply_import(store, run_id, plan)
    stored = store.annotations(run_id)
    assert set(zip(stored["id"], stored["field"], stored["value"])) == {(p, "output", f"answer {i}")
                                                                        for i, p in enumerate(picks[:4])}
    store.undo_last(run_id)
    assert store.annotations(run_id).empty and set(store.selection(run_id)["decision"]) == {"pending"}
    assert "output" not in store.selection(run_id).columns


def test_one_unknown_id_stops_the_whole_import_unless_skipped(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    data = _csv([{"id": picks[0], "decision": "accepted"}, {"id": "not-a-pick", "decision": "rejected"},
                 {"id": picks[1], "decision": "rejected"}])
    plan = curate.plan_import(store, run_id, data, "mixed.csv")
    assert plan.unknown == ["not-a-pick"] and not plan.ready(skip_unknown=False) and plan.ready(skip_unknown=True)
    with pytest.raises(ConfigError, match=r"nothing was imported: 1 id of the file is not picks of this run: not-a"):
        curate.apply_import(store, run_id, plan)
    assert set(store.selection(run_id)["decision"]) == {"pending"} and store.history(run_id).empty
    with pytest.raises(WorkspaceError, match="Nothing was imported"):  # the store refuses on its own, too
        store.import_decisions(run_id, {picks[0]: ("accepted", None, {}), "not-a-pick": ("rejected", None, {})})
    assert store.history(run_id).empty
    message = curate.apply_import(store, run_id, plan, skip_unknown=True)
    assert message == "Imported mixed.csv: 2 picks changed; skipped 1 unknown id."
    assert _state(store, run_id)[picks[0]] == ("accepted", "") and _state(store, run_id)[picks[1]][0] == "rejected"


def test_many_unknown_ids_are_listed_first_few_and_counted(made: dict) -> None:
    store, run_id = made["store"], made["run_id"]
    plan = curate.plan_import(store, run_id, _csv([{"id": f"x{i}", "note": "n"} for i in range(8)]), "f.csv")
    assert plan.unknown_message == "8 ids of the file are not picks of this run: x0, x1, x2, x3, x4 and 3 more"


def test_bad_decision_values_are_named_with_their_line_and_nothing_is_applied(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    text = f"id,decision,note\n{picks[0]},accepted,\n{picks[1]},acepted,typo\n\n{picks[2]},maybe,\n"
    plan = curate.plan_import(store, run_id, text.encode(), "bad.csv")
    assert plan.problems == [f"line 3 (id {picks[1]}): decision 'acepted' is not one of accepted, rejected, pending.",
                             f"line 5 (id {picks[2]}): decision 'maybe' is not one of accepted, rejected, pending."]
    with pytest.raises(ConfigError, match="line 3 .*line 5"):
        curate.apply_import(store, run_id, plan, skip_unknown=True)
    assert store.history(run_id).empty
    jsonl = f'{{"id": "{picks[0]}", "decision": "yes"}}\nnot json\n'.encode()
    plan = curate.plan_import(store, run_id, jsonl, "bad.jsonl")
    assert sorted(plan.problems) == [f"line 1 (id {picks[0]}): decision 'yes' is not one of accepted, rejected, "
                                     "pending.", "line 2: not valid JSON (Expecting value at column 1): 'not json'"]


def test_repeated_ids_and_files_without_ids_are_refused(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    plan = curate.plan_import(store, run_id, _csv([{"id": picks[0], "note": "a"}, {"id": picks[0], "note": "b"}]),
                              "twice.csv")
    assert plan.problems == [f"line 3: id {picks[0]} again (first on line 2); give each id once."]
    with pytest.raises(ConfigError, match="no id column"):
        curate.plan_import(store, run_id, _csv([{"row": picks[0], "note": "a"}]), "noid.csv")


def test_an_exported_csv_with_a_response_column_round_trips(made: dict) -> None:
    store, run_id, picks, tmp = made["store"], made["run_id"], made["picks"], made["tmp"]
    store.set_decisions(run_id, {picks[0]: ("accepted", "=keep")})
    export_run(store, run_id, tmp / "batch.csv", which="all")
    sheet = pd.read_csv(tmp / "batch.csv", encoding="utf-8-sig", keep_default_na=False, dtype=str)
    sheet["response"] = [f"response {i}" for i in range(len(sheet))]
    sheet.loc[1, "decision"] = "rejected"
    sheet.to_csv(tmp / "back.csv", index=False, encoding="utf-8-sig")
    plan = curate.plan_import(store, run_id, (tmp / "back.csv").read_bytes(), "back.csv")
    assert plan.problems == [] and plan.fields == ["response"], "the export's and the pool's columns: no annotations"
    assert plan.counts["rejected"] == 1 and plan.counts["notes"] == 0, "the '=keep' note reads back as it was"
    curate.apply_import(store, run_id, plan)
    sel = store.selection(run_id).set_index("id")
    assert sel.loc[picks[0], "note"] == "=keep" and sel.loc[picks[1], "decision"] == "rejected"
    assert sel["response"].tolist() == [f"response {i}" for i in range(len(sheet))]


def test_a_pool_column_is_stored_only_where_the_file_changes_it(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    sel = store.selection(run_id).set_index("id")
    data = _csv([{"id": picks[0], "category": sel.at[picks[0], "category"]},
                 {"id": picks[1], "category": "creative_writing"}])
    plan = curate.plan_import(store, run_id, data, "cats.csv")
    assert plan.counts["annotations"] == 1 and plan.counts["unchanged"] == 1
    curate.apply_import(store, run_id, plan)
    after = store.selection(run_id).set_index("id")
    assert after.at[picks[1], "category"] == "creative_writing" and after.at[picks[0], "category"] == sel.at[
        picks[0], "category"]


# -- curator picks -------------------------------------------------------------------------------
def test_a_swap_makes_a_curator_pick_in_the_replaced_picks_place(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    before = store.selection(run_id)
    assert set(before["origin"]) == {"model pick"}
    out = picks[1]
    subset = int(before.set_index("id").at[out, "subset"])
    others = curate.swap_candidates(store, run_id, out)
    members = next(r["members"] for r in store.subset_results(run_id) if r["subset"] == subset)
    assert set(others["id"]) == set(members) - set(picks) and set(others["subset"]) == {subset}
    assert others["instruction"].str.len().gt(0).all(), "candidates come with their text"
    into = others["id"].iloc[-1]
    message = curate.promote(store, run_id, into, replace=out, curator="Ana")
    assert message.startswith("Swapped: ") and "curator pick, accepted" in message
    after = store.selection(run_id).set_index("id")
    assert out not in after.index and len(after) == len(before)
    assert after.loc[into, ["origin", "decision", "reason", "rank"]].tolist() == [
        "curator pick", "accepted", f"curator pick (replacing {out})", 2]
    assert set(after.drop(index=into)["origin"]) == {"model pick"}
    assert store.decisions(run_id).set_index("id").at[out, "decision"] == "rejected"
    last = store.last_change(run_id).set_index("row_id")
    assert last.loc[out, ["action", "swapped", "after_pick"]].tolist() == ["promote", into, "{}"]
    assert last.loc[into, ["before_pick", "before_decision", "after_decision"]].tolist() == [
        "{}", "pending", "accepted"]
    assert curate.undo_offer(store, run_id)[1].startswith("Undo: swapped 1 pick for a passed-over candidate (Ana, ")
    assert store.removed_picks(run_id) == {out}
    store.undo_last(run_id, "Ana")
    back = store.selection(run_id)
    assert back[["id", "rank", "reason", "origin", "decision"]].equals(before[["id", "rank", "reason", "origin",
                                                                               "decision"]])
    assert store.removed_picks(run_id) == set()


def test_a_swap_only_takes_a_row_of_the_same_subset(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    sel = store.selection(run_id).set_index("id")
    elsewhere = curate.candidates(store, run_id)
    elsewhere = elsewhere[elsewhere["subset"] != sel.at[picks[0], "subset"]]["id"].iloc[0]
    with pytest.raises(ConfigError, match="own subset"):
        curate.promote(store, run_id, elsewhere, replace=picks[0])
    with pytest.raises(WorkspaceError, match="Already selected"):
        store.promote(run_id, [picks[2]], replace=picks[0])
    assert store.history(run_id).empty


def test_open_places_are_filled_from_the_runners_up_failed_subsets_included(made: dict) -> None:
    store, run_id, picks, failed = made["store"], made["run_id"], made["picks"], made["failed"]
    ups = curate.candidates(store, run_id)
    kinds = ups["kind"].tolist()
    assert kinds == sorted(kinds, key=[curate.TRIMMED, curate.FAILED, curate.PASSED_OVER].index), "best first"
    assert set(ups[ups["subset"] == failed]["kind"]) == {curate.FAILED}, "a failed subset's rows are candidates"
    assert (ups["kind"] == curate.TRIMMED).sum() == 1, "10 model picks for a budget of 9: one left out"
    assert curate.open_places(store.selection(run_id), 9) == 0
    with pytest.raises(ConfigError, match="0 open places"):
        curate.promote(store, run_id, ups["id"].iloc[0])
    store.set_decisions(run_id, {picks[0]: ("rejected", ""), picks[1]: ("rejected", "")})
    assert curate.open_places(store.selection(run_id), 9) == 2
    chosen = [ups["id"].iloc[0], ups[ups["subset"] == failed]["id"].iloc[0]]
    assert curate.fill(store, run_id, chosen, budget=9, curator="Bo").startswith("Added 2 curator picks")
    sel = store.selection(run_id).set_index("id")
    assert len(sel) == 11 and sel.loc[chosen, "origin"].tolist() == ["curator pick"] * 2
    assert sel.loc[chosen, "rank"].tolist() == [10, 11] and set(sel.loc[chosen, "decision"]) == {"accepted"}
    assert set(sel.loc[chosen, "reason"]) == {"curator pick (an open place of the budget)"}
    assert curate.open_places(store.selection(run_id), 9) == 0
    assert curate.undo_offer(store, run_id)[1].startswith("Undo: added 2 curator picks (Bo, ")


def test_a_retry_re_trim_keeps_a_curator_pick(made: dict) -> None:
    store, run_id, picks, failed = made["store"], made["run_id"], made["picks"], made["failed"]
    others = curate.swap_candidates(store, run_id, picks[4])
    into = others["id"].iloc[-1]
    curate.promote(store, run_id, into, replace=picks[4])
    store.set_decisions(run_id, {into: ("pending", "")})  # pending again: its origin alone must keep it
    made["script"].healed = True
    out = retry_failed(store, run_id, backend=made["backend"])
    assert out["retried"]["ok"] == 1
    sel = store.selection(run_id).set_index("id")
    assert into in sel.index and sel.at[into, "origin"] == "curator pick"
    assert sel.at[into, "reason"] == f"curator pick (replacing {picks[4]})", "never a fabricated model reason"
    assert (sel["origin"] == "curator pick").sum() == 1
    assert any(r["subset"] == failed and r["status"] == "ok" for r in store.subset_results(run_id))


def test_a_retry_re_trim_does_not_bring_back_a_swapped_out_pick(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    out = picks[0]  # a first pick: the round robin would take it again
    curate.promote(store, run_id, curate.swap_candidates(store, run_id, out)["id"].iloc[-1], replace=out)
    assert store.removed_picks(run_id) == {out}
    made["script"].healed = True
    retry_failed(store, run_id, backend=made["backend"])
    assert out not in set(store.selection(run_id)["id"])


def test_export_carries_the_origin(made: dict) -> None:
    store, run_id, picks, tmp = made["store"], made["run_id"], made["picks"], made["tmp"]
    into = curate.swap_candidates(store, run_id, picks[0])["id"].iloc[0]
    curate.promote(store, run_id, into, replace=picks[0])
    export_run(store, run_id, tmp / "o.csv", which="all")
    got = pd.read_csv(tmp / "o.csv", encoding="utf-8-sig", dtype=str).set_index("id")
    assert got.at[into, "origin"] == "curator pick" and (got.drop(index=into)["origin"] == "model pick").all()


def test_a_workspace_from_before_origins_opens_with_model_picks(made: dict) -> None:
    store, run_id = made["store"], made["run_id"]
    path = store.path
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE selection DROP COLUMN origin")
        db.execute("DROP TABLE decision_history")
    reopened = Store(path)
    assert set(reopened.selection(run_id)["origin"]) == {"model pick"}
    reopened.accept_pending(run_id, curator="Ana")
    assert len(reopened.history(run_id)) == 9


# -- the commands --------------------------------------------------------------------------------
def _cli(*args: str, env: dict | None = None) -> object:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_cli_decide_history_and_undo(made: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_id, picks, tmp = made["store"], made["run_id"], made["picks"], made["tmp"]
    monkeypatch.setenv("SELECTLLM_CURATOR", "Dee")
    res = _cli("decide", run_id, "--reject", picks[0], "--accept-all")
    assert res.exit_code == 0 and "9 decisions saved." in res.output
    res = _cli("decide", run_id, "--accept", picks[0], "--curator", "Eve")
    listing = _cli("history", run_id).output.splitlines()
    assert "Eve: accepted 1 pick" in listing[0] and "Dee: accepted 8 picks" in listing[1]
    assert "Dee: rejected 1 pick" in listing[2]
    assert _cli("undo", run_id).output.startswith("Undone: accepted 1 pick (Eve, ")
    assert _state(store, run_id)[picks[0]] == ("rejected", "")
    res = _cli("history", run_id, "--out", str(tmp / "h.csv"))
    assert res.exit_code == 0 and (tmp / "h.csv").exists()
    frame = pd.read_csv(tmp / "h.csv", encoding="utf-8-sig", keep_default_na=False)
    assert frame["action"].tolist()[-1] == "undo" and frame["curator"].tolist()[-1] == "Dee"
    monkeypatch.delenv("SELECTLLM_CURATOR")
    monkeypatch.setattr("getpass.getuser", lambda: "os-user")
    _cli("undo", run_id)
    assert store.history(run_id)["curator"].iloc[-1] == "os-user"
    assert "$SELECTLLM_CURATOR, else" in _cli("undo", "--help").output


def test_cli_import_decisions_all_or_nothing(made: dict) -> None:
    store, run_id, picks, tmp = made["store"], made["run_id"], made["picks"], made["tmp"]
    path = tmp / "decisions.csv"
    path.write_bytes(_csv([{"id": picks[0], "decision": "accepted", "response": "r0"},
                           {"id": "nope", "decision": "accepted", "response": "r?"}]))
    res = CliRunner().invoke(main, ["import-decisions", run_id, str(path), "--curator", "Ana"])
    assert res.exit_code == 1 and "1 id of the file is not picks of this run: nope" in res.output
    assert "--skip-unknown" in res.output and store.history(run_id).empty
    res = _cli("import-decisions", run_id, str(path), "--skip-unknown", "--curator", "Ana")
    assert res.exit_code == 0 and "1 pick changed; skipped 1 unknown id." in res.output
    assert store.selection(run_id).set_index("id").at[picks[0], "response"] == "r0"
    assert store.last_change(run_id)["action"].tolist() == ["import"]
    path.write_text(f"id,decision\n{picks[1]},later\n")
    res = CliRunner().invoke(main, ["import-decisions", run_id, str(path)])
    assert res.exit_code == 1 and "line 2 (id " in res.output and "'later'" in res.output


def test_cli_promote_swaps_and_fills(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    into = curate.swap_candidates(store, run_id, picks[0])["id"].iloc[0]
    res = _cli("promote", run_id, into, "--replace", picks[0], "--curator", "Ana")
    assert res.exit_code == 0 and res.output.startswith("Swapped: ")
    assert store.selection(run_id).set_index("id").at[into, "origin"] == "curator pick"
    spare = curate.candidates(store, run_id)["id"].iloc[0]
    res = CliRunner().invoke(main, ["promote", run_id, spare])
    assert res.exit_code == 1 and "0 open places" in res.output and "--replace" in res.output
    store.set_decisions(run_id, {picks[2]: ("rejected", "")})
    assert _cli("promote", run_id, spare).output.startswith("Added 1 curator pick")
    assert store.selection(run_id).set_index("id").at[spare, "reason"] == "curator pick (an open place of the budget)"


# -- promoting from a subset's view on the Select page ------------------------------------------
def _subset(store: Store, run_id: str, subset: int) -> dict:
    return next(r for r in store.subset_results(run_id) if r["subset"] == subset)


def test_a_subset_view_marks_a_swap_as_curator_pick_and_swapped_out(made: dict) -> None:
    store, run_id, picks = made["store"], made["run_id"], made["picks"]
    result = _subset(store, run_id, int(store.selection(run_id).set_index("id").at[picks[0], "subset"]))
    now = run_view.subset_picks(store, run_id, result)
    assert now.ok and set(now.picks["id"]) <= set(result["members"]) and picks[0] in set(now.picks["id"])
    assert set(now.picks["id"]) | set(now.left_out["id"]) == set(result["members"])
    assert now.states()[picks[0]] == "model pick" and now.states()[now.left_out["id"].iloc[0]] == "passed over"
    into = now.left_out["id"].iloc[-1]
    number = {rid: n for n, rid in enumerate(result["members"], start=1)}
    assert now.candidate_label(into) == f"#{number[into]} · " + now.left_out.set_index("id").at[into, "instruction"]
    assert now.pick_label(picks[0]).startswith(f"#{number[picks[0]]} · model pick · ")
    curate.promote(store, run_id, into, replace=picks[0], curator="Ana")
    after = run_view.subset_picks(store, run_id, result)
    assert after.states()[into] == f"curator pick, in place of #{number[picks[0]]}"
    assert after.states()[picks[0]] == f"swapped out for #{number[into]}"
    assert after.candidate_label(picks[0]).endswith(" · swapped out earlier")
    assert after.pick_label(into).startswith(f"#{number[into]} · curator pick · ")
    by_id = store.selection(run_id).set_index("id")  # the pool's text of the selected rows is enough here
    pool = pd.concat([by_id[["instruction", "input"]], store.row_texts(run_id, after.left_out["id"])])
    table = run_view.subset_table(result, pool, after).set_index("id")
    assert table.at[into, "selection"] == f"curator pick, in place of #{number[picks[0]]}"
    assert pd.isna(table.at[into, "pick"]) and table.at[picks[0], "pick"] == 1, "the model's answer stays as it was"
    assert "selection" not in run_view.subset_table(result, pool).columns, "a preview has no selection"


def test_a_subset_view_names_model_picks_the_budget_left_out(made: dict) -> None:
    store, run_id = made["store"], made["run_id"]
    trimmed = curate.candidates(store, run_id).query("kind == @curate.TRIMMED")["id"].iloc[0]
    subset = int(curate.candidates(store, run_id).set_index("id").at[trimmed, "subset"])
    now = run_view.subset_picks(store, run_id, _subset(store, run_id, subset))
    assert now.left_out["id"].iloc[0] == trimmed, "the best runner-up comes first"
    assert now.states()[trimmed] == "model pick, left out by the budget"
    assert now.candidate_label(trimmed).endswith(" · the model picked it, the budget left it out")


def test_a_failed_subset_offers_its_rows_for_open_places(made: dict) -> None:
    store, run_id, picks, failed = made["store"], made["run_id"], made["picks"], made["failed"]
    result = _subset(store, run_id, failed)
    now = run_view.subset_picks(store, run_id, result)
    assert not now.ok and now.picks.empty and now.states() == {}
    assert now.left_out["id"].tolist() == result["members"] and set(now.left_out["kind"]) == {curate.FAILED}
    assert now.open_places == 0 and now.budget == 9
    store.set_decisions(run_id, {picks[0]: ("rejected", "")})  # a rejected pick leaves an open place
    assert run_view.subset_picks(store, run_id, result).open_places == 1
    chosen = now.left_out["id"].iloc[2]
    text = textwrap.shorten(store.row_texts(run_id, [chosen]).at[chosen, "instruction"], 70)
    assert curate.promote(store, run_id, chosen, curator="Bo") == (
        f"Added 1 curator pick (accepted) in an open place of the budget: \"{text}\"; 0 open places left.")
    after = run_view.subset_picks(store, run_id, result)
    assert after.open_places == 0 and after.states() == {chosen: "curator pick, in an open place"}
    assert store.selection(run_id).set_index("id").at[chosen, "origin"] == "curator pick"
