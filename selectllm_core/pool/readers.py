"""Read a raw table from CSV, TSV, JSONL, JSON or Parquet bytes, each optionally gzip-compressed.

The format comes from the file extension; `pool/decode.py` checks the bytes and turns them into text first.

NUL bytes: NUL padding at the end of the file is dropped (with a note); a NUL inside a record is removed from its
cells and the record numbers are listed in a note.

Values are kept as parsed: CSV/TSV cells are strings (no "NA" -> NaN conversion), JSON values keep their JSON type.
Rows the reader cannot use (a non-JSON line in JSONL, a CSV row with more fields than the header) become bad rows
with a 1-based record number; the record number counts data records (header and blank lines excluded).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd

from selectllm_core.errors import PoolError
from selectllm_core.plain import plain
from selectllm_core.pool.decode import EXCEL_FIX, NUL, SAVE_AS, decode, decompress, reject_containers

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
           ".parquet": "parquet", ".pq": "parquet"}
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_MARK = "\ufdd0"  # a Unicode noncharacter standing in for NUL inside JSON strings while json.loads runs



@dataclass
class RawTable:
    """A parsed table before column mapping, with where each row came from."""

    frame: pd.DataFrame
    fmt: str
    rows: list[int]  # 1-based record number of each frame row
    lines: list[int] | None = None  # first file line of each frame row (text formats)
    bad_rows: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def n_records(self) -> int:
        """Data records seen, including the ones that became bad rows."""
        return len(self.rows) + len(self.bad_rows)


def format_from_name(name: str) -> str:
    """Map a file name to csv/tsv/jsonl/json/parquet by its extension (a trailing .gz is ignored)."""
    lower = name.lower().removesuffix(".gz")
    for suffix, fmt in FORMATS.items():
        if lower.endswith(suffix):
            return fmt
    if lower.endswith((".xlsx", ".xlsm", ".xls", ".ods")):
        raise PoolError(f"{name} is a spreadsheet workbook, which is not read directly. {EXCEL_FIX}.")
    raise PoolError(f"Cannot tell the format of {name} from its extension: {SAVE_AS}.")


def parse_bytes(data: bytes, name: str) -> RawTable:
    """Parse a whole file's bytes; `name` gives the extension and labels every message.

    Args:
        data: the file content, possibly gzip-compressed.
        name: the file name or path as the user gave it.

    Returns:
        The raw table with record numbers, bad rows and notes.

    """
    fmt = format_from_name(name)
    if not data:
        raise PoolError(f"{name} is empty (0 bytes). Export the pool again; {SAVE_AS}.")
    notes: list[str] = []
    data = decompress(data, name, notes)
    if data.startswith(b"PAR1"):
        if fmt != "parquet":
            notes.append(f"{name} holds Parquet data although its extension says {fmt}; read it as Parquet.")
        return _with_notes(_read_parquet(data, name), notes)
    reject_containers(data, name, fmt)
    text = decode(data, name, notes)
    if not text or text.isspace():
        raise PoolError(f"{name} is empty (no rows, no header). Export the pool again; {SAVE_AS}.")
    fmt = _sniff_text(text, fmt, name, notes)
    if fmt in ("csv", "tsv"):
        table = _read_delimited(text, name, "," if fmt == "csv" else "\t")
    elif fmt == "jsonl":
        table = _read_jsonl(text, name)
    else:
        table = _read_json(text, name)
    return _with_notes(table, notes)


def _with_notes(table: RawTable, notes: list[str]) -> RawTable:
    table.notes[:0] = notes
    return table


def _sniff_text(text: str, fmt: str, name: str, notes: list[str]) -> str:
    """Refuse non-JSON under a JSON name; read JSON Lines that hides under a .csv/.tsv name as JSONL."""
    first = _first_line(text)
    if fmt in ("json", "jsonl") and first[:1] not in ("[", "{"):
        raise PoolError(f"{name} does not hold JSON: it starts with {preview(first)}. If it is a table with a "
                        "header row, rename it to .csv or .tsv.")
    if fmt in ("csv", "tsv") and first[:1] == "{" and _is_json(first):
        notes.append(f"{name} holds JSON Lines although named .{fmt}; read it as JSONL.")
        return "jsonl"
    return fmt


def _first_line(text: str) -> str:
    """The first non-blank line, stripped and without NULs, without copying the whole text."""
    start = re.compile(r"[\s\x00]*").match(text).end()
    end = text.find("\n", start)
    return text[start:end if end >= 0 else len(text)].replace(NUL, "").strip()


def _is_json(text: str) -> bool:
    try:
        json.loads(text.replace(NUL, "") if NUL in text else text)
    except ValueError:
        return False
    return True


def _read_delimited(text: str, name: str, delimiter: str) -> RawTable:
    """Parse CSV/TSV with the csv module: strict quotes, no NA guessing, unlimited field size."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 1 MB cell is a valid instruction
    delimiter, notes = _sniff_delimiter(text, delimiter, name)
    nul_records: list[int] = []
    records = _csv_records(text, name, delimiter)
    if NUL in text:
        records = _without_nuls(records, nul_records)
    first = next(records, None)
    if first is None:
        raise PoolError(f"{name} has no header row. Add a header such as 'instruction,input'.")
    header = _clean_header(first[1], name, notes)
    table = RawTable(pd.DataFrame(), "tsv" if delimiter == "\t" else "csv", [], [], [], notes)
    cells: list[list[str]] = []
    short = 0
    for number, (line, record) in enumerate(records, 1):
        if len(record) > len(header):
            table.bad_rows.append((number, _ragged_message(line, record, header, delimiter)))
            continue
        short += len(record) < len(header)
        cells.append(record + [""] * (len(header) - len(record)))
        table.rows.append(number)
        table.lines.append(line)
    if short:
        notes.append(f"{short} row(s) had fewer fields than the header; their missing cells were read as empty.")
    notes.extend(_nul_note(nul_records, name))
    table.frame = pd.DataFrame(cells, columns=header, dtype=object)
    return table


def _csv_records(text: str, name: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (first line, fields) per non-blank record; a quoting error becomes a PoolError naming the line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    while True:
        start = reader.line_num + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise PoolError(_quote_message(name, start, reader.line_num, str(exc))) from exc
        if record:
            yield start, record


def _without_nuls(records: Iterator[tuple[int, list[str]]], cleaned: list[int]) -> Iterator[tuple[int, list[str]]]:
    """Remove NUL characters from every field; append the index of each record that had one (0 = the header)."""
    for index, (line, record) in enumerate(records):
        if any(NUL in value for value in record):
            record = [value.replace(NUL, "") for value in record]
            cleaned.append(index)
        yield line, record


def _nul_note(records: list[int], name: str) -> list[str]:
    """The report note listing the 1-based records (0 = the CSV header) whose NUL bytes were removed."""
    if not records:
        return []
    rows = [n for n in records if n]
    shown = ", ".join(map(str, rows[:20])) + (f" and {len(rows) - 20} more" if len(rows) > 20 else "")
    where = " and ".join(([f"{len(rows)} row(s): {shown}"] if rows else []) + (["the header"] if 0 in records else []))
    return [f"{name}: NUL bytes removed from {where}. A NUL is an invisible control byte, usually left by a broken "
            "export; the rest of each value is kept."]


def _sniff_delimiter(text: str, delimiter: str, name: str) -> tuple[str, list[str]]:
    """Use ';', tab or ',' instead when the header line has none of the expected delimiter."""
    header = _first_line(text)
    if delimiter in header:
        return delimiter, []
    for other in (",", "\t", ";"):
        if other != delimiter and other in header:
            label = {"\t": "tab", ",": "comma", ";": "semicolon"}
            return other, [f"{name}: the header has no {label[delimiter]}s but has {label[other]}s; "
                           f"read it as {label[other]}-separated."]
    return delimiter, []


def _clean_header(record: list[str], name: str, notes: list[str]) -> list[str]:
    """Strip header names, name blank ones, and make repeated ones unique (noted in the report)."""
    header: list[str] = []
    for i, raw in enumerate(record, 1):
        col = raw.strip() or f"column_{i}"
        base, k = col, 2
        while col in header:
            col, k = f"{base}_{k}", k + 1
        if col != raw:
            notes.append(f"{name}: header cell {i} {raw!r} read as column {col!r}.")
        header.append(col)
    return header


def _quote_message(name: str, start: int, line: int, detail: str) -> str:
    where = f"line {start}"
    if line > start:
        where = f"the record starting on line {start} (parsing stopped on line {line})"
    if "end of data" in detail:
        return (f"{name}: unterminated quote in {where}: a quoted field opened there is never closed. Close the "
                'quote, or write a quote inside a field as two quotes ("").')
    if "expected after" in detail:
        return (f"{name}: bad quoting in {where}: a quote closes a field before its end. Quote the whole field "
                'and write each quote inside it as two quotes ("").')
    return f"{name}: cannot read {where} as a table ({detail}). Re-export the file as UTF-8 CSV."


def _ragged_message(line: int, record: list[str], header: list[str], delimiter: str) -> str:
    sep = "tab" if delimiter == "\t" else repr(delimiter)
    return (f"line {line}: {len(record)} fields but the header has {len(header)}; a value probably contains an "
            f"unquoted {sep}. Quote that value. Starts with {preview(delimiter.join(record))}")


def preview(value: object, width: int = 60) -> str:
    """Quote the first `width` characters of a value (nested values as JSON) for a message."""
    text = to_json(value) if isinstance(value, dict | list | tuple) else str(value)
    return repr(text[:width] + ("..." if len(text) > width else ""))


def to_json(value: object) -> str:
    """Serialise a nested value (dicts, lists, numpy arrays and scalars) as a JSON string."""
    return json.dumps(plain(value), ensure_ascii=False, default=str)


def _read_jsonl(text: str, name: str) -> RawTable:
    """One JSON object per line; a line that is not an object becomes a bad row, the rest load."""
    first = _first_line(text)
    if first.startswith("[") or (first.startswith("{") and not _is_json(first) and _is_json(text)):
        table = _read_json(text, name)  # one (pretty-printed) JSON document saved as .jsonl
        table.notes.insert(0, f"{name} holds one JSON document, not JSON Lines; read it as JSON.")
        return table
    table = RawTable(pd.DataFrame(), "jsonl", [], [])
    objects: list[dict] = []
    nul_records: list[int] = []
    for number, (line_no, line, had_nul) in enumerate(_jsonl_lines(text), 1):
        if had_nul:
            nul_records.append(number)
        try:
            value = json.loads(line)
        except ValueError as exc:
            table.bad_rows.append((number, f"line {line_no}: not valid JSON ({_json_reason(exc)}): {preview(line)}"))
            continue
        if not isinstance(value, dict):
            table.bad_rows.append((number, f"line {line_no}: a JSON {_kind(value)}, not an object: {preview(line)}"))
            continue
        objects.append(value)
        table.rows.append(number)
        table.lines.append(line_no)
    table.notes.extend(_nul_note(nul_records, name))
    table.frame = _frame_from_objects(objects)
    return table


def _jsonl_lines(text: str) -> Iterator[tuple[int, str, bool]]:
    """Yield (1-based line number, line without NULs, whether it had any) for each non-blank line."""
    check = NUL in text
    for line_no, line in enumerate(_LINE_BREAK.split(text), 1):
        had_nul = check and NUL in line
        if had_nul:
            line = line.replace(NUL, "")
        if line.strip():
            yield line_no, line, had_nul


def _read_json(text: str, name: str) -> RawTable:
    """Read a JSON list of objects, or an object holding exactly one such list (e.g. {"data": [...]})."""
    notes: list[str] = []
    try:
        value, marked = _load_json(text, name, notes)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and _first_line(text).startswith("{"):  # JSON Lines saved as .json
            table = _read_jsonl(text, name)
            table.notes.insert(0, f"{name} holds JSON Lines (one object per line) although named .json; read it "
                               "as JSONL.")
            return table
        raise PoolError(f"{name} is not valid JSON ({_json_reason(exc)}); the file may be cut short. Fix or "
                        "re-export it, or save one JSON object per line as .jsonl.") from exc
    if isinstance(value, dict):
        value = _unwrap(value, name, notes)
    if not isinstance(value, list):
        raise PoolError(f"{name} holds a single JSON {_kind(value)}, not a list of rows. Save the rows as "
                        '[{"instruction": ...}, ...] or as JSON Lines.')
    objects, rows, bad, nul_records = _json_items(value, marked)
    notes.extend(_nul_note(nul_records, name))
    return RawTable(_frame_from_objects(objects), "json", rows, None, bad, notes)


def _load_json(text: str, name: str, notes: list[str]) -> tuple[object, bool]:
    """json.loads; NULs inside strings become _MARK (True is returned), NULs elsewhere are dropped with a note."""
    if NUL not in text:
        return json.loads(text), False
    if _MARK not in text:
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(text.replace(NUL, _MARK)), True
    value = json.loads(text.replace(NUL, ""))
    notes.append(f"{name}: NUL bytes removed (some outside the values, so the rows are not listed).")
    return value, False


def _json_items(value: list, marked: bool) -> tuple[list[dict], list[int], list[tuple[int, str]], list[int]]:
    """Split list items into row objects and bad rows; remove NUL marks, listing the items that had them."""
    objects, rows, bad, nul_records = [], [], [], []
    for number, item in enumerate(value, 1):
        if marked:
            item, had_nul = _unmark(item)
            if had_nul:
                nul_records.append(number)
        if isinstance(item, dict):
            objects.append(item)
            rows.append(number)
        else:
            bad.append((number, f"list item {number} is a JSON {_kind(item)}, not an object: {preview(item)}"))
    return objects, rows, bad, nul_records


def _unmark(value: object) -> tuple[object, bool]:
    """Remove _MARK from every string (and key) in a JSON value; say whether there was any."""
    if isinstance(value, str):
        return (value.replace(_MARK, ""), True) if _MARK in value else (value, False)
    if isinstance(value, list):
        pairs = [_unmark(v) for v in value]
        return [v for v, _ in pairs], any(had for _, had in pairs)
    if isinstance(value, dict):
        pairs = [(_unmark(k), _unmark(v)) for k, v in value.items()]
        return {k: v for (k, _), (v, _) in pairs}, any(hk or hv for (_, hk), (_, hv) in pairs)
    return value, False


def _json_reason(exc: ValueError) -> str:
    """Say 'Expecting value at line 2, column 5' for a JSONDecodeError (the line only when there are several)."""
    if not isinstance(exc, json.JSONDecodeError):
        return "not JSON"
    line = f"line {exc.lineno}, " if exc.doc.count("\n") else ""
    return f"{exc.msg.removesuffix(' at')} at {line}column {exc.colno}"


def _unwrap(value: dict, name: str, notes: list[str]) -> object:
    """Return the single list of objects inside a wrapper object, or fail naming the keys."""
    lists = [k for k, v in value.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)]
    if len(lists) == 1:
        notes.append(f"{name}: read the {len(value[lists[0]])} rows under the key {lists[0]!r}.")
        return value[lists[0]]
    keys = ", ".join(repr(k) for k in list(value)[:8])
    raise PoolError(f"{name} holds a JSON object (keys: {keys}), not a list of rows, and no single key holds a "
                    'list of row objects. Save the rows as [{"instruction": ...}, ...] or as JSON Lines.')


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _frame_from_objects(objects: list[dict]) -> pd.DataFrame:
    """Build an object-dtype frame (values unchanged, missing keys as None), columns in first-seen order."""
    columns: dict[str, None] = {}
    for obj in objects:
        columns.update(dict.fromkeys(obj))
    data = {col: pd.Series([obj.get(col) for obj in objects], dtype=object) for col in columns}
    return pd.DataFrame(data, index=pd.RangeIndex(len(objects)))


def _read_parquet(data: bytes, name: str) -> RawTable:
    """Read Parquet with pyarrow; integers stay integers even with nulls, categories become plain values."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(io.BytesIO(data)).to_pandas(integer_object_nulls=True)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0].split("': ")[-1][:200] if str(exc).strip() else "unreadable"
        raise PoolError(f"{name} is not a readable Parquet file ({reason}). Re-export it from the tool that "
                        "made it, or save the pool as .csv or .jsonl.") from exc
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype(object)
    frame.columns = [str(c) for c in frame.columns]
    return RawTable(frame.reset_index(drop=True), "parquet", list(range(1, len(frame) + 1)))
