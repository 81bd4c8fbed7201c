"""Bytes to text, checked before they are trusted.

The format comes from the file extension, but the bytes are checked before they are trusted: a renamed Excel
workbook, a zip, bzip2 or xz archive, a truncated gzip, a binary file, or Parquet under a text name each give a
PoolError that says what the file really is and how to fix it, never a parser traceback.

Encoding policy, in a fixed order so the same bytes always give the same text (and ids): UTF-16 with a BOM
(Excel's "Unicode Text"), else UTF-8 (a BOM is fine), else Windows-1252 line by line (a line that is valid UTF-8
stays UTF-8), with Latin-1 for the five bytes cp1252 leaves undefined. A report note names the encoding used and the
first non-UTF-8 byte. Bytes that are not text (known binary signatures, a NUL-heavy file such as UTF-16 without a
BOM, or more than 5% control bytes) raise a PoolError before any fallback, so binary data is never read as
mojibake. charset-normalizer is not used: on short Western files it guesses cp1250 and turns "à" into "ŕ".
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib

from selectllm_core.errors import PoolError

SAVE_AS = "save it as .csv, .tsv, .jsonl, .json or .parquet (optionally .gz)"
EXCEL_FIX = "In Excel use File > Save As > 'CSV UTF-8 (Comma delimited)' and load the .csv"
_NOT_IMAGE = "Pick the pool file itself (.csv, .tsv, .jsonl, .json or .parquet), not a picture"
_MAGIC = [  # (prefix, what it is, how to fix)
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Excel/Office (.xls) file", EXCEL_FIX),
    (b"BZh", "bzip2-compressed", "Decompress it (bunzip2) or re-compress it with gzip"),
    (b"\xfd7zXZ\x00", "xz-compressed", "Decompress it (unxz) or re-compress it with gzip"),
    (b"(\xb5/\xfd", "zstd-compressed", "Decompress it (unzstd) or re-compress it with gzip"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "Extract the pool file from it"),
    (b"%PDF", "a PDF document", "Export the pool as a table and " + SAVE_AS),
    (b"\x89PNG\r\n\x1a\n", "a PNG image", _NOT_IMAGE),
    (b"\xff\xd8\xff", "a JPEG image", _NOT_IMAGE),
    ((b"GIF87a", b"GIF89a"), "a GIF image", _NOT_IMAGE),
    (b"SQLite format 3\x00", "an SQLite database",
     "Export the table as CSV (sqlite3 -header -csv DB 'SELECT * FROM t' > pool.csv)"),
    (b"ARROW1", "an Arrow/Feather file", "Save it as Parquet (pandas: pd.read_feather(PATH).to_parquet(OUT))"),
]
NUL = "\x00"
_BLOCK = 8192  # bytes checked at a time for binary content
_CONTROL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 12, 13))  # NUL included; tab, LF, FF, CR are text
_CP1252_UNDEFINED = "\x81\x8d\x8f\x90\x9d"  # Latin-1 keeps these five as C1 control characters
_LATIN1_TO_CP1252 = {b: bytes([b]).decode("cp1252") for b in range(0x80, 0xA0) if chr(b) not in _CP1252_UNDEFINED}


def decompress(data: bytes, name: str, notes: list[str]) -> bytes:
    """Gunzip when the bytes are gzip; say so clearly when the gzip stream is cut short or corrupt."""
    if not data.startswith(b"\x1f\x8b"):
        if name.lower().endswith(".gz") and data:
            notes.append(f"{name} is named .gz but is not compressed; read it as plain text.")
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise PoolError(
            f"{name} is a truncated or corrupt gzip file ({exc}). Download or copy it again, "
            "or re-compress the original with gzip."
        ) from exc


def reject_containers(data: bytes, name: str, fmt: str) -> None:
    """Refuse zip/Office/other archives and non-Parquet bytes under a .parquet name."""
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise PoolError(f"{name} is {_describe_zip(data)}, not a {fmt.upper()} file. {_zip_fix(data)}.")
    for magic, what, fix in _MAGIC:
        if data.startswith(magic):
            raise PoolError(f"{name} is {what}, not a {fmt.upper()} file. {fix}.")
    if fmt == "parquet":
        start = data[:40].decode("utf-8", "replace").strip().split("\n")[0]
        raise PoolError(f"{name} is not a Parquet file (no PAR1 signature; it starts with {start!r}). "
                        "Give it the extension that matches its content, or re-export it as Parquet.")


def _describe_zip(data: bytes) -> str:
    try:
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    except (zipfile.BadZipFile, OSError):
        return "a damaged zip archive"
    if any(n.startswith("xl/") for n in names):
        return "an Excel workbook (.xlsx) renamed"
    if any(n.startswith("word/") for n in names):
        return "a Word document (.docx) renamed"
    return f"a zip archive holding {len(names)} file(s)"


def _zip_fix(data: bytes) -> str:
    return EXCEL_FIX if b"xl/" in data[:4096] else "Extract the pool file from the archive and load that"


def decode(data: bytes, name: str, notes: list[str]) -> str:
    """Decode BOM-marked UTF-16, else UTF-8 (BOM allowed), else cp1252 per line; refuse binary data."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return _decode_utf16(data, name, notes)
    data = _strip_nul_padding(data, name, notes)
    _reject_binary(data[:_BLOCK], name)
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        for start in range(_BLOCK, len(data), _BLOCK):  # every block, before any of it is read as cp1252
            _reject_binary(data[start:start + _BLOCK], name, start)
        text, utf8_lines = _decode_cp1252(data)
        notes.append(_cp1252_note(data, exc.start, text, utf8_lines, name))
        return text


def _decode_utf16(data: bytes, name: str, notes: list[str]) -> str:
    """Decode UTF-16 that starts with a byte-order mark."""
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError as exc:
        raise PoolError(f"{name} starts with a UTF-16 mark but is not valid UTF-16 (byte offset "
                        f"{exc.start}). Re-save it as UTF-8.") from exc
    notes.append(f"{name} is UTF-16 text; decoded it (UTF-8 is preferred).")
    return text


def _strip_nul_padding(data: bytes, name: str, notes: list[str]) -> bytes:
    """Drop NUL bytes that pad the end of the file (left by a crash or a preallocating copy)."""
    body = data.rstrip(b"\x00")
    if not body:
        raise PoolError(f"{name} holds only NUL bytes ({len(data):,}), no text: it was probably never written "
                        f"completely. Export the pool again; {SAVE_AS}.")
    if len(body) < len(data):
        notes.append(f"{name}: removed {len(data) - len(body):,} NUL byte(s) padding the end of the file.")
    return body


def _reject_binary(block: bytes, name: str, offset: int = 0) -> None:
    """Refuse a block that is not text: NUL-heavy (binary, or UTF-16 without a BOM) or over 5% control bytes."""
    nuls = block.count(0)
    if nuls > len(block) // 5:
        raise PoolError(_nul_heavy_message(block, nuls, name))
    controls = len(block) - len(block.translate(None, _CONTROL_BYTES))
    if controls > max(len(block) // 20, 8):
        where = f"of the {len(block):,} bytes from byte offset {offset:,}" if offset else "of its first bytes"
        raise PoolError(f"{name} looks like a binary file, not text ({controls / len(block):.0%} {where} are "
                        f"control bytes such as NUL). Export the pool as UTF-8 text and {SAVE_AS}.")


def _nul_heavy_message(data: bytes, nuls: int, name: str) -> str:
    """Say whether a NUL-heavy file is UTF-16 without a BOM (NULs on one byte parity) or binary."""
    odd = data[1::2].count(0)
    if max(odd, nuls - odd) >= 0.9 * nuls:
        codec = "utf-16le" if odd > nuls - odd else "utf-16be"
        return (f"{name} looks like UTF-16 text without a byte-order mark ({codec}: every other byte is NUL), "
                "which is not read. Re-save it as UTF-8 (Excel: Save As > 'CSV UTF-8'; shell: iconv -f "
                f"{codec} -t utf-8 IN > OUT) and load it again.")
    return (f"{name} looks like a binary file, not text ({nuls / len(data):.0%} of its bytes are NUL). "
            f"Export the pool as UTF-8 text and {SAVE_AS}.")


def _decode_cp1252(data: bytes) -> tuple[str, int]:
    """Decode line by line: UTF-8 where a whole line is valid UTF-8, else cp1252 (Latin-1 where it is undefined).

    Returns the text and the number of non-ASCII lines that were read as UTF-8 (a file mixing encodings).
    """
    parts: list[str] = []
    utf8_lines = 0
    for line in data.splitlines(keepends=True):
        try:
            parts.append(line.decode("utf-8"))
            utf8_lines += not line.isascii()
        except UnicodeDecodeError:
            parts.append(line.decode("latin-1").translate(_LATIN1_TO_CP1252))
    return "".join(parts), utf8_lines


def _cp1252_note(data: bytes, offset: int, text: str, utf8_lines: int, name: str) -> str:
    """The report note naming the fallback encoding, the first non-UTF-8 byte and its line."""
    line = data.count(b"\n", 0, offset) + 1
    undefined = [f"0x{ord(c):02X}" for c in _CP1252_UNDEFINED if c in text]
    how = "Windows-1252 (cp1252)"
    if undefined:
        how += (f" and Latin-1 for the byte(s) {', '.join(undefined)} that cp1252 leaves undefined (read as "
                "invisible control characters)")
    mixed = f"; {utf8_lines} line(s) that are valid UTF-8 were read as UTF-8" if utf8_lines else ""
    return (f"{name}: read as {how}, not UTF-8 (the first non-UTF-8 byte is 0x{data[offset]:02X} on line {line})"
            f"{mixed}: check accented letters in the preview; re-save as UTF-8 to silence this note.")
