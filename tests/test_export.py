"""Export: column contract, round trips per format, batches, CSV formula safety, manifest, atomicity.

How spreadsheets and Label Studio take the files is tested in test_export_clients.py.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest

from selectllm_core.errors import ExportError
from selectllm_core.runs import export
from selectllm_core.runs.export import (
    EXPORT_COLUMNS,
    FORMATS,
    export_frame,
    neutralize_formulas,
    restore_formulas,
    write_export,
)

RUN = "run-7"
SCRIPT = "<script>alert('x')</script><b onclick=\"steal()\">&amp;</b>"
TEXT_COLUMNS = ["id", "instruction", "input", "reason", "origin", "run_id", "category"]


def _selection(n: int = 6) -> pd.DataFrame:
    """A selection as the workspace returns it: pool columns, run columns, an internal column."""
    instructions = [
        SCRIPT,
        "=SUM(A1)",
        "Explain, in \"plain\" words:\nline two\r\nline three\u2028four\x85five",
        "Résumé 世界 🙂 — naïve",
        "-2",
        "@cmd",
    ]
    rows = [
        {
            "text": f"### Instruction: {i}",
            "id": f"{i:03d}",  # looks numeric, must stay text
            "instruction": instructions[i % len(instructions)] + ("" if i < 6 else f" #{i}"),
            "input": "" if i % 2 else f"+input {i}",
            "category": ["open_qa", "brainstorming", "\tclassification"][i % 3],
            "cluster": i % 4,
            "subset": i // 2,
            "reason": "" if i % 3 == 0 else f"diverse pick {i}",
            "score": -1.5 * i,
            "_position": i,
        }
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def _csv_read(path: Path) -> pd.DataFrame:
    """Read a CSV export as an annotation tool would, text columns as text."""
    return pd.read_csv(path, keep_default_na=False, encoding="utf-8-sig",
                       dtype={c: str for c in TEXT_COLUMNS})


def _read_back(path: Path, fmt: str) -> list[dict]:
    """Rows of one exported file, as plain dicts in file order (CSV apostrophes undone)."""
    if fmt == "csv":
        return restore_formulas(_csv_read(path)).to_dict("records")
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if fmt == "parquet":
        return pd.read_parquet(path).to_dict("records")
    if fmt == "xlsx":
        return _xlsx_read(path)
    tasks = json.loads(path.read_text(encoding="utf-8"))
    rows = [{**task["data"], **task["meta"]} for task in tasks]
    order = EXPORT_COLUMNS + [k for k in tasks[0]["data"] if k not in EXPORT_COLUMNS]
    return [{k: row[k] for k in order} for row in rows]


def _xlsx_read(path: Path) -> list[dict]:
    """Rows of an XLSX export; openpyxl leaves Excel's escapes of control characters (CR is _x000D_) as written."""
    rows = list(openpyxl.load_workbook(path).active.iter_rows(values_only=True))
    def unescape(v: object) -> object:
        return re.sub(r"_x([0-9A-F]{4})_", lambda m: chr(int(m[1], 16)), v) if isinstance(v, str) else v
    return [{k: unescape(v) for k, v in zip(rows[0], row)} for row in rows[1:]]


def _expected(selection: pd.DataFrame) -> list[dict]:
    return export_frame(selection, run_id=RUN).to_dict("records")


# ---------------------------------------------------------------- column contract


def test_export_frame_orders_contract_columns_then_extras_and_drops_internal() -> None:
    frame = export_frame(_selection().iloc[::-1], run_id=RUN)
    assert list(frame.columns) == EXPORT_COLUMNS + ["category", "score"]
    assert list(frame.index) == list(range(6))
    assert frame["id"].tolist() == ["005", "004", "003", "002", "001", "000"]
    assert set(frame["run_id"]) == {RUN}


def test_export_frame_fills_missing_optional_columns() -> None:
    frame = export_frame(pd.DataFrame({"instruction": ["a", "b"], "id": [1, 2], "extra": [True, False]}),
                         run_id=RUN)
    assert list(frame.columns) == EXPORT_COLUMNS + ["extra"]
    assert frame["id"].tolist() == ["1", "2"]
    assert frame["input"].tolist() == ["", ""] and frame["reason"].tolist() == ["", ""]
    assert frame["origin"].tolist() == ["model pick", "model pick"]
    assert frame["cluster"].isna().all() and frame["subset"].isna().all()


def test_export_frame_keeps_the_origin_of_each_pick_right_after_the_reason() -> None:
    selection = pd.DataFrame({"id": ["a", "b", "c"], "instruction": ["x", "y", "z"],
                              "origin": ["curator pick", None, "model pick"], "reason": ["r", "", "q"]})
    frame = export_frame(selection, run_id=RUN)
    assert EXPORT_COLUMNS.index("origin") == EXPORT_COLUMNS.index("reason") + 1
    assert list(frame.columns) == EXPORT_COLUMNS
    assert frame["origin"].tolist() == ["curator pick", "model pick", "model pick"]


def test_export_frame_keeps_labels_whole_and_reasons_text_when_values_are_missing() -> None:
    selection = pd.DataFrame({"id": ["a", "b"], "instruction": ["x", "y"], "input": ["", None],
                              "cluster": [3.0, float("nan")], "subset": [0.0, 1.0], "reason": [None, "r"]})
    frame = export_frame(selection, run_id=RUN)
    assert frame["cluster"].tolist() == [3, pd.NA] and str(frame["cluster"].dtype) == "Int64"
    assert frame["subset"].tolist() == [0, 1]
    assert frame["input"].tolist() == ["", ""] and frame["reason"].tolist() == ["", "r"]


def test_export_frame_requires_id_and_instruction() -> None:
    with pytest.raises(ExportError, match="no id column"):
        export_frame(pd.DataFrame({"instruction": ["a"]}), run_id=RUN)


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_to_the_same_rows(tmp_path: Path, fmt: str) -> None:
    selection = _selection()
    result = write_export(selection, out=tmp_path, fmt=fmt, run_id=RUN, manifest={})
    assert result.rows == 6 and len(result.files) == 1
    assert result.files[0].name == f"selectllm-{RUN}{export._EXTENSIONS[fmt]}"
    rows = _read_back(result.files[0], fmt)
    assert rows == _expected(selection)
    assert list(rows[0]) == EXPORT_COLUMNS + ["category", "score"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "labelstudio"])
def test_html_and_script_are_kept_verbatim_as_text(tmp_path: Path, fmt: str) -> None:
    selection = _selection(1)
    path = write_export(selection, out=tmp_path, fmt=fmt, run_id=RUN, manifest={}).files[0]
    raw = path.read_text(encoding="utf-8-sig")
    assert "<script>alert('x')</script>" in raw  # not HTML-escaped, not \/-escaped
    assert _read_back(path, fmt)[0]["instruction"] == SCRIPT


def test_csv_is_excel_friendly_utf8_with_bom_and_quoted_text(tmp_path: Path) -> None:
    path = write_export(_selection(), out=tmp_path / "picks.csv", run_id=RUN, manifest={}).files[0]
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    text = raw.decode("utf-8-sig")
    assert text.startswith('"id","instruction","input","cluster","subset","reason","origin","run_id"')
    assert '"Explain, in ""plain"" words:\nline two\r\nline three\u2028four\x85five"' in text  # newlines kept in-cell
    assert ',0,0,"",' in text  # numbers unquoted, text quoted


def test_parquet_stores_text_as_strings(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = write_export(_selection(), out=tmp_path / "p.parquet", run_id=RUN, manifest={}).files[0]
    schema = pq.read_schema(path)
    for column in TEXT_COLUMNS:
        assert schema.field(column).type in (pa.string(), pa.large_string()), column
    assert pa.types.is_integer(schema.field("cluster").type)


def test_labelstudio_tasks_put_row_fields_in_data_and_run_in_meta(tmp_path: Path) -> None:
    path = write_export(_selection(2), out=tmp_path / "tasks.json", run_id=RUN, manifest={}).files[0]
    tasks = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(tasks, list) and len(tasks) == 2
    assert set(tasks[0]) == {"data", "meta"}
    assert list(tasks[0]["data"]) == ["id", "instruction", "input", "cluster", "reason", "origin", "category",
                                      "score"]
    assert tasks[1]["meta"] == {"run_id": RUN, "subset": 0}


def test_format_follows_the_file_extension(tmp_path: Path) -> None:
    result = write_export(_selection(), out=tmp_path / "sub" / "picks.jsonl", run_id=RUN, manifest={})
    assert result.files == [tmp_path / "sub" / "picks.jsonl"]
    assert result.manifest_path == tmp_path / "sub" / "picks.manifest.json"
    assert json.loads(result.manifest_path.read_text())["export"]["format"] == "jsonl"


# ---------------------------------------------------------------- batches


@pytest.mark.parametrize("fmt", FORMATS)
def test_batches_split_in_order_and_union_equals_input(tmp_path: Path, fmt: str) -> None:
    selection = _selection(25)
    result = write_export(selection, out=tmp_path, fmt=fmt, run_id=RUN, manifest={}, batch_size=10)
    ext = export._EXTENSIONS[fmt]
    assert [f.name for f in result.files] == [f"selectllm-{RUN}-batch-00{i}{ext}" for i in (1, 2, 3)]
    parts = [_read_back(f, fmt) for f in result.files]
    assert [len(p) for p in parts] == [10, 10, 5]
    assert [row for part in parts for row in part] == _expected(selection)
    files = json.loads(result.manifest_path.read_text())["export"]["files"]
    assert [f["rows"] for f in files] == [10, 10, 5]


def test_reexport_with_fewer_batches_removes_stale_batch_files(tmp_path: Path) -> None:
    write_export(_selection(25), out=tmp_path / "b.csv", run_id=RUN, manifest={}, batch_size=10)
    result = write_export(_selection(12), out=tmp_path / "b.csv", run_id=RUN, manifest={}, batch_size=10)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b-batch-001.csv", "b-batch-002.csv", "b.manifest.json"]
    assert result.rows == 12


# ---------------------------------------------------------------- formula neutralisation

FORMULA_TABLE = [
    ("=SUM(A1)", "'=SUM(A1)"),
    ("+1", "'+1"),
    ("-2", "'-2"),  # text that looks like a number is still text
    ("@cmd", "'@cmd"),
    ("\tfoo", "'\tfoo"),
    ("\rbar", "'\rbar"),
    ("'=quoted", "''=quoted"),  # so that restore_formulas stays an exact inverse
    ("normal text", "normal text"),
    ("a=b", "a=b"),
    ("'plain", "'plain"),
    ("Résumé 世界 🙂", "Résumé 世界 🙂"),
    ("", ""),
]


@pytest.mark.parametrize(("cell", "written"), FORMULA_TABLE)
def test_formula_neutralisation_table(cell: str, written: str) -> None:
    frame = pd.DataFrame({"cell": [cell], "number": [-2], "ratio": [-0.5]})
    safe = neutralize_formulas(frame)
    assert safe["cell"].tolist() == [written]
    assert safe["number"].tolist() == [-2] and safe["ratio"].tolist() == [-0.5]
    assert safe["number"].dtype == frame["number"].dtype
    pd.testing.assert_frame_equal(restore_formulas(safe), frame)


def test_csv_file_holds_exactly_the_documented_prefix(tmp_path: Path) -> None:
    cells = [cell for cell, _ in FORMULA_TABLE]
    selection = pd.DataFrame({"id": [str(i) for i in range(len(cells))], "instruction": cells,
                              "=danger": cells, "delta": [-2] * len(cells)})
    path = write_export(selection, out=tmp_path / "f.csv", run_id=RUN, manifest={}).files[0]
    raw = _csv_read(path).astype({"instruction": str})
    assert raw["instruction"].tolist() == [written for _, written in FORMULA_TABLE]
    assert list(raw.columns)[-2:] == ["'=danger", "delta"]  # the header is a cell too
    assert raw["delta"].tolist() == [-2] * len(cells)  # a negative number stays a number
    assert ",-2\r\n" in path.read_bytes().decode("utf-8-sig")  # unquoted: Excel reads a number
    restored = restore_formulas(raw)
    assert restored["instruction"].tolist() == cells
    assert restored["=danger"].tolist() == cells


def test_other_formats_keep_formula_like_text_verbatim(tmp_path: Path) -> None:
    selection = pd.DataFrame({"id": ["1"], "instruction": ["=SUM(A1)"]})
    path = write_export(selection, out=tmp_path / "f.jsonl", run_id=RUN, manifest={}).files[0]
    assert json.loads(path.read_text())["instruction"] == "=SUM(A1)"


# ---------------------------------------------------------------- manifest


def test_manifest_records_files_with_matching_sha256(tmp_path: Path) -> None:
    caller = {"pool_id": "abc123", "created_at": "2024-01-02T03:04:05", "params": {"budget": 25, "k": 1}}
    result = write_export(_selection(25), out=tmp_path, fmt="csv", run_id=RUN, manifest=caller,
                          batch_size=10)
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))
    assert {k: manifest[k] for k in caller} == caller  # the run's own facts, untouched
    facts = manifest["export"]
    assert facts["rows"] == 25 and facts["format"] == "csv" and facts["run_id"] == RUN
    assert facts["exporter_version"] == export.EXPORTER_VERSION
    assert datetime.fromisoformat(facts["created_at"]).tzinfo is not None
    assert facts["columns"] == EXPORT_COLUMNS + ["category", "score"]
    assert facts["csv"]["encoding"] == "utf-8-sig"
    assert [f["name"] for f in facts["files"]] == [p.name for p in result.files]
    for entry in facts["files"]:
        digest = hashlib.sha256((tmp_path / entry["name"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest


def test_manifest_never_contains_secrets(tmp_path: Path) -> None:
    caller = {
        "api_key": "sk-top-level",
        "OPENAI_API_KEY": "sk-env-style",
        "backend": {"kind": "openai", "model": "gpt-4o-mini", "apiKey": "sk-camel",
                    "headers": {"Authorization": "Bearer sk-header", "X-Auth-Token": "tok-1"}},
        "store": {"db_password": "hunter2", "client_secret": "cs-1", "Key": "k-1"},
        "attempts": [{"token": "tok-2", "prompt_tokens": 120, "max_tokens": 512}],
    }
    result = write_export(_selection(), out=tmp_path, run_id=RUN, manifest=caller)
    text = result.manifest_path.read_text(encoding="utf-8")
    for secret in ("sk-", "hunter2", "cs-1", "k-1", "tok-1", "tok-2", "Bearer"):
        assert secret not in text
    manifest = json.loads(text)
    assert manifest["backend"] == {"kind": "openai", "model": "gpt-4o-mini", "headers": {}}
    assert manifest["attempts"] == [{"prompt_tokens": 120, "max_tokens": 512}]
    assert caller["backend"]["apiKey"] == "sk-camel"  # the caller's dict is left alone


def test_manifest_turns_nan_and_numpy_values_into_valid_json(tmp_path: Path) -> None:
    caller = {"pool": {"rows": np.int64(25), "source": float("nan"), "path": Path("pool.csv")},
              "weights": [np.float32(0.5), pd.NA]}
    result = write_export(_selection(), out=tmp_path, run_id=RUN, manifest=caller)
    manifest = json.loads(result.manifest_path.read_text(encoding="utf-8"))  # strict: no NaN token
    assert manifest["pool"] == {"rows": 25, "source": None, "path": "pool.csv"}
    assert manifest["weights"] == [0.5, None]


def test_unserialisable_manifest_fails_before_any_file_is_published(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="cannot write JSON"):
        write_export(_selection(), out=tmp_path, run_id=RUN, manifest={"backend": object()})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- atomicity


def _failing_writer(frame: pd.DataFrame, path: Path) -> None:
    """Write half a file, then fail the way a full disk does."""
    path.write_text("id,instruction\n" + "1,half a ro", encoding="utf-8")
    raise OSError(28, "No space left on device")


def test_failure_mid_write_leaves_previous_export_untouched(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "picks.csv"
    first = write_export(_selection(), out=target, run_id=RUN, manifest={})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setitem(export._WRITERS, "csv", _failing_writer)
    with pytest.raises(ExportError, match="No space left on device"):
        write_export(_selection(3), out=target, run_id=RUN, manifest={})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp file left
    assert first.files == [target]


def test_failure_in_a_later_batch_publishes_no_batch(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def second_fails(frame: pd.DataFrame, path: Path) -> None:
        calls.append(len(frame))
        if len(calls) == 2:
            _failing_writer(frame, path)
        export._write_jsonl(frame, path)

    monkeypatch.setitem(export._WRITERS, "jsonl", second_fails)
    with pytest.raises(ExportError, match="check free disk space"):
        write_export(_selection(25), out=tmp_path / "x.jsonl", run_id=RUN, manifest={}, batch_size=10)
    assert calls == [10, 10]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- errors that say how to fix them


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"selection": _selection(0)}, "nothing to export: accept some picks or export all picks with --all"),
        ({"fmt": "docx"}, "use one of: csv, xlsx, jsonl, parquet, labelstudio"),
        ({"batch_size": 0}, "at least 1"),
        ({"batch_size": -3}, "at least 1"),
        ({"out": "picks.txt"}, r"cannot tell the format of 'picks.txt'"),
        ({"out": "picks.csv", "fmt": "jsonl"}, r"rename it to end in \.jsonl"),
    ],
)
def test_bad_requests_raise_export_error(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"selection": _selection(), "out": tmp_path, "run_id": RUN, "manifest": {}} | kwargs
    if isinstance(args["out"], str):
        args["out"] = tmp_path / args["out"]
    with pytest.raises(ExportError, match=message):
        write_export(**args)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_raises_export_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ExportError, match="choose a folder you can write to"):
        write_export(_selection(), out=blocker / "exports" / "picks.csv", run_id=RUN, manifest={})
