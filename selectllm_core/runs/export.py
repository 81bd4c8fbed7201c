"""Export a selection for human annotation: CSV, XLSX, JSONL, Parquet or a Label Studio task file.

Pure functions: the caller passes the selection frame and a manifest dict; nothing here opens the
workspace. Every export writes its data file(s) and a ``<stem>.manifest.json`` beside them; a Label
Studio export also writes its labeling config, ``<stem>.labelstudio.xml``.

Column contract (every format): ``EXPORT_COLUMNS`` first, in that order, then the selection's
extra columns in their original order. Internal columns (``text``, anything starting with ``_``)
are dropped. ``origin`` says who chose the row: "model pick", or "curator pick" where a curator
replaced a model pick (a selection without the column, or a row without a value, is a model pick).

CSV choices, made for annotation teams who open the file in Excel or Google Sheets:

- Encoding ``utf-8-sig`` (UTF-8 with a byte-order mark). Without the BOM, Excel on Windows reads a
  double-clicked CSV in the local ANSI code page and mangles every non-ASCII character. pandas,
  Python's ``csv`` (with ``encoding="utf-8-sig"``), Google Sheets, LibreOffice and Label Studio all
  accept the BOM. Excel in locales whose list separator is ``;`` still needs Data > From Text/CSV.
- Every non-numeric cell is quoted, so newlines, commas and quotes inside an instruction survive;
  rows end with ``\\r\\n`` (RFC 4180).
- Formula neutralisation (OWASP "CSV Injection"): a text cell that starts with ``=``, ``+``, ``-``,
  ``@``, a tab or a carriage return is written with a leading apostrophe ``'``, so a spreadsheet
  shows it as text instead of running it (``=HYPERLINK(...)``, ``@SUM(...)``, DDE payloads).
  To keep the rule exactly reversible, a text cell made of one or more apostrophes followed by one
  of those characters gets one more apostrophe as well. ``restore_formulas`` removes exactly one
  apostrophe from such cells and so undoes the rule. Numbers (a real ``-2``) are never touched;
  the text ``"-2"`` is. Column names follow the same rule. JSONL, Parquet and Label Studio files
  are not spreadsheets and keep every value verbatim.

XLSX, for teams who work in a spreadsheet. A spreadsheet guesses the type of every CSV cell: of 32
awkward cells (``3/4``, ``007``, ``1e5``, ``TRUE``, ``12:30``, ``$5``, ...) exported as CSV,
LibreOffice Calc 7.4 turned 13 into dates, times, numbers, percentages, currencies or booleans with
its import option "Detect special numbers" on (``3/4`` a date, ``007`` the number 7, ``TRUE`` a
boolean, ``(1)`` the number -1) and 4 with it off (``007``, ``1e5``, ``1.0``, ``2024-01-02``), and
every id that looks like a number either way (tests/test_export_clients.py). XLSX stores the type
with the cell, so nothing is guessed; as XLSX the same cells came back unchanged, 224 of 224 text
cells, no formula:

- Every text cell is a string cell (``write_string``; number, formula and URL guessing off), so
  ``=1+1``, ``007`` or ``2024-01-02`` open as exactly that text, never as a formula, number or
  date, and need no apostrophe. Missing values are empty cells (LibreOffice shows an empty text
  as an empty cell too). Carriage returns and other control characters are written as Excel's
  escapes (``_x000D_``): Excel restores them, LibreOffice drops them (CRLF shows as one break).
- Real numbers (``cluster``, ``subset``, a score) stay numbers and real booleans booleans, so
  annotators can sort and filter them; they had that type before the export, nothing is guessed.
  Whole numbers beyond 2**53 and infinities are written as text, since a spreadsheet number
  would round or refuse them.
- A cell holds at most 32,767 characters (UTF-16 units) in Excel. A longer text is refused with
  ``ExportError`` naming the row and column, never cut: export such a selection as JSONL or Parquet.
  A sheet holds at most 1,048,575 rows: more are refused, a batch size splits them.
- One sheet, ``selection``: a bold, frozen header row with filters, columns sized to their text.
  The file's creation date is fixed, so the same rows give the same bytes (and the same sha256).
- Text is written as inline strings (XlsxWriter's ``constant_memory``: each row leaves memory once
  the next begins), not through a shared-string table; Excel, LibreOffice and openpyxl read the
  same cells. XlsxWriter copies a text that starts with ``<r>`` and ends with ``</r>`` into the XML
  unescaped, as rich text (a pool row could inject cells or formulas that way): such a text is
  written as plain runs of rich text, which read back as the same text; with a control character
  in it as well, it is refused (the runs would show that character as its escape).

Every writer goes through its rows ``CHUNK_ROWS`` at a time, appending to the file, so the memory a
writer adds stays flat however many rows the file holds (the selection frame itself is read whole:
the column types, and so the bytes, are decided over all its rows). Parquet is the exception: one
Arrow table, written as a single row group as before.

Label Studio: the task file is a JSON list of tasks (row fields in ``data``, ``run_id`` and
``subset`` in ``meta``); ``LABELSTUDIO_CONFIG`` beside it shows the instruction, input and the
model's reason and asks for a response (Create project > Labeling setup > Code, paste the config).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xlsxwriter

from selectllm_core.errors import ExportError
from selectllm_core.plain import json_default, plain
from selectllm_core.runs.manifest import manifest
from selectllm_core.runs.picks import selection_frame
from selectllm_core.store import Store

EXPORT_COLUMNS = ["id", "instruction", "input", "cluster", "subset", "reason", "origin", "run_id"]
FORMATS = ("csv", "xlsx", "jsonl", "parquet", "labelstudio")
EXPORTER_VERSION = "1.2"  # bump when the column contract or a file layout changes (1.2: XLSX inline strings)
CSV_ENCODING = "utf-8-sig"
FORMULA_PREFIX = "'"
MODEL_PICK = "model pick"  # the origin of a row the model chose (a curator's replacement: "curator pick")
XLSX_SHEET = "selection"
XLSX_CELL_LIMIT = 32_767  # characters (UTF-16 units) in one Excel cell
XLSX_MAX_ROWS = 1_048_576  # rows in one Excel sheet, the header row included
CHUNK_ROWS = 2_000  # rows a writer turns into Python values at a time (records, neutralised cells, sheet rows)
LABELSTUDIO_CONFIG_SUFFIX = ".labelstudio.xml"
LABELSTUDIO_CONFIG = """<View>
  <Header value="Instruction"/>
  <Text name="instruction" value="$instruction"/>
  <Header value="Input (may be empty)"/>
  <Text name="input" value="$input"/>
  <Header value="Why it was picked"/>
  <Text name="reason" value="$reason"/>
  <Text name="origin" value="$origin"/>
  <Header value="Response"/>
  <TextArea name="response" toName="instruction" rows="8" editable="true" maxSubmissions="1"
            required="true" placeholder="The response a helpful assistant gives to this instruction"/>
</View>
"""

INTERNAL_COLUMNS = frozenset({"text"})
_EXTENSIONS = {"csv": ".csv", "xlsx": ".xlsx", "jsonl": ".jsonl", "parquet": ".parquet", "labelstudio": ".json"}
_FORMAT_OF_SUFFIX = {ext: fmt for fmt, ext in _EXTENSIONS.items()}
_NEEDS_PREFIX = re.compile(r"'*[=+\-@\t\r]")
_PREFIXED = re.compile(r"'+[=+\-@\t\r]")
_SECRET_WORDS = frozenset(
    {"key", "apikey", "token", "secret", "password", "passwd", "pwd", "credential", "credentials",
     "authorization", "bearer", "cookie"}
)
_LS_META = ("run_id", "subset")  # Label Studio: run bookkeeping goes to "meta", the rest to "data"
_XLSX_WIDE = 60  # characters: the widest column; such columns wrap their text
_XLSX_CREATED = datetime(1980, 1, 1)  # as the zip entries inside: when the export ran is in the manifest
_XLSX_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f]")  # what Excel writes as _xHHHH_ escapes


@dataclass
class ExportResult:
    """What an export wrote: data files in order, the manifest, the number of rows, the Label Studio config."""

    files: list[Path]
    manifest_path: Path
    rows: int
    config_path: Path | None = None  # the labeling config beside a Label Studio task file


# ---------------------------------------------------------------- frame contract


def export_frame(selection: pd.DataFrame, *, run_id: str) -> pd.DataFrame:
    """Put a selection into the export column contract.

    Args:
        selection: selected rows; needs ``id`` and ``instruction``. ``input`` and ``reason``
            default to ``""`` and ``origin`` to ``"model pick"`` (column absent or value missing);
            ``cluster`` and ``subset`` become nullable integers, all missing when absent.
        run_id: written into the ``run_id`` column of every row.

    Returns:
        A new frame: ``EXPORT_COLUMNS`` in order, then extra columns in their original order,
        internal columns dropped, a fresh 0..n-1 index, ``id`` as text.
    """
    missing = [c for c in ("id", "instruction") if c not in selection.columns]
    if missing:
        raise ExportError(
            f"the selection has no {', '.join(missing)} column; export the frame the workspace "
            "returns for a run (it carries id and instruction)"
        )
    frame = selection.reset_index(drop=True).copy()
    frame["id"] = frame["id"].astype(str)
    for column, default in (("input", ""), ("reason", ""), ("origin", MODEL_PICK)):
        frame[column] = frame[column].fillna(default) if column in frame.columns else default
    for column in ("cluster", "subset"):
        absent = pd.Series(pd.NA, index=frame.index, dtype="Int64")
        frame[column] = _as_int(frame[column]) if column in frame.columns else absent
    frame["run_id"] = run_id
    extras = [c for c in selection.columns if c not in EXPORT_COLUMNS and not _is_internal(c)]
    return frame[EXPORT_COLUMNS + extras]


def _as_int(series: pd.Series) -> pd.Series:
    """Whole-number labels as nullable integers (a missing value turns 3 into 3.0)."""
    if pd.api.types.is_float_dtype(series):
        present = series.dropna()
        if (present == present.round()).all():
            return series.astype("Int64")
    return series


def _is_internal(column: object) -> bool:
    """Columns that serve the studio, not the annotators."""
    return column in INTERNAL_COLUMNS or str(column).startswith("_")


# ---------------------------------------------------------------- formula neutralisation


def neutralize_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Prefix spreadsheet-dangerous text cells (and column names) with an apostrophe.

    Args:
        frame: any frame; it is not modified.

    Returns:
        A copy where each text cell matching the module's OWASP rule starts with ``'``.
        Non-text cells (numbers, missing values) are unchanged.
    """
    return _map_text(frame, _neutralize_cell)


def restore_formulas(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo ``neutralize_formulas`` exactly (for round-trip checks of a CSV export).

    Args:
        frame: a frame read back from a CSV export; it is not modified.

    Returns:
        A copy where each text cell made of apostrophes followed by ``= + - @ \\t \\r`` loses
        one leading apostrophe.
    """
    return _map_text(frame, _restore_cell)


def _neutralize_cell(value: object) -> object:
    """Add the apostrophe to one cell when the rule says so."""
    if isinstance(value, str) and _NEEDS_PREFIX.match(value):
        return FORMULA_PREFIX + value
    return value


def _restore_cell(value: object) -> object:
    """Remove the apostrophe ``_neutralize_cell`` added."""
    if isinstance(value, str) and _PREFIXED.match(value):
        return value[len(FORMULA_PREFIX):]
    return value


def _map_text(frame: pd.DataFrame, fn: Callable[[object], object]) -> pd.DataFrame:
    """Apply ``fn`` to every text-typed cell and every column name."""
    out = frame.copy()
    for column in out.columns:
        series = out[column]
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype(object)
        if pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series):
            out[column] = series.map(fn, na_action="ignore")
    out.columns = [fn(c) for c in out.columns]
    return out


# ---------------------------------------------------------------- manifest


def redact_secrets(value: Any) -> Any:
    """Drop every dict key that names a secret (api_key, token, secret, password, ...).

    Args:
        value: a JSON-like value (dicts, lists, scalars); it is not modified.

    Returns:
        A copy without secret-named keys at any depth. Names are split into words
        (``openai_api_key`` -> openai/api/key, ``apiKey`` -> api/key), so ``prompt_tokens`` stays.
    """
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items() if not _is_secret_name(str(k))}
    if isinstance(value, (list, tuple)):
        return [redact_secrets(v) for v in value]
    return value


def _is_secret_name(name: str) -> bool:
    """True for key names such as api_key, apiKey, X-Auth-Token, client_secret, password."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    words = {w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w}
    return bool(words & _SECRET_WORDS)


def _manifest(caller: dict, *, run_id: str, fmt: str, columns: list[str],
              files: list[dict], config: dict | None = None) -> dict:
    """The caller's run facts without secrets, plus this export's facts under ``"export"``.

    Nesting keeps the caller's own keys (its ``created_at`` is the run's, not the export's).
    """
    facts: dict[str, Any] = {
        "run_id": run_id,
        "format": fmt,
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "columns": columns,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exporter_version": EXPORTER_VERSION,
    }
    if fmt == "csv":
        facts["csv"] = {"encoding": CSV_ENCODING, "formula_prefix": FORMULA_PREFIX,
                        "formula_rule": "OWASP CSV injection; undo with export.restore_formulas"}
    if fmt == "xlsx":
        facts["xlsx"] = {"sheet": XLSX_SHEET, "text": "every text cell is a string cell, never a formula",
                         "numbers": "numeric columns stay numbers; missing values are empty cells"}
    if config is not None:
        facts["labelstudio"] = {**config, "setup": "Label Studio: Create project > Labeling setup > Code, "
                                "paste the config, then import the task file(s) under Data Import"}
    return {**plain(redact_secrets(caller)), "export": facts}


# ---------------------------------------------------------------- writers


def _chunks(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    """The frame ``CHUNK_ROWS`` rows at a time, in order (an empty frame is one empty chunk)."""
    for start in range(0, max(len(frame), 1), CHUNK_ROWS):
        yield frame.iloc[start:start + CHUNK_ROWS]


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Spreadsheet-safe CSV (see the module docstring); the header, then each chunk appended."""
    with open(path, "w", encoding=CSV_ENCODING, newline="") as fh:  # the codec writes the BOM once, first
        for i, chunk in enumerate(_chunks(frame)):
            neutralize_formulas(chunk).to_csv(fh, index=False, header=i == 0, quoting=csv.QUOTE_NONNUMERIC,
                                              lineterminator="\r\n")


def _write_jsonl(frame: pd.DataFrame, path: Path) -> None:
    """One JSON object per line, UTF-8, non-ASCII kept as is."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for chunk in _chunks(frame):
            fh.writelines(_line_safe(_dumps(record)) + "\n" for record in _records(chunk))


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet through pyarrow; text columns stay strings."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ExportError(
            f"cannot write Parquet: {exc}; a column mixes types, convert it with .astype(str) "
            "or export as CSV/JSONL"
        ) from exc
    pq.write_table(table, path)


def _write_xlsx(frame: pd.DataFrame, path: Path) -> None:
    """One sheet where text is always a string cell (see the module docstring)."""
    if len(frame) >= XLSX_MAX_ROWS:
        raise ExportError(f"{len(frame):,} rows do not fit one XLSX sheet (at most {XLSX_MAX_ROWS - 1:,}); "
                          "pass a batch size to split them into several files")
    options = {"constant_memory": True, "strings_to_numbers": False, "strings_to_formulas": False,
               "strings_to_urls": False}
    with xlsxwriter.Workbook(str(path), options) as book:
        book.set_properties({"created": _XLSX_CREATED})  # the same rows give the same bytes
        sheet = book.add_worksheet(XLSX_SHEET)
        bold, wrap = book.add_format({"bold": True}), book.add_format({"text_wrap": True, "valign": "top"})
        names = [str(c) for c in frame.columns]
        for col, name in enumerate(names):  # before any row: a row is written out whole, with its columns' formats
            width = _xlsx_width(name, frame.iloc[:200, col])
            sheet.set_column(col, col, width, wrap if width == _XLSX_WIDE else None)
        for col, name in enumerate(names):
            _xlsx_cell(sheet, 0, col, name, where=f"the name of column {col + 1}", fmt=bold)
        row = 1
        for chunk in _chunks(frame):
            for record in _records(chunk):
                for col, value in enumerate(record.values()):
                    _xlsx_cell(sheet, row, col, value, where=f"row id {record['id']!r}, column {names[col]!r}")
                row += 1
        sheet.freeze_panes(1, 0)
        sheet.autofilter(0, 0, len(frame), len(names) - 1)


def _xlsx_cell(sheet: Any, row: int, col: int, value: Any, *, where: str, fmt: Any = None) -> None:
    """Write one value with its own type: text as a string cell, whole numbers and decimals as numbers."""
    if value is None:
        return  # missing: an empty cell
    if isinstance(value, bool):
        sheet.write_boolean(row, col, value, fmt)
    elif (isinstance(value, float) and math.isfinite(value)) or (isinstance(value, int) and abs(value) <= 2**53):
        sheet.write_number(row, col, value, fmt)
    else:
        text = value if isinstance(value, str) else _dumps(value) if isinstance(value, (dict, list)) else str(value)
        units = len(text.encode("utf-16-le")) // 2
        if units > XLSX_CELL_LIMIT:
            raise ExportError(
                f"{where} holds {units:,} characters, more than the {XLSX_CELL_LIMIT:,} an XLSX cell can hold; "
                "XLSX export never cuts text: export this selection as JSONL or Parquet, or shorten that text"
            )
        if text.startswith("<r>") and text.endswith("</r>"):
            _xlsx_runs(sheet, row, col, text, where=where, fmt=fmt)
        else:
            sheet.write_string(row, col, text, fmt)


def _xlsx_runs(sheet: Any, row: int, col: int, text: str, *, where: str, fmt: Any = None) -> None:
    """A text XlsxWriter would copy into the XML as rich text, written as plain runs that XlsxWriter escapes."""
    if _XLSX_CONTROL.search(text):
        raise ExportError(
            f"{where} starts with <r>, ends with </r> and holds a control character: XLSX cannot store that text "
            "exactly; export this selection as CSV, JSONL or Parquet, or change that text"
        )
    sheet.write_rich_string(row, col, text[:1], text[1:2], text[2:], *([fmt] if fmt is not None else []))


def _xlsx_width(name: str, values: pd.Series) -> int:
    """A column width (in characters) from the header and the first lines of the first rows."""
    longest = max([len(name), *(len(str(v).split("\n", 1)[0]) for v in values.dropna())])
    multiline = any(isinstance(v, str) and "\n" in v for v in values)
    return _XLSX_WIDE if multiline else min(max(longest + 2, 8), _XLSX_WIDE)


def labelstudio_config() -> str:
    """The labeling config that goes with a Label Studio task file.

    Returns:
        XML for Label Studio's Create project > Labeling setup > Code. It shows the task's
        ``instruction``, ``input``, ``reason`` and ``origin`` (keys of every task's ``data``) and
        asks for a ``response`` in a text area.
    """
    return LABELSTUDIO_CONFIG


def _write_labelstudio(frame: pd.DataFrame, path: Path) -> None:
    """A JSON list of Label Studio tasks: row fields in ``data``, run bookkeeping in ``meta``.

    Written a task at a time: ``[``, the tasks joined by ``", "``, ``]``, exactly what ``json.dumps`` of the list gives.
    """
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("[")
        separator = ""
        for chunk in _chunks(frame):
            for rec in _records(chunk):
                task = {"data": {k: v for k, v in rec.items() if k not in _LS_META},
                        "meta": {k: rec[k] for k in _LS_META}}
                fh.write(separator + _dumps(task))
                separator = ", "
        fh.write("]\n")


_WRITERS: dict[str, Callable[[pd.DataFrame, Path], None]] = {
    "csv": _write_csv, "xlsx": _write_xlsx, "jsonl": _write_jsonl, "parquet": _write_parquet,
    "labelstudio": _write_labelstudio,
}


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as plain dicts with missing values as None."""
    return [{str(k): plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def _dumps(value: Any, indent: int | None = None) -> str:
    """Strict JSON (no NaN), non-ASCII kept."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=json_default, indent=indent)
    except (TypeError, ValueError) as exc:
        raise ExportError(f"cannot write JSON: {exc}; convert such values to text (a column: .astype(str))") from exc


def _line_safe(line: str) -> str:
    """Escape the characters str.splitlines() breaks on but json.dumps leaves raw."""
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("\x85", "\\u0085")


# ---------------------------------------------------------------- paths and atomic writes


def _resolve_target(out: Path | str, fmt: str | None, run_id: str) -> tuple[Path, str, str]:
    """(directory, file stem, format) for ``out``: a data file path or a directory."""
    out = Path(out)
    if fmt is not None and fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if out.is_dir() or not out.suffix:
        stem = "selectllm-" + (re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-.") or "run")
        return out, stem, fmt or "csv"
    implied = _FORMAT_OF_SUFFIX.get(out.suffix.lower())
    if implied is None:
        raise ExportError(
            f"cannot tell the format of {out.name!r}; name the file with one of "
            f"{', '.join(_EXTENSIONS.values())} or pass a directory"
        )
    if fmt is not None and fmt != implied:
        raise ExportError(
            f"{out.name!r} names a {implied} file but the format asked is {fmt}; "
            f"rename it to end in {_EXTENSIONS[fmt]} or pass fmt={implied!r}"
        )
    return out.parent, out.stem, implied


def _prepare_dir(directory: Path) -> None:
    """Create the export directory, or explain why it cannot be used."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot create export directory {directory}: {exc.strerror or exc}; "
            "choose a folder you can write to"
        ) from exc
    if not os.access(directory, os.W_OK):
        raise ExportError(f"export directory {directory} is not writable; choose another folder")


def _stage(directory: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Write through ``write`` into a hidden temp file in ``directory``; remove it on failure."""
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _sha256(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batches(frame: pd.DataFrame, stem: str, ext: str,
             batch_size: int | None) -> list[tuple[str, pd.DataFrame]]:
    """(file name, rows) per output file; batch files are numbered from 001."""
    if batch_size is None:
        return [(stem + ext, frame)]
    count = math.ceil(len(frame) / batch_size)
    width = max(3, len(str(count)))
    return [
        (f"{stem}-batch-{i + 1:0{width}d}{ext}", frame.iloc[i * batch_size:(i + 1) * batch_size])
        for i in range(count)
    ]


def _stage_all(directory: Path, parts: list[tuple[str, pd.DataFrame]],
               write: Callable[[pd.DataFrame, Path], None]) -> list[tuple[Path, Path, int]]:
    """Stage every part as a temp file: (temp path, final path, rows); none left on failure."""
    staged: list[tuple[Path, Path, int]] = []
    try:
        for name, part in parts:
            tmp = _stage(directory, name, lambda p, part=part: write(part, p))
            staged.append((tmp, directory / name, len(part)))
    except BaseException:
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return staged


def _remove_stale_batches(directory: Path, stem: str, ext: str, keep: set[str]) -> None:
    """Delete ``<stem>-batch-NNN<ext>`` files an earlier export left and this one did not write."""
    pattern = re.compile(re.escape(stem) + r"-batch-\d{3,}" + re.escape(ext))
    for path in directory.iterdir():
        if path.name not in keep and pattern.fullmatch(path.name) and path.is_file():
            path.unlink()


# ---------------------------------------------------------------- entry point


def write_export(
    selection: pd.DataFrame,
    *,
    out: Path | str,
    fmt: str | None = None,
    run_id: str,
    manifest: dict,
    batch_size: int | None = None,
) -> ExportResult:
    """Write a selection for annotation, atomically, with a manifest beside it.

    Args:
        selection: the rows to export (see ``export_frame`` for the column contract).
        out: a data file path (``.csv``, ``.xlsx``, ``.jsonl``, ``.parquet``, ``.json`` = Label Studio)
            or a directory (files are named ``selectllm-<run_id>``).
        fmt: one of ``FORMATS``; default: implied by ``out``'s extension, else ``"csv"``.
        run_id: the run the selection comes from.
        manifest: run facts to record (pool, method, params, prompt, backend); keys naming
            secrets are dropped at any depth.
        batch_size: when given, write ``<stem>-batch-001<ext>``, ... of at most this many rows.

    Returns:
        ExportResult with the data files in order, the manifest path, the row count and, for Label
        Studio, the labeling config's path.
    """
    # 1. validate everything before touching the disk
    if fmt is not None:
        fmt = fmt.strip().lower()
    directory, stem, fmt = _resolve_target(out, fmt, run_id)
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size < 1):
        raise ExportError(f"batch size must be a whole number of at least 1, got {batch_size!r}")
    if len(selection) == 0:
        raise ExportError("nothing to export: accept some picks or export all picks with --all")
    frame = export_frame(selection, run_id=run_id)
    _prepare_dir(directory)

    # 2. stage data files, the Label Studio config and the manifest as hidden temp files; nothing final
    #    exists until all are ready
    parts = _batches(frame, stem, _EXTENSIONS[fmt], batch_size)
    manifest_path = directory / f"{stem}.manifest.json"
    config_path = directory / f"{stem}{LABELSTUDIO_CONFIG_SUFFIX}" if fmt == "labelstudio" else None
    staged: list[tuple[Path, Path, int]] = []
    try:
        staged = _stage_all(directory, parts, _WRITERS[fmt])
        files = [{"name": final.name, "rows": rows, "sha256": _sha256(tmp)} for tmp, final, rows in staged]
        config = None
        if config_path is not None:
            staged.append((_stage(directory, config_path.name,
                                  lambda p: p.write_text(labelstudio_config(), encoding="utf-8")), config_path, 0))
            config = {"config": config_path.name, "sha256": _sha256(staged[-1][0])}
        body = _manifest(manifest, run_id=run_id, fmt=fmt, columns=[str(c) for c in frame.columns], files=files,
                         config=config)
        text = _dumps(body, indent=2) + "\n"
        staged.append((_stage(directory, manifest_path.name, lambda p: p.write_text(text, encoding="utf-8")),
                       manifest_path, 0))
    except BaseException as exc:
        for tmp, _, _ in staged:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"could not write the export in {directory}: {exc}; "
                              "check free disk space and permissions") from exc
        raise
    for tmp, final, _ in staged:  # data files first, the manifest that describes them last
        os.replace(tmp, final)

    # 3. a re-export with fewer batches must not leave an older batch file next to the new ones
    written = [final for _, final, _ in staged[:len(parts)]]
    _remove_stale_batches(directory, stem, _EXTENSIONS[fmt], keep={f.name for f in written})
    return ExportResult(files=written, manifest_path=manifest_path, rows=len(frame), config_path=config_path)


def export_run(store: Store, run_id: str, out: str | Path, *, fmt: str | None = None, which: str = "selected",
               batch_size: int | None = None, record: bool = True) -> ExportResult:
    """Write any run's picks for annotation, with its manifest beside them.

    Args:
        store: the workspace.
        run_id: the run.
        out: a file path (its extension picks the format) or a folder.
        fmt: csv (default), xlsx, jsonl, parquet or labelstudio.
        which: "selected" (not rejected), "accepted" or "all".
        batch_size: rows per file; None writes one file.
        record: remember the exported picks, so a later retry never drops them from the selection (the
            Export page prepares its download without recording, and records when it is downloaded).

    Returns:
        An ExportResult.
    """
    frame = selection_frame(store, run_id, which=which)
    kwargs = {"fmt": fmt} if fmt else {}
    result = write_export(frame, out=out, run_id=run_id, manifest=manifest(store, run_id, which=which),
                          batch_size=batch_size, **kwargs)
    if record:
        store.mark_exported(run_id, frame["id"])
    return result
