"""Near-duplicate groups: known vectors give known groups (stars in pool order, never chains), τ at its edges,
messages that say how to fix bad input, a real pair of Dolly rows, the result cache, keeping one per group as a
pool of its own, and what the Data and Map pages and the CLI show of them."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FakeEmbedder

from selectllm_core.embed import EmbeddingCache, SentenceTransformerEmbedder, embed_texts, neardup
from selectllm_core.embed.neardup import (
    NearDuplicates,
    cached_pool_vectors,
    keep_one_per_group,
    near_duplicate_groups,
    pool_near_duplicates,
    report_lines,
)
from selectllm_core.errors import ConfigError
from selectllm_core.pool.load import load_pool, read_table
from selectllm_core.store import Store
from selectllm_core.studio import map_view, neardup_view

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the app's own modules (app_pages/) live beside app.py

def at_angles(degrees: list[float]) -> np.ndarray:
    """Unit vectors in the plane at these angles: cos(a - b) is the similarity of two of them."""
    rad = np.radians(degrees)
    return np.stack([np.cos(rad), np.sin(rad)], axis=1).astype(np.float32)


def reference_stars(x: np.ndarray, tau: float) -> list[tuple[int, ...]]:
    """The definition, with a full numpy similarity matrix: in pool order, a free row takes every free row ≥ τ."""
    sims, taken, groups = x @ x.T, np.zeros(len(x), dtype=bool), []
    for row in range(len(x)):
        if taken[row]:
            continue
        mine = [j for j in range(row + 1, len(x)) if not taken[j] and sims[row, j] >= tau - neardup.EPS]
        if mine:
            groups.append((row, *mine))
            taken[[row, *mine]] = True
    return groups


def small_pool(n: int = 12):  # noqa: ANN201
    frame = pd.DataFrame({"instruction": [f"Question number {i}" for i in range(n)], "topic": [i % 3 for i in range(n)]})
    return load_pool(frame, name="small")


# -- groups from known vectors --------------------------------------------------------------------------------------


def test_known_vectors_give_known_groups_with_the_first_row_kept() -> None:
    # rows 0, 3, 5 within 10 degrees of 0 (cos 10° = 0.985); rows 1 and 6 at 90 and 93 degrees; the rest apart
    x = at_angles([0, 90, 200, 5, 300, 10, 93, 150])
    dups = near_duplicate_groups(x, [f"r{i}" for i in range(8)], tau=0.95)
    assert dups.groups == (("r0", "r3", "r5"), ("r1", "r6"))
    assert dups.kept == ("r0", "r1") and dups.dropped == ("r3", "r5", "r6")
    assert dups.n_groups == 2 and dups.rows_in_groups == 5 and dups.n_dropped == 3 and dups.rows == 8
    assert dups.similarity[0] == pytest.approx((math.cos(math.radians(5)), math.cos(math.radians(10))), abs=1e-4)
    assert dups.similarity[1] == pytest.approx((math.cos(math.radians(3)),), abs=1e-4)
    assert dups.summary == ("2 near-duplicate groups at cosine ≥ 0.95 hold 5 of 8 rows; keeping one per group "
                            "drops 3.")
    assert dups.tau == 0.95 and "faiss" in dups.library and "exact" in dups.library and dups.seconds >= 0


def test_a_chain_is_not_one_group_every_dropped_row_resembles_the_kept_one() -> None:
    # A~B and B~C at cos 14° = 0.970, but A and C at cos 28° = 0.883: connected components would drop both B and C
    x = at_angles([0, 14, 28])
    dups = near_duplicate_groups(x, ["A", "B", "C"], tau=0.95)
    assert dups.groups == (("A", "B"),)
    assert dups.dropped == ("B",), "C is not like A, the row kept: it stays"
    kept = x[[0, 2]]
    assert near_duplicate_groups(kept, ["A", "C"], tau=0.95).groups == (), "what is kept has no pair left"


def test_groups_equal_the_definition_on_clustered_vectors_over_many_search_blocks() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((400, 32))
    x = centres[rng.integers(0, 400, 3000)] + 0.12 * rng.standard_normal((3000, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    for tau in (0.9, 0.95, 0.98):
        dups = near_duplicate_groups(x, [str(i) for i in range(3000)], tau=tau)
        got = [tuple(int(i) for i in g) for g in dups.groups]
        assert got == reference_stars(x, tau)
    assert dups.n_groups > 50, "the data has groups to find"


def test_one_template_is_one_group_and_its_hits_are_held_a_block_at_a_time() -> None:
    rng = np.random.default_rng(1)
    x = np.tile(rng.standard_normal((1, 64)), (5000, 1)) + 1e-3 * rng.standard_normal((5000, 64))
    dups = near_duplicate_groups(x.astype(np.float32), [str(i) for i in range(5000)], tau=0.95)
    assert dups.groups == (tuple(str(i) for i in range(5000)),)
    assert dups.n_dropped == 4999 and dups.summary.startswith("1 near-duplicate group at cosine ≥ 0.95 holds ")


def test_tau_one_finds_equal_vectors_and_a_pair_at_tau_counts() -> None:
    x = at_angles([0, 0, 0.3, 90, 90 + math.degrees(math.acos(0.9))])
    ids = ["a", "a-copy", "a-close", "b", "b-at-0.9"]
    assert near_duplicate_groups(x, ids, tau=1.0).groups == (("a", "a-copy"),)
    assert near_duplicate_groups(x, ids, tau=0.9).groups == (("a", "a-copy", "a-close"), ("b", "b-at-0.9"))
    assert near_duplicate_groups(x, ids, tau=0.9001).groups == (("a", "a-copy", "a-close"),)


def test_vectors_that_are_not_unit_length_are_compared_by_cosine() -> None:
    x = at_angles([0, 5, 90])
    assert near_duplicate_groups(x * np.array([[10.0], [0.5], [3.0]]), ["a", "b", "c"]).groups == (("a", "b"),)


def test_an_empty_pool_and_a_pool_without_pairs_have_no_groups() -> None:
    assert near_duplicate_groups(np.zeros((0, 8), np.float32), []).summary == \
        "No near-duplicates at cosine ≥ 0.95 among 0 rows."
    none = near_duplicate_groups(at_angles([0, 90, 180]), ["a", "b", "c"])
    assert none.groups == () and none.dropped == () and none.n_dropped == 0


# -- validation -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0, -0.5, 1.01, 95, float("nan"), float("inf"), "0.95", None, True])
def test_a_tau_out_of_range_is_refused_with_the_fix(tau: object) -> None:
    with pytest.raises(ConfigError, match=r"above 0 and at most 1 .*--near-dup-tau 0\.95"):
        near_duplicate_groups(at_angles([0, 5]), ["a", "b"], tau=tau)


@pytest.mark.parametrize(("vectors", "ids", "message"), [
    (np.ones(4, np.float32), ["a", "b", "c", "d"], r"one vector per row: 4 ids but vectors of shape \(4,\)"),
    (np.ones((3, 4), np.float32), ["a", "b"], r"2 ids but vectors of shape \(3, 4\)"),
    (np.array([[1, 0], [np.nan, 1], [0, 1]], np.float32), ["a", "b", "c"], r"NaN or infinity \(first: row 1\)"),
    (np.array([[1, 0], [0, 0]], np.float32), ["a", "b"], "Row 1 has a zero vector"),
])
def test_bad_vectors_are_refused_with_a_message_that_names_the_row(vectors: np.ndarray, ids: list[str],
                                                                   message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        near_duplicate_groups(vectors, ids)


# -- a real pair ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_real_dolly_rows_that_ask_the_same_are_one_group(shared_data: Path) -> None:
    frame = read_table(shared_data / "dolly_alpagasus_3k.jsonl.gz")
    pair = ["What's the difference between tennis and pickleball?",
            "What is the difference between tennis and pickleball?"]
    rows = pd.concat([frame[frame["instruction"].isin(pair)], frame.head(20)], ignore_index=True)
    pool = load_pool(rows, name="dolly")
    assert pool.report.duplicates_dropped == 0, "the pair differs in its text: not an exact duplicate"
    dups = pool_near_duplicates(pool, embedder=SentenceTransformerEmbedder(), cache=EmbeddingCache())
    assert [pool.frame.set_index("id").loc[list(g), "instruction"].tolist() for g in dups.groups] == [pair]
    assert dups.similarity[0][0] >= 0.99 and dups.rows == 22


# -- a pool, its cache, keeping one per group -----------------------------------------------------------------------


def planted(pool_rows: int = 12) -> tuple:
    """A small pool and vectors where rows 2, 7 and 9 repeat row 0's direction and row 11 repeats row 4's."""
    pool = small_pool(pool_rows)
    angles = [29.0 * i for i in range(pool_rows)]  # 29 degrees apart: cosine 0.875
    angles[2], angles[7], angles[9], angles[11] = 1.0, 2.0, 0.5, angles[4] + 1.0
    return pool, at_angles(angles)


def test_pool_groups_are_cached_by_their_vectors_and_tau(tmp_path: Path) -> None:
    pool, x = planted()
    ids = pool.frame["id"].tolist()
    first = pool_near_duplicates(pool, vectors=x, cache_root=tmp_path)
    assert not first.from_cache and first.groups == ((ids[0], ids[2], ids[7], ids[9]), (ids[4], ids[11]))
    again = pool_near_duplicates(pool, vectors=x, cache_root=tmp_path)
    assert again.from_cache and again.groups == first.groups and again.similarity == first.similarity
    assert not pool_near_duplicates(pool, vectors=x, tau=0.9, cache_root=tmp_path).from_cache
    (tmp_path / "neardup").joinpath(next(p.name for p in (tmp_path / "neardup").iterdir())).write_text("{broken")
    assert pool_near_duplicates(pool, vectors=x, cache_root=tmp_path).groups == first.groups


def test_a_pool_is_embedded_through_the_cache_and_read_back_from_it(fake_embedder: FakeEmbedder) -> None:
    pool = small_pool()
    assert cached_pool_vectors(pool, model_id=fake_embedder.model_id) is None, "nothing is embedded to check"
    assert fake_embedder.calls == 0
    dups = pool_near_duplicates(pool, embedder=fake_embedder)
    assert fake_embedder.calls == len(pool.frame) and dups.rows == len(pool.frame)
    vectors = cached_pool_vectors(pool, model_id=fake_embedder.model_id)
    np.testing.assert_array_equal(vectors, embed_texts(pool.frame["text"].tolist(), embedder=FakeEmbedder()).vectors)


def test_keep_one_per_group_is_a_pool_of_its_own_that_says_what_it_is() -> None:
    pool, x = planted()
    dups = pool_near_duplicates(pool, vectors=x)
    kept = keep_one_per_group(pool, dups)
    assert kept.name == "small (one per near-duplicate group, τ=0.95)"
    assert kept.frame["id"].tolist() == [i for i in pool.frame["id"] if i not in dups.dropped]
    assert list(kept.frame.columns) == list(pool.frame.columns) and len(kept.frame) == 8
    assert kept.report.rows_kept == 8 and kept.report.rows_read == pool.report.rows_read
    assert "dropped 4 of 12 rows in 2 groups" in kept.report.notes[-1]
    assert len(pool.frame) == 12 and pool.report.rows_kept == 12, "the source pool is unchanged"
    store = Store()
    source, saved = store.save_pool(pool), store.save_pool(kept)
    assert saved.status == "new" and saved.pool_id != source.pool_id
    reread = store.load_pool(saved.pool_id)
    assert reread.name == kept.name and len(reread.frame) == 8 and reread.report.notes == kept.report.notes
    assert store.save_pool(keep_one_per_group(pool, dups)).status == "identical"
    assert pool_near_duplicates(kept, vectors=x[[i not in {2, 7, 9, 11} for i in range(12)]]).groups == ()


def test_groups_of_another_pool_are_refused() -> None:
    pool, x = planted()
    dups = pool_near_duplicates(pool, vectors=x)
    with pytest.raises(ConfigError, match="Find them again for this pool"):
        keep_one_per_group(small_pool(20), dups)


def test_report_lines_give_the_summary_the_relation_to_exact_duplicates_and_examples() -> None:
    pool, x = planted()
    dups = pool_near_duplicates(pool, vectors=x)
    lines = report_lines(dups, pool=pool, examples=1)
    assert lines[0].startswith("2 near-duplicate groups at cosine ≥ 0.95 hold 6 of 12 rows; keeping one per group "
                               "drops 4. (faiss ")
    assert "exact duplicates" in lines[1]
    assert lines[2].startswith("  group 1 (4 rows, cosine to the kept row ")
    assert lines[3].startswith("    keep ") and lines[3].endswith("Question number 0")
    assert lines[4].endswith("Question number 2") and lines[-1] == "  … and 1 more group(s)"
    assert report_lines(near_duplicate_groups(x[:2], ["a", "b"]))[1:] == []


# -- what the pages show --------------------------------------------------------------------------------------------


def test_the_example_table_lists_each_group_kept_row_first() -> None:
    pool, x = planted()
    dups = pool_near_duplicates(pool, vectors=x)
    table = neardup_view.example_table(dups, pool, groups=1)
    assert list(table.columns) == ["group", "role", "similarity", "instruction", "input", "id"]
    assert table["role"].tolist() == ["kept", "near-duplicate", "near-duplicate", "near-duplicate"]
    assert table["instruction"].tolist() == [f"Question number {i}" for i in (0, 2, 7, 9)]
    assert pd.isna(table["similarity"].iloc[0]) and (table["similarity"].iloc[1:] > 0.99).all()
    assert len(neardup_view.example_table(dups, pool, groups=10)) == 6
    assert neardup_view.shown_table(table)["similarity"].tolist()[:2] == ["", f"{table['similarity'].iloc[1]:.3f}"]
    assert neardup_view.keep_label(dups) == "Keep one per group: save a pool of 8 rows and open it"
    assert "'small (one per near-duplicate group, τ=0.95)'" in neardup_view.keep_help(dups, pool)
    assert "no exact duplicates" in neardup_view.explain(dups, pool.report)


def test_the_map_colours_and_hovers_rows_by_their_group() -> None:
    pool, x = planted()
    dups = pool_near_duplicates(pool, vectors=x)
    frame = map_view.map_frame(pool.frame, x, np.zeros(12, dtype=int), None, dups)
    assert frame["near_dup"].tolist().count(neardup_view.KEPT) == 2
    assert frame["near_dup"].tolist().count(neardup_view.NEAR) == 4
    assert frame["hover"].iloc[0].startswith("<b>near-duplicate group 1: kept (3 more)</b><br>")
    assert frame["hover"].iloc[11].startswith("<b>near-duplicate group 2: cosine ")
    assert frame["hover"].iloc[1] == map_view.hover_text("Question number 1")
    fig = map_view.map_figure(frame, color_by="neardup")
    names = {t.name: len(t.x) for t in fig.data}
    assert names == {f"{neardup_view.NONE} (6)": 6, f"{neardup_view.KEPT} (2)": 2, f"{neardup_view.NEAR} (4)": 4}
    assert [t.name.split(" (")[0] for t in fig.data] == list(neardup_view.ROLES), "the groups are drawn on top"
    plain = map_view.map_frame(pool.frame, x, np.zeros(12, dtype=int), None)
    assert set(plain["near_dup"]) == {neardup_view.NONE}


def test_results_stay_frozen() -> None:
    dups = NearDuplicates(0.95, 2, (("a", "b"),), ((0.97,),), 0.0)
    with pytest.raises(AttributeError):
        dups.tau = 0.5  # type: ignore[misc]


# -- the pages, through Streamlit's AppTest (the browser test drives them in Chromium) -------------------------------


class PlantedEmbedder(FakeEmbedder):
    """FakeEmbedder, but "... (again)" embeds as the text without it: a planted near-duplicate per such row."""

    model_id = "planted-embedder"

    def encode(self, texts):  # noqa: ANN001, ANN201
        return super().encode([t.replace(" (again)", "") for t in texts])


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A workspace whose only pool has 3 planted near-duplicates of 2 rows, and the app using PlantedEmbedder."""
    import streamlit as st

    from app_pages import _shared

    st.cache_data.clear()
    st.cache_resource.clear()
    rows = [f"Name a city in country {i}" for i in range(30)]
    rows += [f"{rows[3]} (again)", f"{rows[10]} (again)", f"{rows[3]} (again) (again)"]
    pool = load_pool(pd.DataFrame({"instruction": rows}), name="planted")
    Store().save_pool(pool)
    embedder = PlantedEmbedder()
    monkeypatch.setattr(_shared, "embedder", lambda: embedder)
    monkeypatch.setattr(_shared, "warm_up", lambda: None)
    return {"pool": pool, "embedder": embedder}


def run_page(page: str):  # noqa: ANN201 - an AppTest
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["map_layout"] = "pca"
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def test_the_data_page_embeds_on_request_shows_the_groups_and_keeps_one_per_group(app: dict) -> None:
    at = run_page("app_pages/data.py")  # the Map page opened first and embedded the pool
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Near-duplicate groups"] == "2" and metrics["Rows in groups"] == "5"
    assert metrics["Rows 'keep one per group' drops"] == "3"
    table = next(d.value for d in at.dataframe if "role" in d.value.columns)
    assert table["instruction"].tolist()[:3] == ["Name a city in country 3", "Name a city in country 3 (again)",
                                                 "Name a city in country 3 (again) (again)"]
    keep = at.button(key="data_neardup_keep")
    assert keep.label == "Keep one per group: save a pool of 30 rows and open it"
    keep.click().run()
    assert not at.exception, at.exception
    from app_pages import _shared

    opened = _shared.pool(at.session_state["pool_id"])
    assert opened.name == "planted (one per near-duplicate group, τ=0.95)" and len(opened.frame) == 30
    assert "(again)" not in " ".join(opened.frame["instruction"])
    assert {m.label: m.value for m in at.metric}["Near-duplicate groups"] == "0"
    assert len(Store().list_pools()) == 2


def test_the_data_page_asks_before_embedding_a_new_pool(app: dict) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("app_pages/data.py").run()  # straight to Data: nothing embedded yet
    assert not at.exception, at.exception
    assert app["embedder"].calls == 0 and "not embedded with planted-embedder yet" in at.info[-1].value
    at.slider(key="data_neardup_tau").set_value(0.99).run()
    at.button(key="data_neardup_embed").click().run()
    assert not at.exception, at.exception
    assert app["embedder"].calls == 33
    assert {m.label: m.value for m in at.metric}["Near-duplicate groups"] == "2"
    assert at.session_state["near_dup_tau"] == 0.99


def test_the_map_page_colours_the_groups_and_its_tau_is_the_data_pages(app: dict) -> None:
    at = run_page("app_pages/map.py")
    assert at.expander[1].label.startswith("Near-duplicates: 2 near-duplicate groups at cosine ≥ 0.95 hold 5 of 33")
    at.slider(key="map_neardup_tau").set_value(0.9).run()
    at.button_group(key="map_color_by").set_value("neardup").run()
    assert not at.exception, at.exception
    assert at.session_state["near_dup_tau"] == 0.9
    assert any("Blue: the row each group keeps" in c.value for c in at.caption)
    at.switch_page("app_pages/data.py").run()
    assert at.slider(key="data_neardup_tau").value == 0.9


def test_a_pool_above_the_automatic_size_is_searched_on_request(app: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from app_pages import _map

    monkeypatch.setattr(_map, "AUTO_ROWS", 10)  # the app's default is 20,000: the same path at 33 rows
    at = run_page("app_pages/map.py")
    assert at.expander[1].label == "Near-duplicates: not searched yet at this τ"
    assert any("compares every pair of the 33 rows" in i.value for i in at.info)
    at.button_group(key="map_color_by").set_value("neardup").run()
    assert any("not searched yet" in i.value for i in at.info)
    at.button(key="map_neardup_search").click().run()
    assert not at.exception, at.exception
    assert {m.label: m.value for m in at.metric}["Near-duplicate groups"] == "2"
    at.switch_page("app_pages/data.py").run()  # remembered: no second search, no button
    assert {m.label: m.value for m in at.metric}["Near-duplicate groups"] == "2"


def test_the_result_cache_is_read_without_searching(tmp_path: Path) -> None:
    pool, x = planted()
    assert neardup.cached_near_duplicates(pool, vectors=x, cache_root=tmp_path) is None
    found = pool_near_duplicates(pool, vectors=x, cache_root=tmp_path)
    again = neardup.cached_near_duplicates(pool, vectors=x, cache_root=tmp_path)
    assert again is not None and again.from_cache and again.groups == found.groups
    assert neardup.cached_near_duplicates(pool, vectors=x, tau=0.9, cache_root=tmp_path) is None
