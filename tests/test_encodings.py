"""Forgiving decoding: text that is not UTF-8 is read as Windows-1252 (Latin-1 for the five bytes cp1252 leaves
undefined) and the report names the encoding; NUL bytes are removed from values and their rows listed. Binary data,
NUL-heavy files and truncated gzip still fail with a PoolError that says what the file is and how to fix it.

Every fixture is built inline from real-looking instructions (one is a real Dolly row) encoded in the test.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from selectllm_core.cli import main
from selectllm_core.errors import PoolError
from selectllm_core.pool.load import load_pool

ROWS = [  # (instruction, input); every character is in cp1252
    ("Écris une phrase sur l’été à Paris pour 5 €.", ""),
    ("Beschreibe die Größe eines Fußballfelds – in „Metern“.", "Länge: 105 m"),
    ("¿Cuál es la mejor época para visitar Sevilla?", "Responde en español, por favor."),
    ("Which author wrote the ‘Winnie-the-Pooh’ books?", ""),  # a real Dolly instruction
]
CP1252_NOTE = "read as Windows-1252 (cp1252), not UTF-8"
LEAKS = re.compile(r"Traceback|File \"|\b\w*(Error|Exception)\b|<class ")


def csv_text(rows: list[tuple[str, str]], delimiter: str = ",") -> str:
    """The rows as CSV text with an instruction,input header."""
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows([("instruction", "input"), *rows])
    return out.getvalue()


def jsonl_text(rows: list[tuple[str, str]]) -> str:
    """The rows as JSON Lines, non-ASCII written as is (not \\u escapes)."""
    return "".join(json.dumps({"instruction": i, "input": x}, ensure_ascii=False) + "\n" for i, x in rows)


def json_text(rows: list[tuple[str, str]]) -> str:
    """The rows as one JSON document, non-ASCII written as is."""
    return json.dumps([{"instruction": i, "input": x} for i, x in rows], ensure_ascii=False, indent=1)


def spec_id(instruction: str, input_: str) -> str:
    """The id rule written out independently of the module: sha256 of the decoded text."""
    return hashlib.sha256((instruction + "\x1f" + input_).encode("utf-8")).hexdigest()[:16]


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def notes_with(pool: object, needle: str) -> list[str]:
    return [note for note in pool.report.notes if needle in note]


def upload(name: str, data: bytes) -> io.BytesIO:
    """What the app's uploader passes to load_pool: an open binary file with a .name."""
    handle = io.BytesIO(data)
    handle.name = name
    return handle


# --- cp1252 and Latin-1 --------------------------------------------------------------------------------------------


def test_a_cp1252_csv_loads_with_its_accents_quotes_and_euro_sign_and_the_report_names_the_encoding(
        tmp_path: Path) -> None:
    path = write(tmp_path, "windows.csv", csv_text(ROWS).encode("cp1252"))
    pool = load_pool(path)
    assert list(zip(pool.frame["instruction"], pool.frame["input"], strict=True)) == ROWS
    first = pool.frame["instruction"].iloc[0]
    assert "é" in first and "’" in first and "€" in first
    (note,) = notes_with(pool, CP1252_NOTE)
    assert "the first non-UTF-8 byte is 0xC9 on line 2" in note  # "É" of the first data row
    assert "check accented letters in the preview; re-save as UTF-8 to silence this note" in note
    assert "Latin-1" not in note and str(path) in note
    assert pool.report.rows_kept == 4 and pool.report.bad_rows == []


@pytest.mark.parametrize("name", ["windows.csv", "windows.tsv", "windows.jsonl", "windows.json", "windows.jsonl.gz",
                                  "windows.csv.gz"])
def test_cp1252_and_utf8_copies_of_a_pool_load_the_same_text_and_ids(tmp_path: Path, name: str) -> None:
    make = {".csv": csv_text, ".tsv": lambda r: csv_text(r, "\t"), ".jsonl": jsonl_text, ".json": json_text}
    text = make[Path(name.removesuffix(".gz")).suffix](ROWS)
    legacy = load_pool(write(tmp_path, name, text.encode("cp1252")))
    utf8 = load_pool(write(tmp_path, "utf8_" + name, text.encode("utf-8")))
    columns = ["id", "instruction", "input", "text"]
    assert legacy.frame[columns].equals(utf8.frame[columns])
    assert legacy.frame["id"].tolist() == [spec_id(i, x) for i, x in ROWS]
    assert len(notes_with(legacy, CP1252_NOTE)) == 1 and not notes_with(utf8, "cp1252")


def test_the_five_bytes_cp1252_leaves_undefined_are_read_as_latin1_and_named(tmp_path: Path) -> None:
    # 0x80 is the euro sign in cp1252; 0x81 and 0x9D have no cp1252 meaning, so they are read as Latin-1 (U+0081..)
    data = b"instruction,input\nPrice: 5 \x80 plus tax.,\nOdd \x81 byte and \x9d here.,caf\xe9\n"
    pool = load_pool(write(tmp_path, "edge.csv", data))
    assert pool.frame["instruction"].tolist() == ["Price: 5 € plus tax.", "Odd \x81 byte and \x9d here."]
    assert pool.frame["input"].tolist() == ["", "café"]
    (note,) = notes_with(pool, "Windows-1252 (cp1252)")
    assert "Latin-1 for the byte(s) 0x81, 0x9D that cp1252 leaves undefined" in note
    assert "the first non-UTF-8 byte is 0x80 on line 2" in note


def test_a_file_mixing_utf8_and_cp1252_lines_reads_each_line_in_its_own_encoding(tmp_path: Path) -> None:
    data = (jsonl_text(ROWS[:2]).encode("utf-8") + jsonl_text(ROWS[2:]).encode("cp1252"))
    pool = load_pool(write(tmp_path, "mixed.jsonl", data))
    assert list(zip(pool.frame["instruction"], pool.frame["input"], strict=True)) == ROWS
    (note,) = notes_with(pool, CP1252_NOTE)
    assert "on line 3" in note and "2 line(s) that are valid UTF-8 were read as UTF-8" in note


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"])
def test_a_clean_utf8_file_gets_no_encoding_or_nul_note(tmp_path: Path, bom: bytes) -> None:
    pool = load_pool(write(tmp_path, "clean.csv", bom + csv_text(ROWS).encode("utf-8")))
    assert list(pool.frame["instruction"]) == [i for i, _ in ROWS]
    assert not [n for n in pool.report.notes if re.search("cp1252|Windows-1252|Latin-1|UTF-8|NUL", n)]


def test_an_upload_of_cp1252_bytes_loads_with_the_encoding_note() -> None:
    pool = load_pool(upload("mine.csv", csv_text(ROWS).encode("cp1252")))
    assert pool.frame["instruction"].tolist() == [i for i, _ in ROWS]
    assert any(note.startswith("mine.csv: " + CP1252_NOTE) for note in pool.report.notes), pool.report.notes


# --- NUL bytes -----------------------------------------------------------------------------------------------------


def test_nul_bytes_in_csv_cells_are_removed_and_their_rows_listed(tmp_path: Path) -> None:
    rows = [(f"Write sentence number {n} about the sea.", "") for n in range(1, 10)]
    rows[1] = ("Write sentence\x00 number 2 about the sea.", "")
    rows[4] = ("Write sentence number 5 about the sea.", "ctx\x00\x00")
    rows[8] = ("\x00Write sentence number 9 about the sea.", "")
    pool = load_pool(write(tmp_path, "nul.csv", csv_text(rows).encode("utf-8")))
    assert pool.frame["instruction"].tolist() == [f"Write sentence number {n} about the sea." for n in range(1, 10)]
    assert pool.frame["input"].iloc[4] == "ctx"
    assert pool.frame["id"].iloc[1] == spec_id("Write sentence number 2 about the sea.", "")
    (note,) = notes_with(pool, "NUL bytes removed")
    assert "NUL bytes removed from 3 row(s): 2, 5, 9." in note
    assert pool.report.rows_kept == 9 and pool.report.bad_rows == []


def test_nul_bytes_in_jsonl_values_are_removed_and_record_numbers_skip_blank_lines(tmp_path: Path) -> None:
    lines = ["\x00" + json.dumps({"instruction": "First."}), "",
             json.dumps({"instruction": "Second."}).replace("nd", "nd\x00"),
             json.dumps({"instruction": "Third.", "input": "x"}).replace("x", "\x00x\x00")]
    pool = load_pool(write(tmp_path, "nul.jsonl", "\n".join(lines).encode("utf-8") + b"\n"))
    assert pool.frame["instruction"].tolist() == ["First.", "Second.", "Third."]
    assert pool.frame["input"].tolist() == ["", "", "x"]
    (note,) = notes_with(pool, "NUL bytes removed")
    assert "from 3 row(s): 1, 2, 3." in note  # data records, the blank line not counted


def test_nul_bytes_in_a_json_document_are_removed_and_the_list_items_listed(tmp_path: Path) -> None:
    # json.dumps would escape a NUL as \u0000 (a deliberate value, kept); a raw NUL byte is what gets removed
    text = json_text([("One.", ""), ("Two@.", ""), ("Three.", "@")]).replace("@", "\x00")
    pool = load_pool(write(tmp_path, "nul.json", text.encode("utf-8")))
    assert pool.frame["instruction"].tolist() == ["One.", "Two.", "Three."]
    assert pool.frame["input"].tolist() == ["", "", ""]
    assert len(notes_with(pool, "NUL bytes removed from 2 row(s): 2, 3.")) == 1


def test_a_nul_in_the_header_and_nul_padding_at_the_end_are_removed_with_notes(tmp_path: Path) -> None:
    data = csv_text(ROWS).replace("instruction", "instruc\x00tion", 1).encode("utf-8") + b"\x00" * 3000
    pool = load_pool(write(tmp_path, "padded.csv", data))
    assert pool.frame["instruction"].tolist() == [i for i, _ in ROWS]
    assert len(notes_with(pool, "NUL bytes removed from the header")) == 1
    assert len(notes_with(pool, "removed 3,000 NUL byte(s) padding the end of the file")) == 1


def test_an_upload_with_a_nul_byte_in_a_cp1252_cell_gets_both_notes() -> None:
    data = csv_text([("Caf\x00é au lait.", ""), ("Thé.", "")]).encode("cp1252")
    pool = load_pool(upload("both.csv", data))
    assert pool.frame["instruction"].tolist() == ["Café au lait.", "Thé."]
    assert notes_with(pool, CP1252_NOTE) and notes_with(pool, "NUL bytes removed from 1 row(s): 1.")


# --- still errors --------------------------------------------------------------------------------------------------

_TEXT = csv_text(ROWS * 40)
BROKEN = {
    "png.csv": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + random.Random(1).randbytes(500),
                ("a PNG image", "not a picture")),
    "jpeg.jsonl": (b"\xff\xd8\xff\xe0\x00\x10JFIF" + random.Random(2).randbytes(500), ("a JPEG image",)),
    "database.csv": (b"SQLite format 3\x00" + bytes(4000), ("an SQLite database", "sqlite3 -header -csv")),
    "random.csv": (random.Random(3).randbytes(4096), ("binary file", "UTF-8")),
    "random_no_nul.tsv": (random.Random(4).randbytes(4096).replace(b"\x00", b"\x01"), ("binary file", "UTF-8")),
    "mostly_nul.jsonl": (b'{"instruction": "x"}' + bytes(3000) + b"\x01\x02" * 20,
                         ("binary file", "% of its bytes are NUL")),
    "all_nul.csv": (bytes(5000), ("only NUL bytes", "Export the pool again")),
    "utf16le_no_bom.csv": (_TEXT.encode("utf-16-le"), ("UTF-16 text without a byte-order mark", "iconv -f utf-16le")),
    "utf16be_no_bom.csv": (_TEXT.encode("utf-16-be"), ("UTF-16 text without a byte-order mark", "iconv -f utf-16be")),
    "binary_tail.csv": (_TEXT.encode("cp1252") + random.Random(5).randbytes(9000),
                        ("binary file", "bytes from byte offset 8,192 are control bytes")),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_binary_and_nul_heavy_files_still_fail_with_a_clear_message(tmp_path: Path, name: str) -> None:
    data, needles = BROKEN[name]
    with pytest.raises(PoolError) as err:
        load_pool(write(tmp_path, name, data))
    message = str(err.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert name in message and not LEAKS.search(message), message


def test_a_truncated_gzip_of_cp1252_text_still_fails_clearly(tmp_path: Path) -> None:
    whole = gzip.compress(csv_text(ROWS * 50).encode("cp1252"))
    path = write(tmp_path, "cut.csv.gz", b"")
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PoolError, match=r"cut\.csv\.gz is a truncated or corrupt gzip file .*Download or copy it"):
        load_pool(path)


def test_a_cp1252_file_without_an_instruction_column_still_fails_clearly(tmp_path: Path) -> None:
    data = "question,réponse\nQuel âge as-tu ?,Vingt ans.\n".encode("cp1252")
    with pytest.raises(PoolError, match="no instruction column.*'question', 'réponse'"):
        load_pool(write(tmp_path, "fr.csv", data))


# --- CLI -----------------------------------------------------------------------------------------------------------


def test_selectllm_load_prints_the_encoding_and_nul_notes(tmp_path: Path) -> None:
    rows = [*ROWS[:2], ("Nenne drei Städte\x00 in Österreich.", "")]
    path = write(tmp_path, "pool.csv", csv_text(rows).encode("cp1252"))
    result = CliRunner().invoke(main, ["load", str(path), "--workspace", str(tmp_path / "ws.sqlite")])
    assert result.exit_code == 0, result.output
    assert "3 rows kept of 3 read" in result.output
    assert f"note: {path}: {CP1252_NOTE} (the first non-UTF-8 byte is 0xC9 on line 2)" in result.output
    assert "note: " + f"{path}: NUL bytes removed from 1 row(s): 3." in result.output


def test_selectllm_load_of_a_binary_file_exits_with_the_message_not_a_traceback(tmp_path: Path) -> None:
    path = write(tmp_path, "image.csv", b"\x89PNG\r\n\x1a\n" + random.Random(6).randbytes(300))
    result = CliRunner().invoke(main, ["load", str(path), "--workspace", str(tmp_path / "ws.sqlite")])
    assert result.exit_code != 0
    assert "image.csv is a PNG image, not a CSV file" in result.output
    assert "Traceback" not in result.output
