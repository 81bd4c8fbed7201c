"""The Review table a page at a time: which rows a page holds and says it holds, decisions laid over picks read
earlier, what the bulk buttons say they decide, and the page itself (AppTest) paging, filtering and bulk-deciding
a run of 230 picks a page or every page at a time."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from conftest import FakeEmbedder
from fakes import ScriptedBackend
from streamlit.testing.v1 import AppTest

from selectllm_core.embed import EmbeddingCache
from selectllm_core.pipeline import RunConfig, run
from selectllm_core.pool.load import load_pool
from selectllm_core.store import Store
from selectllm_core.studio import review

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the app's own modules live beside app.py


# -- pages ----------------------------------------------------------------------------------------------
def test_a_page_holds_its_rows_and_says_which() -> None:
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(230)]})
    first, last = review.page_of(230, size=100, number=1), review.page_of(230, size=100, number=3)
    assert (first.count, first.start, first.stop) == (3, 0, 100)
    assert first.of(frame)["id"].tolist() == [f"r{i}" for i in range(100)]
    assert last.of(frame)["id"].tolist() == [f"r{i}" for i in range(200, 230)]
    assert first.caption(230) == "Rows 1–100 of 230"
    assert last.caption(230) == "Rows 201–230 of 230"
    assert review.page_of(10_000, size=100, number=3).caption(10_000) == "Rows 201–300 of 10,000"
    assert review.page_of(150, size=100, number=2).caption(10_000) == "Rows 101–150 of 150 filtered (10,000 picks in all)"


def test_a_page_number_past_either_end_is_the_nearest_page() -> None:
    assert review.page_of(230, size=100, number=7).number == 3  # the filters now keep fewer rows
    assert review.page_of(230, size=100, number=0).number == 1
    empty = review.page_of(0, size=50, number=4)
    assert (empty.number, empty.count, empty.start, empty.stop) == (1, 1, 0, 0)
    assert empty.caption(12) == "No rows: the filters keep none of the 12 picks."
    with pytest.raises(ValueError, match="at least 1"):
        review.page_of(10, size=0, number=1)


def test_a_new_page_size_keeps_the_first_row_in_view() -> None:
    assert review.page_holding(200, size=50) == 5  # row 201 of pages of 100 (page 3) is on page 5 of pages of 50
    assert review.page_holding(200, size=250) == 1
    assert review.page_holding(0, size=100) == 1


def test_the_editor_key_changes_with_the_rows_of_the_page() -> None:
    assert review.page_key(["a", "b"]) == review.page_key(["a", "b"])
    assert review.page_key(["a", "b"]) != review.page_key(["b", "a"])
    assert review.page_key(["ab"]) != review.page_key(["a", "b"])


def test_decisions_stored_now_are_laid_over_picks_read_earlier() -> None:
    picks = pd.DataFrame({"id": ["a", "b", "c"], "instruction": ["x", "y", "z"], "rank": [1, 2, 3],
                          "decision": ["accepted", "pending", "rejected"], "note": ["old", "", "dup"]})
    now = pd.DataFrame({"id": ["b", "c"], "decision": ["rejected", "pending"], "note": ["vague", ""],
                        "updated_at": ["t", "t"]})
    got = review.with_decisions(picks, now)
    assert got["decision"].tolist() == ["pending", "rejected", "pending"]  # "a" has no stored decision: pending
    assert got["note"].tolist() == ["", "vague", ""]
    assert got[["id", "instruction", "rank"]].equals(picks[["id", "instruction", "rank"]])
    assert picks["decision"].tolist() == ["accepted", "pending", "rejected"], "the picks read earlier stay as read"


def test_bulk_buttons_say_whether_they_decide_this_page_or_every_page() -> None:
    assert review.bulk_scope([], whole=None) == "shown"  # everything the filters keep fits one page
    assert review.bulk_scope([3], whole=None) == "cluster 3"
    assert review.bulk_scope([], whole=False) == "this page"
    assert review.bulk_scope([], whole=True) == "all pages"
    assert review.bulk_scope([1, 2], whole=True) == "cluster 1, 2, all pages"


# -- the page ---------------------------------------------------------------------------------------------
@pytest.fixture
def picks230(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The 600-row demo pool and a finished run of 230 picks (60 subsets of 10, the first 4 of each picked)."""
    st.cache_data.clear()
    st.cache_resource.clear()
    pool = load_pool(pd.read_json(REPO / "demo" / "dolly_demo.jsonl", lines=True), name="demo")
    store, embedder = Store(), FakeEmbedder()
    store.save_pool(pool)
    result = run(pool, RunConfig(budget=230, subset_size=10), store=store, backend=ScriptedBackend(),
                 embedder=embedder, cache=EmbeddingCache())
    from app_pages import _shared

    monkeypatch.setattr(_shared, "embedder", lambda: embedder)
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    ranks = store.selection(result.run_id).set_index("rank")["id"]
    assert len(ranks) == 230
    return {"store": store, "run_id": result.run_id, "ranks": ranks}


def _review() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.session_state["map_layout"] = "pca"
    at.run()
    at.switch_page("app_pages/review.py").run()
    assert not at.exception, at.exception
    return at


def _rows_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if re.match(r"Rows |No rows", c.value))


def _table(at: AppTest) -> pd.DataFrame:
    """The frame the page gives its table editor (the page's rows, indexed by id)."""
    return next(frame.value for frame in at.dataframe if "decision" in frame.value.columns)


def _decisions(s: dict, ranks: range) -> set[str]:
    now = s["store"].selection(s["run_id"]).set_index("rank")["decision"]
    return set(now.loc[list(ranks)])


def test_the_review_page_shows_a_page_of_rows_and_turns_pages(picks230: dict) -> None:
    at = _review()
    assert _rows_caption(at) == "Rows 1–100 of 230"
    assert _table(at).index.tolist() == picks230["ranks"].loc[1:100].tolist()
    at.button(key="review_next").click().run()
    at.button(key="review_next").click().run()
    assert _rows_caption(at) == "Rows 201–230 of 230"
    assert _table(at).index.tolist() == picks230["ranks"].loc[201:230].tolist()
    assert at.button(key="review_next").disabled and not at.button(key="review_prev").disabled
    at.selectbox(key="review_page_size").select(50).run()  # row 201 stays in view: page 5 of 50
    assert (_rows_caption(at), at.number_input(key="review_page").value) == ("Rows 201–230 of 230", 5)
    at.number_input(key="review_page").set_value(2).run()
    assert _rows_caption(at) == "Rows 51–100 of 230"
    at.multiselect(key="review_status").select("pending").run()  # a new filter starts at the first page
    assert _rows_caption(at) == "Rows 1–50 of 230"
    assert not at.exception, at.exception


def test_bulk_buttons_decide_this_page_or_every_filtered_page_as_they_say(picks230: dict) -> None:
    s = picks230
    at = _review()
    at.button(key="review_next").click().run()
    accept = at.button(key="review_accept_all")
    assert accept.label == "Accept 100 pending (this page)"
    accept.click().run()
    assert _decisions(s, range(101, 201)) == {"accepted"}
    assert _decisions(s, range(1, 101)) | _decisions(s, range(201, 231)) == {"pending"}
    assert {m.label: m.value for m in at.metric}["Accepted"] == "100"
    assert at.button(key="review_accept_all").label == "Accept 0 pending (this page)"

    at.radio(key="review_bulk_scope").set_value("all").run()
    reject = at.button(key="review_reject_all")
    assert reject.label == "Reject 130 pending (all pages)"
    reject.click().run()
    assert _decisions(s, range(101, 201)) == {"accepted"}, "a decision already made stays"
    assert _decisions(s, range(1, 101)) | _decisions(s, range(201, 231)) == {"rejected"}

    at.selectbox(key="review_page_size").select(250).run()  # everything on one page: no choice to make
    assert at.button(key="review_accept_all").label == "Accept 0 pending (shown)"
    assert "review_bulk_scope" not in [r.key for r in at.radio]
    assert not at.exception, at.exception
