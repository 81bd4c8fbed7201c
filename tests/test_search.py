"""Full-text search (SQLite FTS5) and "more like this" over real pool rows, and how the map highlights them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from selectllm_core.errors import ConfigError
from selectllm_core.pool.load import load_pool
from selectllm_core.studio import map_view
from selectllm_core.studio.search import PoolIndex, found_rows, fts_query, match_caption, more_like_this

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo():
    return load_pool(REPO / "demo" / "dolly_demo.jsonl")


def test_typed_text_becomes_a_query_that_cannot_be_a_syntax_error() -> None:
    assert fts_query("beach mountains") == '"beach" AND "mountains"'
    assert fts_query('"Harry Potter" nov*') == '"Harry Potter" AND "nov"*'
    assert fts_query('AND OR NOT ( ) : ^ -x "') == '"AND" AND "OR" AND "NOT" AND "x"'
    assert fts_query("  ") == "" and fts_query("()") == ""


def test_search_finds_real_rows_ranks_them_and_marks_the_match(demo) -> None:  # noqa: ANN001
    index = PoolIndex(demo.frame)
    found = index.search("harry potter")
    frame = demo.frame.set_index("id")
    assert len(found) >= 1
    for rid in found["id"]:
        text = (frame.loc[rid, "instruction"] + " " + frame.loc[rid, "input"]).lower()
        assert "harry" in text and "potter" in text
    expected = {rid for rid, r in frame.iterrows()
                if "harry" in (r.instruction + " " + r.input).lower() and "potter" in (r.instruction + " " + r.input).lower()}
    assert set(found["id"]) <= expected and len(found) >= len(expected) * 0.9  # word matches, not substrings
    assert any("«" in s for s in found["snippet"])
    assert index.search('"" ) ( : ^').empty  # nothing searchable typed: no rows, no error


def test_search_folds_accents_and_matches_prefixes() -> None:
    frame = pd.DataFrame({"id": ["a", "b", "c"], "instruction": ["Café au lait recipe", "Explain caching", "x"],
                          "input": ["", "", "nothing"]})
    index = PoolIndex(frame)
    assert index.search("cafe")["id"].tolist() == ["a"]
    assert index.search("cach*")["id"].tolist() == ["b"]
    assert index.search("recipe explain").empty  # every word must occur in the same row


def test_more_like_this_returns_the_nearest_rows_without_the_seeds(shared_data: Path) -> None:
    with gzip.open(shared_data / "dolly_alpagasus_3k.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(next(f)) for _ in range(50)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype(np.float32)
    vectors[7] = vectors[3] + 0.01
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"r{i}" for i in range(len(rows))]
    near = more_like_this(vectors, ids, ["r3"], k=5)
    assert near["id"].iloc[0] == "r7" and "r3" not in set(near["id"]) and len(near) == 5
    assert near["similarity"].is_monotonic_decreasing
    lasso = more_like_this(vectors, ids, ["r3", "r7"], k=3)
    assert not {"r3", "r7"} & set(lasso["id"])
    with pytest.raises(ConfigError, match="not in it: nope"):
        more_like_this(vectors, ids, ["nope"])


def test_the_marks_are_in_the_column_that_matched(demo) -> None:  # noqa: ANN001
    index = PoolIndex(demo.frame)
    frame = demo.frame.set_index("id")
    in_input_only = [rid for rid, r in frame.iterrows() if "people" in r.input.lower().split()
                     and "people" not in r.instruction.lower()]
    assert in_input_only, "the demo pool has rows that say 'people' only in their input"
    found = index.search("people").set_index("id")
    assert all("«people»" in found.at[rid, "snippet"].lower() for rid in in_input_only)
    assert all("«people»" in found.at[rid, "input"].lower() and "«" not in found.at[rid, "instruction"]
               for rid in in_input_only), "instruction and input come whole, marked where they match"


def test_found_rows_are_the_pool_rows_in_the_order_of_the_hits(demo) -> None:  # noqa: ANN001
    hits = PoolIndex(demo.frame).search("percussion")
    rows = found_rows(demo.frame, hits)
    assert rows["id"].tolist() == hits["id"].tolist() and len(rows) >= 3
    assert rows.columns.tolist() == ["id", "rank", "snippet", "instruction", "input", "category"]
    frame = demo.frame.set_index("id")
    assert rows["instruction"].str.replace("«", "").str.replace("»", "").tolist() == \
        frame.loc[hits["id"], "instruction"].tolist()
    assert all("«percussion»" in t.lower() for t in rows["instruction"]), "the search's marked text stays"
    assert rows["category"].tolist() == frame.loc[hits["id"], "category"].tolist()
    near = found_rows(demo.frame, pd.DataFrame({"id": [hits["id"].iloc[-1]], "similarity": [0.5]}))
    assert near["instruction"].iloc[0] == frame.loc[hits["id"].iloc[-1], "instruction"]


def test_match_caption_counts_matches_and_says_when_only_the_best_are_listed() -> None:
    assert match_caption(8, 80, shown=8) == "8 of 80 rows match (best first); «marks» show the words found."
    assert match_caption(1234, 20_000, shown=200) == ("1,234 of 20,000 rows match (the best 200 are listed); "
                                                      "«marks» show the words found.")
    assert match_caption(0, 80, shown=0).startswith("No row of the 80 matches.")


# -- the map: highlights and the list under it ---------------------------------------------------
def _frame(n: int = 12) -> pd.DataFrame:
    pool = pd.DataFrame({"id": [f"row{i}" for i in range(n)], "instruction": [f"task {i}" for i in range(n)],
                         "input": [""] * n})
    return map_view.map_frame(pool, np.arange(2 * n, dtype=float).reshape(n, 2), np.arange(n) % 3, None)


def test_the_list_under_the_map_is_the_selection_the_matches_or_both() -> None:
    assert map_view.listed_rows([], None) == ([], "")
    assert map_view.listed_rows(["a", "b"], None) == (["a", "b"], "2 instructions in the selection")
    assert map_view.listed_rows([], ["c", "a"]) == (["c", "a"], "2 instructions match the search")
    assert map_view.listed_rows([], []) == ([], "")
    assert map_view.listed_rows(["a", "b", "d"], ["c", "d", "a"]) == (
        ["d", "a"], "2 of the 3 instructions in the selection match the search")
    assert map_view.listed_rows(["b"], ["a"]) == ([], "0 of the 1 instruction in the selection match the search")


def test_highlighted_rows_are_drawn_on_top_in_their_colour_and_the_rest_fades() -> None:
    frame = _frame()
    plain = map_view.map_figure(frame)
    marks = map_view.search_highlights(["row5", "row1"], ["row0"], ["row3", "row6"])
    assert [m.name for m in marks] == ["search matches (2)", "your selection (1)", "more like the selection (2)"]
    fig = map_view.map_figure(frame, highlights=marks)
    base, extra = fig.data[:len(plain.data)], fig.data[len(plain.data):]
    assert [t.name for t in base] == [t.name for t in plain.data] and all(t.marker.opacity == 0.85 for t in plain.data)
    assert all(t.marker.opacity == map_view.FADED for t in base)
    colour = {row: t.marker.color for t in plain.data for (row,) in t.customdata}
    points = [t for t in extra if t.customdata is not None]
    assert [sorted(r for (r,) in t.customdata) for t in points] == [["row1", "row5"], ["row0"], ["row3", "row6"]]
    assert [t.marker.symbol for t in points] == ["circle", "square", "diamond"]
    assert list(points[0].marker.color) == [colour["row1"], colour["row5"]] and colour["row1"] != colour["row5"]
    legend = [t for t in extra if t.customdata is None]
    assert [(t.name, t.showlegend) for t in legend] == [(m.name, None) for m in marks]
    assert not any(t.showlegend for t in points), "the legend shows the entries without points, in black and white"


def test_the_highlight_key_changes_with_the_rows() -> None:
    one = map_view.search_highlights(["row1", "row2"])
    assert map_view.highlight_key(one) == map_view.highlight_key(map_view.search_highlights(["row2", "row1"]))
    assert map_view.highlight_key(one) != map_view.highlight_key(map_view.search_highlights(["row1", "row3"]))
    assert map_view.highlight_key([]) == "" and map_view.search_highlights(None) == []
    assert map_view.search_highlights([]) == []
