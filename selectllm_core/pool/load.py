"""Load and validate an instruction pool into one DataFrame: id, instruction, input, text, then the extra columns.

Files are read by `selectllm_core.pool.readers` (CSV, TSV, JSONL, JSON, Parquet, each optionally .gz). Encoding: UTF-8
(BOM or not) or BOM-marked UTF-16; other text is read as Windows-1252 (Latin-1 for the five bytes cp1252 leaves
undefined), always in that order, and a report note names the encoding and the first non-UTF-8 byte. Ids come from
the decoded text. NUL bytes are removed from values (the rows are listed in a note); binary files are refused.

Rules, in the order they apply:
1. Columns: an explicit ColumnMap is used exactly as given (schema "custom" unless it equals detection); otherwise
   `detect_columns` picks Alpaca, Dolly, self-instruct, prompt or text by column name (case-insensitive) and uses a
   column named `id` for ids.
2. Bad rows (a JSON line that does not parse, a CSV row with extra fields, a nested object or list as instruction,
   an empty id) are dropped and listed in `PoolReport.bad_rows` as (1-based record number, message). Numbers as
   instruction are fine and become strings. A pool where no row survives is a PoolError.
3. Empty rows (instruction empty, whitespace, None or NaN) are dropped and counted; a missing input is "".
4. Ids are the id column's values as strings (duplicates are a PoolError naming them), else
   `content_id(instruction, input)`. Text is kept exactly as read (no stripping), so ids are stable across
   formats of the same rows.
5. Exact duplicates (same instruction and input) are dropped after the first and counted.
6. Extra columns are kept in source order; nested values become JSON strings so every export format accepts them,
   and a column whose name clashes with id/instruction/input/text is renamed `source_<name>`.

Invariant: rows_read == rows_kept + duplicates_dropped + empty_dropped + len(bad_rows).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from selectllm_core.errors import ConfigError, PoolError
from selectllm_core.plain import plain
from selectllm_core.pool.readers import FORMATS, RawTable, parse_bytes, preview, to_json

CORE_COLUMNS = ("id", "instruction", "input", "text")
LONG_TEXT = 20_000  # characters; the embedding model reads only the first few hundred words
_NESTED = (dict, list, tuple, np.ndarray)
_MAP_HINT = "--instruction-column NAME (Python: ColumnMap(instruction=NAME))"


@dataclass(frozen=True)
class ColumnMap:
    """Which source columns hold the instruction, the optional input and the optional row id."""

    instruction: str
    input: str | None = None
    id: str | None = None


@dataclass
class PoolReport:
    """What loading did: the mapping used and every row that was dropped, and why."""

    source: str
    schema: str
    columns: ColumnMap
    rows_read: int
    rows_kept: int
    duplicates_dropped: int
    empty_dropped: int
    bad_rows: list[tuple[int, str]]
    notes: list[str] = field(default_factory=list)


@dataclass
class Pool:
    """A validated pool: the frame (id, instruction, input, text, extras...), its report and a display name.

    Its identity (`pool_id`) covers every row's content, so two files that share ids but not text are two
    pools. A pool read from a workspace carries the id the workspace knows it by (`stored_id`), which
    also keeps the ids of pools saved before identities covered content.
    """

    frame: pd.DataFrame
    report: PoolReport
    name: str
    # Not init fields: dataclasses.replace (a sample, a filtered copy) must never carry them to other rows.
    stored_id: str | None = field(default=None, init=False, compare=False)
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def pool_id(self) -> str:
        """The workspace's id for this pool when it has one, else the digest of its content."""
        return self.stored_id or self.content_digest

    @property
    def content_digest(self) -> str:
        """sha256 over every row's id, instruction, input and extra columns, in order (16 hex characters)."""
        if self._digest is None:
            self._digest = pool_digest(pool_records(self.frame))
        return self._digest


def pool_records(frame: pd.DataFrame) -> Iterator[tuple[str, str, str, dict]]:
    """Each row as (id, instruction, input, extras) with JSON-able extras, the form the workspace stores."""
    extras = [c for c in frame.columns if c not in CORE_COLUMNS]
    for row in frame[["id", "instruction", "input", *extras]].itertuples(index=False, name=None):
        yield str(row[0]), str(row[1]), str(row[2]), {c: plain(v) for c, v in zip(extras, row[3:], strict=True)}


def pool_digest(records: Iterable[tuple[str, str, str, dict]]) -> str:
    """The content identity of rows (id, instruction, input, extras): the same rows give the same digest."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps(record, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def format_text(instruction: str, input: str = "") -> str:
    """Build the text embedded per row, as the SelectLLM paper's code does."""
    text = f"### Instruction: {instruction}"
    if input:
        text += f"\n\n### Input: {input}"
    return text + "\n\n### Response:"


def content_id(instruction: str, input: str = "") -> str:
    """Give the id of a row without an id column: sha256(instruction + "\\x1f" + input), first 16 hex chars."""
    return hashlib.sha256(f"{instruction}\x1f{input}".encode()).hexdigest()[:16]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a pool file's raw columns without mapping or validating them.

    Args:
        path: a .csv, .tsv, .jsonl, .json or .parquet file, optionally gzip-compressed (.gz).

    Returns:
        The parsed rows (JSONL lines that do not parse are skipped; `load_pool` reports them).
    """
    return _read_file(Path(path).expanduser(), str(path)).frame


def detect_columns(frame: pd.DataFrame, *, label: str = "the pool") -> tuple[str, ColumnMap]:
    """Recognise the pool's schema from its column names (case-insensitive).

    Args:
        frame: raw columns as returned by `read_table`.
        label: how error messages name the pool (its path).

    Returns:
        (schema, mapping): schema is alpaca, dolly, self-instruct, prompt or text.
    """
    names: dict[str, str] = {}
    for col in frame.columns:
        names.setdefault(str(col).strip().lower(), col)
    ident = names.get("id")
    if "instruction" in names:
        instruction = names["instruction"]
        if "instances" in names and "input" not in names:
            return "self-instruct", ColumnMap(instruction, names["instances"], ident)
        if "context" in names and "input" not in names:
            return "dolly", ColumnMap(instruction, names["context"], ident)
        return "alpaca", ColumnMap(instruction, names.get("input"), ident)
    for schema in ("prompt", "text"):
        if schema in names:
            return schema, ColumnMap(names[schema], names.get("input", names.get("context")), ident)
    raise PoolError(_missing_instruction(frame, label))


def load_pool(
    source: str | Path | pd.DataFrame | BinaryIO,
    *,
    columns: ColumnMap | None = None,
    name: str | None = None,
) -> Pool:
    """Load a pool, map its columns, drop bad, empty and duplicate rows, and report what happened.

    Args:
        source: a file path, an open binary file with a `.name` (e.g. an upload), or a DataFrame.
        columns: explicit column mapping; None detects it from the column names.
        name: display name; defaults to the file name without extensions.

    Returns:
        The Pool; `pool.report` lists every dropped row.

    Raises:
        PoolError: the file cannot be read or mapped, ids repeat, or no row is usable.
    """
    # 1. read the raw table
    raw, label = _read_source(source)
    # 2. map columns
    if len(raw.frame) == 0 and raw.n_records:
        raise PoolError(_nothing_usable(label, raw.n_records, 0, raw.bad_rows))
    if columns:
        schema, mapping = _schema_of(raw.frame, columns), _check_map(raw.frame, columns, label)
    else:
        schema, mapping = detect_columns(raw.frame, label=label)
    if raw.n_records == 0:
        cols = ", ".join(repr(str(c)) for c in raw.frame.columns)
        raise PoolError(f"{label} has columns ({cols}) but no data rows. Add rows below the header.")
    # 3. validate rows, 4. ids, 5. duplicates
    rows = _validate_rows(raw, mapping, label)
    duplicates = _drop_duplicates(rows)
    if not rows.keep:
        raise PoolError(_nothing_usable(label, raw.n_records, rows.empty, rows.bad, mapping.instruction))
    _check_unique_ids(rows, mapping, label)
    # 6. build the frame and the report
    frame, renamed = _build_frame(raw.frame, rows, mapping)
    bad = sorted(raw.bad_rows + rows.bad)
    notes = raw.notes + _long_text_notes(frame) + renamed
    report = PoolReport(label, schema, mapping, raw.n_records, len(frame), duplicates, rows.empty, bad, notes)
    return Pool(frame=frame, report=report, name=name or _default_name(label))


# --- reading -----------------------------------------------------------------------------------------------------


def _read_source(source: str | Path | pd.DataFrame | BinaryIO) -> tuple[RawTable, str]:
    """Dispatch on the kind of source; returns the raw table and a label for messages."""
    if isinstance(source, pd.DataFrame):
        repeated = sorted({str(c) for c in source.columns[source.columns.duplicated()]})
        if repeated:
            raise PoolError(f"The DataFrame repeats the column name(s) {repeated}; give each column its own name.")
        frame = source.reset_index(drop=True).copy()
        frame.columns = [str(c) for c in frame.columns]
        return RawTable(frame, "dataframe", list(range(1, len(frame) + 1))), "DataFrame"
    if hasattr(source, "read"):
        label = str(getattr(source, "name", "upload"))
        return parse_bytes(source.read(), label), label
    return _read_file(Path(source).expanduser(), str(source)), str(source)


def _read_file(path: Path, label: str) -> RawTable:
    """Read a file's bytes with clear errors for missing paths, folders and unreadable files."""
    if path.is_dir():
        raise PoolError(f"{label} is a folder, not a file. Pass one pool file ({', '.join(FORMATS)}, "
                        "optionally .gz).")
    if not path.exists():
        raise PoolError(f"No file at {label}. Check the path and the current working directory.")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PoolError(f"Cannot read {label} ({exc.strerror or 'read failed'}). Check its permissions.") from exc
    return parse_bytes(data, label)


def _default_name(label: str) -> str:
    """File name without .gz and the format extension ("dolly.jsonl.gz" -> "dolly")."""
    stem = Path(label).name
    stem = stem[:-3] if stem.lower().endswith(".gz") else stem
    return Path(stem).stem or stem


# --- columns -----------------------------------------------------------------------------------------------------


def _schema_of(frame: pd.DataFrame, columns: ColumnMap) -> str:
    """The detected schema's name when an explicit mapping equals detection, else "custom"."""
    try:
        schema, detected = detect_columns(frame)
    except PoolError:
        return "custom"
    return schema if detected == columns else "custom"


def _check_map(frame: pd.DataFrame, columns: ColumnMap, label: str) -> ColumnMap:
    """Every column the mapping names must exist; instruction and input must differ."""
    found = ", ".join(repr(str(c)) for c in frame.columns)
    for role in ("instruction", "input", "id"):
        col = getattr(columns, role)
        if col is not None and col not in frame.columns:
            flag = f"--{role}-column"
            raise PoolError(f"{label} has no column {col!r} (asked for as the {role} column). Columns found: "
                            f"{found}. Pass one of them with {flag} NAME.")
    if columns.input is not None and columns.input == columns.instruction:
        raise PoolError(f"The column {columns.input!r} is mapped as both instruction and input; map the input to "
                        "another column or to none.")
    return columns


def _missing_instruction(frame: pd.DataFrame, label: str) -> str:
    """Explain that no instruction column was found, list the columns, and suggest the likeliest one."""
    cols = [str(c) for c in frame.columns]
    message = (f"{label} has no instruction column. Columns found: {', '.join(map(repr, cols)) or '(none)'}. "
               "Expected 'instruction' (Alpaca, Dolly, self-instruct), 'prompt' or 'text'. Say which column "
               f"holds the instruction with {_MAP_HINT}.")
    texts = {c: frame[c].map(lambda v: len(v) if isinstance(v, str) else 0).mean() for c in frame.columns}
    best = max(texts, key=texts.get, default=None)
    if cols and max(len(c) for c in cols) > 40:
        message += " The first line looks like data: the file may lack a header row (add one, e.g. instruction,input)."
    elif best is not None and texts[best] > 0:
        message += f" The column with the longest text is {str(best)!r}: --instruction-column {shlex.quote(str(best))}."
    return message


# --- rows --------------------------------------------------------------------------------------------------------


class _BadValueError(ValueError):
    """A cell that cannot be used as text; the message is written for the curator."""


@dataclass
class _Rows:
    """Per-row results of validation: positions kept, their texts and ids, and what was dropped."""

    keep: list[int] = field(default_factory=list)  # positions in the raw frame
    instruction: dict[int, str] = field(default_factory=dict)
    input: dict[int, str] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)
    numbers: list[int] = field(default_factory=list)  # record number per raw frame position
    bad: list[tuple[int, str]] = field(default_factory=list)
    empty: int = 0
    structured_input: bool = False  # input came from a list of instances; keep the source column as an extra


def _validate_rows(raw: RawTable, mapping: ColumnMap, label: str) -> _Rows:
    """Turn each raw row into (instruction, input, id) or a bad/empty row."""
    frame, rows = raw.frame, _Rows(numbers=raw.rows)
    _reject_nested_column(frame, mapping.instruction, label)
    instructions = frame[mapping.instruction].tolist()
    inputs = frame[mapping.input].tolist() if mapping.input else [""] * len(frame)
    ids = frame[mapping.id].tolist() if mapping.id else [None] * len(frame)
    for pos, (ins, inp, ident) in enumerate(zip(instructions, inputs, ids, strict=True)):
        where = f"line {raw.lines[pos]}: " if raw.lines else ""
        try:
            text = _as_text(ins, mapping.instruction)
            extra = _input_text(inp, mapping.input or "", rows)
            row_id = _id_text(ident, mapping.id) if mapping.id else None
        except _BadValueError as exc:
            rows.bad.append((raw.rows[pos], f"{where}{exc}"))
            continue
        if not text.strip():
            rows.empty += 1
            continue
        rows.keep.append(pos)
        rows.instruction[pos], rows.input[pos] = text, extra
        rows.ids[pos] = row_id if row_id is not None else content_id(text, extra)
    return rows


def _reject_nested_column(frame: pd.DataFrame, column: str, label: str) -> None:
    """A whole column of objects/lists/structs means the wrong column was mapped: say so once, not per row."""
    values = [v for v in frame[column].head(1000).tolist() if isinstance(v, (*_NESTED, str))]
    if values and all(isinstance(v, _NESTED) for v in values):
        kind = "objects (structs)" if isinstance(values[0], dict) else "lists"
        raise PoolError(f"{label}: the instruction column {column!r} holds nested {kind}, not text, e.g. "
                        f"{preview(values[0])}. Map a text column with {_MAP_HINT}, or flatten the column first.")


def _as_text(value: Any, column: str) -> str:
    """A cell as text: strings unchanged, numbers as str, missing as ""; nested values are bad rows."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, _NESTED):
        kind = "object" if isinstance(value, dict) else "list"
        raise _BadValueError(f"column {column!r} holds a JSON {kind}, not text: {preview(value)}")
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadValueError(f"column {column!r} holds bytes that are not UTF-8 text") from None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return ""
    if value is pd.NA or value is pd.NaT:
        return ""
    return str(value)


def _input_text(value: Any, column: str, rows: _Rows) -> str:
    """The input cell; a self-instruct `instances` list gives its first instance's input."""
    if isinstance(value, str) and column.lower() == "instances" and value.startswith("[{"):
        with contextlib.suppress(ValueError):
            value = json.loads(value)
    if isinstance(value, list | np.ndarray) and all(isinstance(i, dict) and "input" in i for i in value):
        rows.structured_input = True
        return _as_text(value[0]["input"], column) if len(value) else ""
    return _as_text(value, column)


def _id_text(value: Any, column: str) -> str:
    """An id cell as a string; integral floats lose the '.0'; an empty id makes the row bad."""
    if isinstance(value, float | np.floating) and not math.isnan(value) and float(value).is_integer():
        value = int(value)
    text = _as_text(value, column)
    if not text.strip():
        raise _BadValueError(f"the id column {column!r} is empty in this row; give every row an id")
    return text


def _drop_duplicates(rows: _Rows) -> int:
    """Keep the first of each (instruction, input) pair; return how many later copies were dropped."""
    seen: set[tuple[str, str]] = set()
    kept: list[int] = []
    for pos in rows.keep:
        key = (rows.instruction[pos], rows.input[pos])
        if key not in seen:
            seen.add(key)
            kept.append(pos)
    dropped = len(rows.keep) - len(kept)
    rows.keep = kept
    return dropped


def _check_unique_ids(rows: _Rows, mapping: ColumnMap, label: str) -> None:
    """Repeated values in the id column are fatal: selections and decisions are keyed by id."""
    if not mapping.id:
        return
    where: dict[str, list[int]] = {}
    for pos in rows.keep:
        where.setdefault(rows.ids[pos], []).append(rows.numbers[pos])
    repeated = [(i, n) for i, n in where.items() if len(n) > 1]
    if repeated:
        shown = "; ".join(f"{i!r} on rows {', '.join(map(str, n[:5]))}" for i, n in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise PoolError(f"{label}: the id column {mapping.id!r} repeats ids: {shown}{more}. Ids must be unique: fix "
                        "them, or load without an id column (ColumnMap with id=None) so ids come from the content.")


def _nothing_usable(label: str, total: int, empty: int, bad: list[tuple[int, str]], column: str = "") -> str:
    """The message when no row survives validation."""
    if empty == total:
        return (f"{label}: all {total} rows have an empty instruction (column {column!r}). Check that the mapped "
                f"column holds the instructions; choose another with {_MAP_HINT}.")
    first = "; ".join(f"row {n}: {m}" for n, m in sorted(bad)[:3])
    return (f"{label}: none of its {total} rows is usable ({len(bad)} bad, {empty} empty). First problems: {first}. "
            "Fix these rows, or map other columns.")


# --- output frame ------------------------------------------------------------------------------------------------


def _build_frame(source: pd.DataFrame, rows: _Rows, mapping: ColumnMap) -> tuple[pd.DataFrame, list[str]]:
    """Build id, instruction, input, text, then the source's other columns; returns a note on renamed ones."""
    keep = rows.keep
    core = {
        "id": [rows.ids[p] for p in keep],
        "instruction": [rows.instruction[p] for p in keep],
        "input": [rows.input[p] for p in keep],
    }
    core["text"] = [format_text(i, x) for i, x in zip(core["instruction"], core["input"], strict=True)]
    frame = pd.DataFrame(core)
    used = {mapping.instruction, mapping.id} | ({mapping.input} if not rows.structured_input else set())
    picked, renamed = source.iloc[keep], []
    for col in (c for c in source.columns if c not in used):
        name = _free_name(str(col), frame.columns)
        frame[name] = _export_ready(picked[col].tolist())
        renamed += [f"{col!r} -> {name!r}"] if name != col else []
    return frame, [f"Extra columns renamed to keep the core names free: {', '.join(renamed)}."] if renamed else []


def _free_name(col: str, taken: Iterable[str]) -> str:
    """Rename an extra column that clashes with a core column to source_<name> (then _2, _3...)."""
    taken = set(taken)
    if col not in taken:
        return col
    name, k = f"source_{col}", 2
    while name in taken:
        name, k = f"source_{col}_{k}", k + 1
    return name


def _export_ready(values: list[Any]) -> pd.Series:
    """Nested values as JSON strings; a column mixing strings with numbers becomes all strings."""
    values = [to_json(v) if isinstance(v, _NESTED) else v for v in values]
    present = {type(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if str in present and len(present) > 1:
        values = [v if v is None or isinstance(v, str) else str(v) for v in values]
    series = pd.Series(values, dtype=object)
    return series.infer_objects() if len(present) == 1 and series.notna().all() else series


def _long_text_notes(frame: pd.DataFrame) -> list[str]:
    lengths = frame["instruction"].str.len() + frame["input"].str.len()
    long = int((lengths > LONG_TEXT).sum())
    if not long:
        return []
    return [f"{long} row(s) have more than {LONG_TEXT:,} characters of instruction and input (longest: "
            f"{int(lengths.max()):,}). They are kept in full, but the embedding model reads only the first few "
            "hundred words of each."]



def column_map(source: Any, *, instruction: str | None = None, input: str | None = None,  # noqa: A002
               id: str | None = None) -> ColumnMap | None:  # noqa: A002
    """A ColumnMap with some columns named by the curator and the rest detected (None when none is named)."""
    if not (instruction or input or id):
        return None
    given = {k: v for k, v in {"instruction": instruction, "input": input, "id": id}.items() if v}
    try:
        return replace(detect_columns(read_table(source), label=str(source))[1], **given)
    except PoolError:
        if not instruction:
            raise
        return ColumnMap(instruction=instruction, input=input, id=id)


def sample_pool(pool: Pool, size: int, *, seed: int = 0) -> Pool:
    """A seeded random sample of a pool's rows (in their original order), as a pool of its own."""
    n = len(pool.frame)
    if size < 2:
        raise ConfigError(f"A sample needs at least 2 rows (got --sample {size}).")
    if size >= n:
        return pool
    keep = sorted(pd.Series(range(n)).sample(n=size, random_state=seed).tolist())
    frame = pool.frame.iloc[keep].reset_index(drop=True)
    return replace(pool, frame=frame, name=f"{pool.name} (sample of {size}, seed {seed})")
