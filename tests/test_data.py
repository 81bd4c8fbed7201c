"""Pool loading on good inputs: every schema and format, stable ids, dropped rows, extra columns, real data."""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from selectllm_core.errors import PoolError
from selectllm_core.pool.load import ColumnMap, content_id, detect_columns, format_text, load_pool, read_table

POOLS = Path(__file__).parent / "fixtures" / "pools"
ALPACA_FILES = ["alpaca.jsonl", "alpaca.jsonl.gz", "alpaca.json", "alpaca.csv", "alpaca.csv.gz", "alpaca.tsv",
                "alpaca.parquet"]


def jsonl_rows(path: Path) -> list[dict]:
    """Rows of a JSONL fixture, read without the loader."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def spec_id(instruction: str, input_: str) -> str:
    """The id rule of the spec, written out independently of the module."""
    return hashlib.sha256((instruction + "\x1f" + input_).encode("utf-8")).hexdigest()[:16]


def test_format_text_matches_the_paper_layout() -> None:
    assert format_text("Name a color.") == "### Instruction: Name a color.\n\n### Response:"
    assert format_text("Translate.", "Hello") == "### Instruction: Translate.\n\n### Input: Hello\n\n### Response:"


@pytest.mark.parametrize("name", ALPACA_FILES)
def test_alpaca_rows_load_identically_from_every_format(name: str) -> None:
    expected = jsonl_rows(POOLS / "alpaca.jsonl")
    pool = load_pool(POOLS / name)
    frame, report = pool.frame, pool.report
    assert report.schema == "alpaca"
    assert report.columns == ColumnMap(instruction="instruction", input="input", id=None)
    assert list(frame.columns) == ["id", "instruction", "input", "text", "output"]
    assert frame["instruction"].tolist() == [r["instruction"] for r in expected]
    assert frame["input"].tolist() == [r["input"] for r in expected]
    assert frame["output"].tolist() == [r["output"] for r in expected]
    assert frame["id"].tolist() == [spec_id(r["instruction"], r["input"]) for r in expected]
    assert frame["text"].tolist() == [format_text(r["instruction"], r["input"]) for r in expected]
    assert (report.rows_read, report.rows_kept, report.duplicates_dropped, report.empty_dropped) == (30, 30, 0, 0)
    assert report.bad_rows == []
    assert pool.name == "alpaca"


def test_ids_and_pool_id_are_stable_across_loads_and_formats() -> None:
    first, again = load_pool(POOLS / "alpaca.csv"), load_pool(POOLS / "alpaca.csv")
    other = load_pool(POOLS / "alpaca.parquet")
    assert first.frame["id"].tolist() == again.frame["id"].tolist() == other.frame["id"].tolist()
    assert first.pool_id == again.pool_id == other.pool_id
    # the identity covers content: the spec, written out independently of the code
    extras = [c for c in first.frame.columns if c not in ("id", "instruction", "input", "text")]
    lines = [json.dumps([r["id"], r["instruction"], r["input"], {c: r[c] for c in extras}], ensure_ascii=False,
                        sort_keys=True, separators=(",", ":")) + "\n" for r in first.frame.to_dict("records")]
    assert first.pool_id == hashlib.sha256("".join(lines).encode()).hexdigest()[:16]
    assert content_id("a", "b") == spec_id("a", "b") != content_id("ab", "")


def test_pool_id_depends_on_row_order() -> None:
    rows = pd.DataFrame(jsonl_rows(POOLS / "alpaca.jsonl"))
    forward = load_pool(rows)
    backward = load_pool(rows.iloc[::-1])
    assert sorted(forward.frame["id"]) == sorted(backward.frame["id"])
    assert forward.pool_id != backward.pool_id


def test_dolly_schema_maps_context_to_input_and_keeps_the_rest() -> None:
    expected = jsonl_rows(POOLS / "dolly.jsonl")
    pool = load_pool(POOLS / "dolly.jsonl")
    assert pool.report.schema == "dolly"
    assert pool.report.columns == ColumnMap(instruction="instruction", input="context", id=None)
    assert list(pool.frame.columns) == ["id", "instruction", "input", "text", "response", "category"]
    assert pool.frame["input"].tolist() == [r["context"] for r in expected]
    assert (pool.frame["input"] != "").sum() == sum(1 for r in expected if r["context"]) > 0
    assert pool.frame["category"].tolist() == [r["category"] for r in expected]
    with_input = pool.frame[pool.frame["input"] != ""].iloc[0]
    assert "\n\n### Input: " in with_input["text"]


@pytest.mark.parametrize("name", ["self_instruct.jsonl", "self_instruct.parquet"])
def test_self_instruct_takes_the_first_instance_input_and_the_id_column(name: str) -> None:
    expected = jsonl_rows(POOLS / "self_instruct.jsonl")
    pool = load_pool(POOLS / name)
    frame = pool.frame
    assert pool.report.schema == "self-instruct"
    assert pool.report.columns == ColumnMap(instruction="instruction", input="instances", id="id")
    assert frame["id"].tolist() == [r["id"] for r in expected]
    assert frame["input"].tolist() == [r["instances"][0]["input"] for r in expected]
    # the instances (with their outputs) stay, as JSON text that round-trips
    assert [json.loads(v) for v in frame["instances"]] == [r["instances"] for r in expected]
    assert frame["is_classification"].tolist() == [r["is_classification"] for r in expected]
    assert frame["name"].tolist() == [r["name"] for r in expected]


def test_prompt_schema_uses_the_id_column() -> None:
    raw = pd.read_csv(POOLS / "xstest.csv", dtype=str, keep_default_na=False)
    pool = load_pool(POOLS / "xstest.csv")
    assert pool.report.schema == "prompt"
    assert pool.report.columns == ColumnMap(instruction="prompt", input=None, id="id")
    assert pool.frame["id"].tolist() == raw["id"].tolist()
    assert pool.frame["instruction"].tolist() == raw["prompt"].tolist()
    assert (pool.frame["input"] == "").all()
    assert list(pool.frame.columns[4:]) == ["type", "label", "focus", "note"]


def test_text_schema_reads_the_text_column_and_rebuilds_text() -> None:
    raw = pd.read_csv(POOLS / "text.tsv", sep="\t", dtype=str, keep_default_na=False)
    pool = load_pool(POOLS / "text.tsv")
    assert pool.report.schema == "text"
    assert pool.frame["instruction"].tolist() == raw["text"].tolist()
    assert pool.frame["text"].tolist() == [format_text(t) for t in raw["text"]]
    assert pool.frame["category"].tolist() == raw["category"].tolist()


def test_explicit_column_map_overrides_detection_and_renames_clashing_extras() -> None:
    pool = load_pool(POOLS / "xstest.csv", columns=ColumnMap(instruction="prompt", input="focus"))
    raw = read_table(POOLS / "xstest.csv")
    assert pool.report.schema == "custom"
    assert pool.frame["input"].tolist() == raw["focus"].tolist()
    # no id column mapped: ids come from the content, the source id is kept under another name
    assert pool.frame["id"].tolist() == [spec_id(p, f) for p, f in zip(raw["prompt"], raw["focus"], strict=True)]
    assert pool.frame["source_id"].tolist() == raw["id"].tolist()
    assert any("source_id" in note for note in pool.report.notes)


def test_explicit_map_equal_to_detection_keeps_the_schema_name() -> None:
    detected = load_pool(POOLS / "dolly.jsonl").report
    explicit = load_pool(POOLS / "dolly.jsonl", columns=ColumnMap("instruction", "context")).report
    assert (explicit.schema, explicit.columns) == (detected.schema, detected.columns) == ("dolly", explicit.columns)
    assert load_pool(POOLS / "dolly.jsonl", columns=ColumnMap("instruction")).report.schema == "custom"


def test_explicit_map_naming_a_missing_column_lists_the_columns() -> None:
    with pytest.raises(PoolError) as err:
        load_pool(POOLS / "xstest.csv", columns=ColumnMap(instruction="prompt", input="context"))
    message = str(err.value)
    assert "'context'" in message and "'id', 'prompt', 'type', 'label', 'focus', 'note'" in message
    assert "--input-column" in message


@pytest.mark.parametrize(
    ("columns", "schema", "mapping"),
    [
        (["Instruction", "Input", "Output"], "alpaca", ColumnMap("Instruction", "Input")),
        (["instruction", "output"], "alpaca", ColumnMap("instruction")),
        (["instruction", "context", "response", "category"], "dolly", ColumnMap("instruction", "context")),
        (["id", "instruction", "instances"], "self-instruct", ColumnMap("instruction", "instances", "id")),
        (["id", "prompt", "label"], "prompt", ColumnMap("prompt", None, "id")),
        (["text", "source"], "text", ColumnMap("text")),
        (["text", "instruction", "input"], "alpaca", ColumnMap("instruction", "input")),
    ],
)
def test_detect_columns(columns: list[str], schema: str, mapping: ColumnMap) -> None:
    assert detect_columns(pd.DataFrame(columns=columns)) == (schema, mapping)


def test_duplicates_and_empty_rows_are_dropped_and_counted(tmp_path: Path) -> None:
    rows = jsonl_rows(POOLS / "alpaca.jsonl")
    near = dict(rows[0], input="a different input")  # same instruction, other input: not a duplicate
    extra = [rows[0], rows[5], rows[5], {"instruction": "", "input": "x", "output": "y"},
             {"instruction": "   ", "input": "", "output": ""}, near]
    path = tmp_path / "pool.csv"
    pd.DataFrame(rows + extra).to_csv(path, index=False)
    pool = load_pool(path)
    report = pool.report
    assert (report.rows_read, report.duplicates_dropped, report.empty_dropped, report.rows_kept) == (36, 3, 2, 31)
    assert report.rows_read == report.rows_kept + report.duplicates_dropped + report.empty_dropped
    # the first copy stays, in source order
    assert pool.frame["instruction"].tolist()[:30] == [r["instruction"] for r in rows]
    assert pool.frame["input"].iloc[-1] == "a different input"
    assert pool.frame["id"].is_unique


def test_extra_columns_are_kept_and_export_ready() -> None:
    frame = pd.DataFrame({
        "instruction": ["One.", "Two.", "Three."],
        "meta": [{"src": "web", "tags": ["a"]}, None, ["x", 1]],
        "score": [3, 4, 5],
        "mixed": ["a", 2, None],
        "text": ["t1", "t2", "t3"],
    })
    pool = load_pool(frame, name="mine")
    out = pool.frame
    assert pool.name == "mine"
    assert list(out.columns) == ["id", "instruction", "input", "text", "meta", "score", "mixed", "source_text"]
    assert json.loads(out["meta"][0]) == {"src": "web", "tags": ["a"]} and out["meta"][1] is None
    assert json.loads(out["meta"][2]) == ["x", 1]
    assert out["score"].tolist() == [3, 4, 5] and pd.api.types.is_integer_dtype(out["score"])
    assert out["mixed"].tolist()[:2] == ["a", "2"]
    assert out["source_text"].tolist() == ["t1", "t2", "t3"]
    out.to_parquet(io.BytesIO())  # would raise on nested or mixed-type object columns
    out.to_csv(io.StringIO())


def test_load_pool_reads_an_uploaded_file_object() -> None:
    upload = io.BytesIO((POOLS / "alpaca.csv").read_bytes())
    upload.name = "uploaded.csv"
    pool = load_pool(upload)
    assert pool.frame["id"].tolist() == load_pool(POOLS / "alpaca.csv").frame["id"].tolist()
    assert pool.name == "uploaded"


def test_read_table_returns_raw_columns() -> None:
    raw = read_table(POOLS / "dolly.jsonl")
    assert list(raw.columns) == ["instruction", "context", "response", "category"]
    assert len(raw) == 30


def test_real_dolly_subset_loads_with_categories(shared_data: Path) -> None:
    path = shared_data / "dolly_alpagasus_3k.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    pool = load_pool(path)
    report = pool.report
    # 2,996 lines (README and `zcat | wc -l`); 15 of them repeat an earlier (instruction, input) pair exactly
    assert len(rows) == 2996
    assert (report.rows_read, report.rows_kept, report.duplicates_dropped, report.empty_dropped) == (2996, 2981, 15, 0)
    assert report.schema == "alpaca" and report.bad_rows == []
    assert list(pool.frame.columns) == ["id", "instruction", "input", "text", "category", "output"]
    kept: dict[tuple[str, str], str] = {}
    for r in rows:
        kept.setdefault((r["instruction"], r["input"]), r["category"])
    assert collections.Counter(pool.frame["category"]) == collections.Counter(kept.values())
    assert set(pool.frame["category"]) == {"open_qa", "classification", "general_qa", "brainstorming",
                                           "information_extraction", "closed_qa", "summarization",
                                           "creative_writing"}
    assert pool.frame["id"].is_unique
