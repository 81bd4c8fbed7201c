"""Export in chunks: every writer appends `CHUNK_ROWS` rows at a time and writes what a whole-frame write wrote.

The references below are the writers as they were before chunking (pandas' `to_csv` of the whole frame, `json.dumps`
of the whole task list, one record per JSONL line); the chunk size is cut to 7 rows so that 25 rows cross chunk
boundaries mid-file. XLSX is now written with XlsxWriter's constant_memory (inline strings), so it is compared cell
by cell, with its types, widths and formats. Also here: text that XlsxWriter would copy into the sheet as raw XML.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import openpyxl
import pandas as pd
import pytest
from test_export import _selection
from test_export_clients import _awkward_selection

from selectllm_core.errors import ExportError
from selectllm_core.runs import export
from selectllm_core.runs.export import export_frame, neutralize_formulas, write_export

RUN = "run-7"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "CHUNK_ROWS", 7)


def _frame() -> pd.DataFrame:
    """25 rows of formula-like, multi-line and non-ASCII text, numbers and missing values, in the export contract."""
    return export_frame(pd.concat([_selection(25), _awkward_selection()], ignore_index=True), run_id=RUN)


def _whole_csv(frame: pd.DataFrame, path: Path) -> None:
    neutralize_formulas(frame).to_csv(path, index=False, encoding=export.CSV_ENCODING, quoting=csv.QUOTE_NONNUMERIC,
                                      lineterminator="\r\n")


def _whole_jsonl(frame: pd.DataFrame, path: Path) -> None:
    lines = [export._line_safe(export._dumps(r)) + "\n" for r in export._records(frame)]
    path.write_text("".join(lines), encoding="utf-8", newline="\n")


def _whole_labelstudio(frame: pd.DataFrame, path: Path) -> None:
    tasks = [{"data": {k: v for k, v in r.items() if k not in ("run_id", "subset")},
              "meta": {"run_id": r["run_id"], "subset": r["subset"]}} for r in export._records(frame)]
    path.write_text(export._dumps(tasks) + "\n", encoding="utf-8", newline="\n")


@pytest.mark.parametrize(("fmt", "whole"), [("csv", _whole_csv), ("jsonl", _whole_jsonl),
                                             ("labelstudio", _whole_labelstudio)])
def test_chunked_writers_write_the_bytes_a_whole_frame_write_wrote(tmp_path: Path, fmt: str, whole) -> None:  # noqa: ANN001
    frame = _frame()
    assert len(frame) > 3 * export.CHUNK_ROWS
    export._WRITERS[fmt](frame, tmp_path / "chunked")
    whole(frame, tmp_path / "whole")
    assert (tmp_path / "chunked").read_bytes() == (tmp_path / "whole").read_bytes()


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "labelstudio", "xlsx"])
def test_a_header_only_file_still_has_its_header(tmp_path: Path, fmt: str) -> None:
    """A batch is never empty, but a writer given no rows writes a valid, empty file (the header, [] or nothing)."""
    frame, path = _frame().iloc[:0], tmp_path / f"f{export._EXTENSIONS[fmt]}"
    export._WRITERS[fmt](frame, path)
    if fmt == "csv":
        assert path.read_bytes().decode("utf-8-sig").startswith('"id","instruction"')
    elif fmt == "labelstudio":
        assert json.loads(path.read_text()) == []
    elif fmt == "jsonl":
        assert path.read_bytes() == b""
    else:
        assert [c.value for c in openpyxl.load_workbook(path).active[1]] == list(frame.columns)


def test_writers_never_hold_more_than_a_chunk_of_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    records = export._records
    monkeypatch.setattr(export, "_records", lambda frame: seen.append(len(frame)) or records(frame))
    frame = _frame()
    for fmt in ("xlsx", "jsonl", "labelstudio"):
        seen.clear()
        export._WRITERS[fmt](frame, tmp_path / fmt)
        assert sum(seen) == len(frame) and max(seen) == export.CHUNK_ROWS, fmt


def _cells(path: Path) -> list[list[tuple]]:
    sheet = openpyxl.load_workbook(path).active
    return [[(c.data_type, c.value, c.font.b, c.alignment.wrap_text) for c in row] for row in sheet.iter_rows()]


def test_xlsx_rows_are_streamed_as_inline_strings_with_the_cells_formats_and_widths(tmp_path: Path) -> None:
    frame = _frame()
    path = write_export(frame, out=tmp_path / "p.xlsx", run_id=RUN, manifest={}).files[0]
    with zipfile.ZipFile(path) as zf:
        assert "xl/sharedStrings.xml" not in zf.namelist()  # constant_memory: no table of every string
        assert 't="inlineStr"' in zf.read("xl/worksheets/sheet1.xml").decode()
    cells = _cells(path)
    assert [v for _t, v, _b, _w in cells[0]] == list(frame.columns) and all(b for _t, _v, b, _w in cells[0])
    wide = [i for i, (_t, _v, _b, wrap) in enumerate(cells[1]) if wrap]
    assert [frame.columns[i] for i in wide] == ["instruction", "input", "reason"]  # the columns with line breaks
    sheet = openpyxl.load_workbook(path).active
    last = openpyxl.utils.get_column_letter(len(frame.columns))
    assert sheet.freeze_panes == "A2" and sheet.auto_filter.ref == f"A1:{last}{len(frame) + 1}"
    assert len(cells) == len(frame) + 1


@pytest.mark.parametrize("text", ["<r>evil</r>",
                                  "<r><t>x</t></r></si><si><t>shifted</t></r>",
                                  '<r></r></is></c><c r="Z9"><f>HYPERLINK("http://x")</f></c><c><is><r></r>'])
def test_xlsx_keeps_text_that_looks_like_rich_text_xml_as_that_text(tmp_path: Path, text: str) -> None:
    """XlsxWriter copies a string that starts with <r> and ends with </r> into the sheet unescaped, as rich text:
    written as plain runs it stays exactly that text, and no cell or formula appears from it."""
    selection = pd.DataFrame({"id": ["a", "b"], "instruction": [text, "after"], "input": ["before", text]})
    path = write_export(selection, out=tmp_path / "p.xlsx", run_id=RUN, manifest={}).files[0]
    sheet = openpyxl.load_workbook(path).active
    assert [sheet["B2"].value, sheet["C3"].value, sheet["B3"].value, sheet["C2"].value] == [text, text, "after",
                                                                                             "before"]
    assert sheet.max_row == 3 and sheet.max_column == len(export.EXPORT_COLUMNS)
    with zipfile.ZipFile(path) as zf:
        assert "<f>" not in zf.read("xl/worksheets/sheet1.xml").decode()


def test_xlsx_refuses_rich_text_lookalikes_with_control_characters(tmp_path: Path) -> None:
    selection = pd.DataFrame({"id": ["a"], "instruction": ["<r>line\r\nbreak</r>"]})
    with pytest.raises(ExportError, match=r"row id 'a', column 'instruction' starts with <r>, ends with </r> and "
                                          r"holds a control character.*export this selection as CSV, JSONL"):
        write_export(selection, out=tmp_path / "p.xlsx", run_id=RUN, manifest={})
    assert list(tmp_path.iterdir()) == []
