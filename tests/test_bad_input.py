"""Malformed and awkward pool files: each one either loads with exact report counts or fails with a PoolError that
names the file, the row or column at fault and the fix, without leaking a traceback or a library exception name.

The inputs live in tests/fixtures/bad_inputs/ (rebuilt by tests/fixtures/make_bad_inputs.py); the big ones are
generated into tmp_path by the tests below.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from selectllm_core.errors import PoolError
from selectllm_core.pool.load import LONG_TEXT, load_pool

FIXTURES = Path(__file__).parent / "fixtures"
BAD = FIXTURES / "bad_inputs"
LEAKS = re.compile(r"Traceback|File \"|line \d+, in |\b\w*(Error|Exception)\b|ArrowInvalid|<class |pandas|pyarrow")


@dataclass(frozen=True)
class Loads:
    """The file loads; these are its report counts (bad: row number and a substring of its message)."""

    read: int
    kept: int
    empty: int = 0
    dup: int = 0
    bad: tuple[tuple[int, str], ...] = ()
    note: str | None = None
    instructions: tuple[str, ...] | None = None
    inputs: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Fails:
    """The file raises PoolError; its message contains every needle."""

    needles: tuple[str, ...]


def fails(*needles: str) -> Fails:
    return Fails(needles)


CASES: dict[str, Loads | Fails] = {
    # encodings
    "cp1252.csv": Loads(2, 2, note="read as Windows-1252 (cp1252), not UTF-8 (the first non-UTF-8 byte is 0xE9 on "
                                   "line 3)",
                        instructions=("Name a French dish.", "Describe a café in Paris.")),
    "latin1_in_gzip.jsonl.gz": Loads(2, 2, note="(cp1252), not UTF-8 (the first non-UTF-8 byte is 0xE8 on line 2)",
                                     instructions=("Ok.", "Crème brûlée.")),
    "utf8_bom.csv": Loads(2, 2, instructions=("Say hello.", "Translate to French."), inputs=("", "Good morning")),
    "utf16_bom.tsv": Loads(2, 2, note="UTF-16", instructions=("Say hello.", "Translate to German.")),
    "binary_garbage.csv": fails("binary file", "UTF-8"),
    "binary_without_nul.jsonl": fails("binary file", "UTF-8"),
    # line endings and quoting
    "mixed_line_endings.csv": Loads(3, 3, instructions=("First row.", "Second row.", "Third row."),
                                    inputs=("", "x", "two\r\nlines")),
    "mixed_line_endings.jsonl": Loads(3, 3, instructions=("First.", "Second.", "Third.")),
    "unterminated_quote.csv": fails("unterminated quote", "starting on line 3", '("")'),
    "stray_quote.csv": fails("bad quoting", "line 2", '("")'),
    "ragged.tsv": Loads(3, 2, bad=((2, "line 3: 4 fields but the header has 3"),), note="fewer fields than the header",
                        instructions=("Fine.", "Short row."), inputs=("", "")),
    "semicolon.csv": Loads(2, 2, note="semicolon-separated", inputs=("", "Hello")),
    "duplicate_header.csv": Loads(1, 1, note="'input_2'", inputs=("first",)),
    # empty files and missing structure
    "empty.csv": fails("empty", "0 bytes"),
    "whitespace_only.jsonl": fails("is empty"),
    "header_only.csv": fails("no data rows", "('instruction', 'input', 'output')", "Add rows"),
    "missing_instruction.csv": fails("no instruction column", "'question', 'answer'", "--instruction-column question"),
    "no_header_row.csv": fails("no instruction column", "lack a header row"),
    "all_empty_instructions.csv": fails("all 2 rows have an empty instruction", "--instruction-column"),
    # values
    "numeric_instructions.jsonl": Loads(3, 3, instructions=("42", "3.5", "True"), inputs=("7", "", "")),
    "nan_none.jsonl": Loads(6, 2, empty=4, instructions=("Keep me.", "Keep me too."), inputs=("", "")),
    "nan_none.csv": Loads(5, 3, empty=2, instructions=("NaN", "None", "Real row."), inputs=("", "", "NA")),
    "nested_json.jsonl": Loads(4, 2, bad=((1, "line 1: column 'instruction' holds a JSON object"),
                                          (2, "line 2: column 'instruction' holds a JSON list")),
                               instructions=("Fine.", "Also fine.")),
    "non_json_lines.jsonl": Loads(6, 3, bad=((2, "line 2: not valid JSON"), (4, "line 4: not valid JSON"),
                                             (6, "line 6: a JSON list, not an object")),
                                  instructions=("Good one.", "Good two.", "Good three.")),
    # ids
    "duplicate_ids.csv": fails("repeats ids", "'1' on rows 1, 3", "'2' on rows 2, 5", "id=None"),
    "empty_id.jsonl": Loads(3, 2, bad=((2, "line 2: the id column 'id' is empty"),)),
    # disguised and broken containers
    "excel_renamed.csv": fails("Excel workbook", "CSV UTF-8"),
    "legacy_excel_renamed.csv": fails("legacy Excel", "CSV UTF-8"),
    "zip_archive.csv": fails("zip archive", "Extract the pool file"),
    "bzip2_renamed.csv": fails("bzip2-compressed", "gzip"),
    "truncated.jsonl.gz": fails("truncated or corrupt gzip", "again"),
    "not_gzipped.jsonl.gz": Loads(2, 2, note="not compressed"),
    "pool.txt": fails("Cannot tell the format", ".jsonl"),
    # Parquet
    "int_instruction.parquet": Loads(3, 2, empty=1, instructions=("101", "102"), inputs=("a", "")),
    "struct_instruction.parquet": fails("'instruction'", "nested objects", "--instruction-column"),
    "truncated.parquet": fails("not a readable Parquet file", "magic bytes", "Re-export"),
    "csv_named.parquet": fails("not a Parquet file", "'instruction,input'", "extension"),
    # JSON shapes
    "object_not_list.json": fails("JSON object", "'name', 'version', 'rows'", "JSON Lines"),
    "wrapped_data.json": Loads(2, 2, note="under the key 'data'", instructions=("One.", "Two.")),
    "json_list_of_strings.json": fails("none of its 2 rows is usable", "row 1: list item 1 is a JSON string"),
    "truncated.json": fails("not valid JSON", "line 2, column 18", "cut short"),
    "jsonl_named.json": Loads(2, 2, note="JSON Lines"),
    "pretty_json_named.jsonl": Loads(2, 2, note="one JSON document, not JSON Lines", instructions=("One.", "Two.")),
}


def check(path: Path, expected: Loads | Fails) -> None:
    """Load `path` and compare with the expectation; every PoolError must be clean and name the file."""
    if isinstance(expected, Fails):
        with pytest.raises(PoolError) as err:
            load_pool(path)
        message = str(err.value)
        for needle in expected.needles:
            assert needle in message, f"{needle!r} not in {message!r}"
        assert path.name in message
        assert not LEAKS.search(message), message
        return
    pool = load_pool(path)
    report = pool.report
    counts = (report.rows_read, report.rows_kept, report.empty_dropped, report.duplicates_dropped, len(report.bad_rows))
    assert counts == (expected.read, expected.kept, expected.empty, expected.dup, len(expected.bad))
    dropped = report.empty_dropped + report.duplicates_dropped + len(report.bad_rows)
    assert report.rows_read == report.rows_kept + dropped
    for (row, message), (want_row, needle) in zip(report.bad_rows, expected.bad, strict=True):
        assert row == want_row and needle in message, (row, message)
        assert not LEAKS.search(message), message
    if expected.note:
        assert any(expected.note in note for note in report.notes), report.notes
    if expected.instructions is not None:
        assert tuple(pool.frame["instruction"]) == expected.instructions
    if expected.inputs is not None:
        assert tuple(pool.frame["input"]) == expected.inputs


@pytest.mark.parametrize(("name", "expected"), list(CASES.items()), ids=list(CASES))
def test_bad_input(name: str, expected: Loads | Fails) -> None:
    check(BAD / name, expected)


def test_every_fixture_has_a_case() -> None:
    assert sorted(p.name for p in BAD.iterdir()) == sorted(CASES)


def test_a_folder_and_a_missing_path_fail_clearly() -> None:
    check(BAD, fails("is a folder, not a file"))
    check(BAD / "does_not_exist.csv", fails("No file at", "Check the path"))


def test_non_json_lines_are_reported_with_their_first_60_characters() -> None:
    lines = (BAD / "non_json_lines.jsonl").read_text().splitlines()
    bad = dict(load_pool(BAD / "non_json_lines.jsonl").report.bad_rows)
    assert len(lines[3]) > 60 and repr(lines[3][:60] + "...") in bad[4]
    assert repr(lines[1]) in bad[2]  # shorter than 60 characters: shown whole


def test_nested_extra_values_become_json_strings() -> None:
    frame = load_pool(BAD / "nested_json.jsonl").frame
    assert json.loads(frame["meta"].iloc[0]) == {"source": "web", "tags": ["a", "b"]}
    assert frame["meta"].iloc[1] is None


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_one_megabyte_single_row_loads_in_full(tmp_path: Path, suffix: str) -> None:
    # commas, quotes and newlines force CSV quoting; 1 MB is far above the csv module's default field limit
    instruction = ('Summarize, "carefully", this:\n' + "lorem ipsum " * 90_000)[:1_000_000]
    path = tmp_path / f"big{suffix}"
    if suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([["instruction", "input"], [instruction, "x"]])
    else:
        path.write_text(json.dumps({"instruction": instruction, "input": "x"}) + "\n", encoding="utf-8")
    assert 1_000_000 <= path.stat().st_size < 1_100_000
    pool = load_pool(path)
    assert pool.frame["instruction"].tolist() == [instruction]
    assert pool.report.rows_kept == 1
    assert any("kept in full" in note for note in pool.report.notes)


def test_a_200k_character_instruction_is_not_truncated(tmp_path: Path) -> None:
    long = "Translate the following paragraph into French. " * 4300
    long = long[:200_000]
    rows = [{"instruction": "Short one."}, {"instruction": long, "input": "ctx"}, {"instruction": "Short two."}]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pool = load_pool(path)
    assert pool.frame["instruction"].str.len().tolist() == [10, 200_000, 10]
    assert pool.frame["text"].iloc[1].endswith("### Input: ctx\n\n### Response:")
    notes = [n for n in pool.report.notes if f"{LONG_TEXT:,} characters" in n]
    assert len(notes) == 1 and "1 row(s)" in notes[0]


def test_fixture_files_stay_small() -> None:
    files = [p for p in FIXTURES.rglob("*") if p.is_file()]
    assert all(p.stat().st_size < 1_200_000 for p in files)
    assert sum(p.stat().st_size for p in files) < 4_000_000
