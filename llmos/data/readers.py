"""Read CSV, TSV, JSONL, JSON and CoNLL files into a ``RawTable``: column names plus records.

Reading is defensive because the files come from users: every line is read with a length cap (so a
file without newlines cannot exhaust memory or hang a parse), decoded strictly (a wrong encoding is
reported with its line, never replaced with U+FFFD), and each problem names the file and line. What
the columns *mean* (text, label, ...) is decided afterwards, in ``mapping``.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from llmos.data.columns import known_column
from llmos.errors import ImportFailed, InvalidInput

MAX_LINE_BYTES = 1 << 20  # 1 MiB: longer than any sane row, short enough to fail fast on junk
_SNIFF_BYTES = 64 << 10
MAX_JSON_BYTES = 1 << 30  # a JSON list is parsed whole; bigger data belongs in JSONL
csv.field_size_limit(max(csv.field_size_limit(), MAX_LINE_BYTES))


class Format(str, Enum):
    csv = "csv"
    tsv = "tsv"
    jsonl = "jsonl"
    json = "json"
    conll = "conll"


_EXTENSIONS = {".csv": Format.csv, ".tsv": Format.tsv, ".tab": Format.tsv, ".jsonl": Format.jsonl,
               ".ndjson": Format.jsonl, ".json": Format.json, ".conll": Format.conll}
_TAG = re.compile(r"^(O|[BIESLU]-\S+)$")


@dataclass
class ReadOptions:
    format: Format | None = None  # None: from the extension, else sniffed from the content
    header: bool | None = None  # CSV/TSV: None decides from the first row
    encoding: str = "utf-8"
    max_line_bytes: int = MAX_LINE_BYTES


@dataclass
class RawTable:
    """Records as read, before mapping: ``line`` is the 1-based line where each record starts."""

    format: Format
    columns: list[str]
    records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    header: bool = True


def read_table(path: Path, opts: ReadOptions | None = None, *, display_name: str | None = None) -> RawTable:
    """Read a whole file; raises ImportFailed naming the file, line and problem."""
    opts = opts or ReadOptions()
    name = display_name or path.name
    _check_encoding_name(opts.encoding)
    head = _head(path, name)
    fmt = opts.format or detect_format(path, head, name)
    reader = {Format.csv: _read_delimited, Format.tsv: _read_delimited, Format.jsonl: _read_jsonl,
              Format.json: _read_json, Format.conll: _read_conll}[fmt]
    table = reader(path, fmt, opts, name)
    if not table.records:
        raise ImportFailed(f"{name}: no data rows found (the file holds only a header, blank lines or "
                           "comments)")
    return table


# -- bytes, lines and encodings ------------------------------------------------------------------
def _check_encoding_name(encoding: str) -> None:
    try:
        ascii_compatible = "a,\t\n".encode(codecs.lookup(encoding).name) == b"a,\t\n"
    except LookupError:
        raise InvalidInput(f"unknown encoding {encoding!r}; use e.g. utf-8, latin-1 or cp1252") from None
    if not ascii_compatible:
        raise InvalidInput(f"encoding {encoding!r} is not supported; convert the file to UTF-8 first "
                           f"(e.g. iconv -f {encoding} -t utf-8)")


def _head(path: Path, name: str) -> bytes:
    """The first bytes, after refusing empty, binary and UTF-16/32 files."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as exc:
        raise ImportFailed(f"cannot read {name}: {exc.strerror}") from None
    if not head.strip():
        raise ImportFailed(f"{name} is empty")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFailed(f"{name} is UTF-16 text; convert it to UTF-8 first (iconv -f utf-16 -t utf-8)")
    if b"\x00" in head:
        raise ImportFailed(f"{name} looks like a binary file (it contains NUL bytes), not a text dataset")
    return head


def _decode(raw: bytes, encoding: str, name: str, line: int) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        bad = raw[exc.start:exc.start + 1].hex()
        raise ImportFailed(
            f"{name}: line {line} is not valid {encoding} (byte 0x{bad} at column {exc.start + 1}); "
            "if the file uses another encoding pass it (--encoding latin-1, cp1252, ...) or convert it "
            "to UTF-8", line=line) from None


def iter_lines(path: Path, opts: ReadOptions, name: str) -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its newline) pairs; a line over the cap is an error."""
    cap = opts.max_line_bytes
    with open(path, "rb") as fh:
        number = 0
        while raw := fh.readline(cap + 1):
            number += 1
            if len(raw) > cap and not raw.endswith(b"\n"):
                raise ImportFailed(f"{name}: line {number} is longer than {cap:,} bytes; the file is not a "
                                   "line-based dataset or a row is corrupt", line=number)
            if number == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
            yield number, _decode(raw, opts.encoding, name, number)


# -- format detection ----------------------------------------------------------------------------
def detect_format(path: Path, head: bytes, name: str) -> Format:
    by_ext = _EXTENSIONS.get(path.suffix.lower())
    if by_ext is not None:
        return by_ext
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    first = text.lstrip()[:1]
    if first == "[":
        return Format.json
    if first == "{":
        return Format.jsonl
    if lines and _looks_conll(lines):
        return Format.conll
    if lines and all("\t" in ln for ln in lines[:-1] or lines):
        return Format.tsv
    if lines and "," in lines[0]:
        return Format.csv
    raise ImportFailed(f"cannot tell the format of {name}; name it .csv, .tsv, .jsonl, .json or .conll, or "
                       "pass the format (--format)")


def _looks_conll(lines: list[str]) -> bool:
    parts = [ln.split() for ln in lines if not ln.startswith("-DOCSTART-")]
    return bool(parts) and all(len(p) >= 2 and _TAG.match(p[-1]) for p in parts)


# -- delimited files -----------------------------------------------------------------------------
def _read_delimited(path: Path, fmt: Format, opts: ReadOptions, name: str) -> RawTable:
    # TSV is read literally (no quoting), as GLUE and UCI publish it; quotes in text are just text.
    kwargs: dict[str, Any] = ({"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt is Format.tsv
                              else {"delimiter": ","})
    lines = (text for _, text in iter_lines(path, opts, name))
    reader = csv.reader(lines, strict=True, **kwargs)
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if fields and any(f.strip() for f in fields):
                rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise ImportFailed(f"{name}: line {reader.line_num}: malformed {fmt.value.upper()} ({exc})",
                           line=reader.line_num) from None
    if not rows:
        raise ImportFailed(f"{name} holds no rows")
    header = opts.header if opts.header is not None else looks_like_header(rows[0][1], [r for _, r in rows[1:50]])
    columns = _column_names(rows[0][1], header, name)
    body = rows[1:] if header else rows
    return RawTable(fmt, columns, [(line, _record(fields, columns, name, line)) for line, fields in body], header)


def _column_names(first: list[str], header: bool, name: str) -> list[str]:
    if not header:
        return [str(i) for i in range(len(first))]
    names = [c.strip() for c in first]
    dupes = sorted({c for c in names if names.count(c) > 1})
    if dupes:
        raise ImportFailed(f"{name}: the header repeats column name(s) {', '.join(map(repr, dupes))}")
    return names


def _record(fields: list[str], columns: list[str], name: str, line: int) -> dict[str, Any]:
    if len(fields) != len(columns):
        raise ImportFailed(f"{name}: line {line} has {len(fields)} field(s) but the file has {len(columns)} "
                           f"column(s) ({', '.join(columns)})", line=line)
    return dict(zip(columns, fields))


def looks_like_header(first: list[str], following: list[list[str]]) -> bool:
    """A first row is a header when its cells read as names: short, not numbers, not sentences, and
    not repeated among the values below (a label column's first value reappears; a name does not)."""
    if any(known_column(c) for c in first):
        return True
    for i, cell in enumerate(first):
        value = cell.strip()
        if not re.fullmatch(r"[A-Za-z_][\w .\-/()]{0,63}", value) or len(value.split()) > 4:
            return False
        if any(len(row) > i and row[i].strip() == value for row in following):
            return False
    return True


# -- JSON ----------------------------------------------------------------------------------------
def _read_jsonl(path: Path, fmt: Format, opts: ReadOptions, name: str) -> RawTable:
    records: list[tuple[int, dict[str, Any]]] = []
    for line, text in iter_lines(path, opts, name):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ImportFailed(f"{name}: line {line} is not valid JSON ({exc.msg.removesuffix(' at')} at column "
                               f"{exc.colno})",
                               line=line) from None
        except RecursionError:  # json's decoder recurses per nesting level: hostile input can exhaust it
            raise ImportFailed(f"{name}: line {line} nests JSON too deeply", line=line) from None
        records.append((line, _object(obj, name, f"line {line}", line)))
    return RawTable(fmt, _columns_of(records), records)


def _read_json(path: Path, fmt: Format, opts: ReadOptions, name: str) -> RawTable:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ImportFailed(f"{name} is larger than {MAX_JSON_BYTES >> 20} MiB, too large to parse as one JSON "
                           "document; write it as JSONL (one object per line) instead")
    raw = path.read_bytes().removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode(opts.encoding)
    except UnicodeDecodeError as exc:  # report it like a line-based file: the line and column of the bad byte
        start = raw.rfind(b"\n", 0, exc.start) + 1
        _decode(raw[start:exc.end], opts.encoding, name, raw.count(b"\n", 0, exc.start) + 1)
        raise ImportFailed(f"{name} is not valid {opts.encoding}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ImportFailed(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                           line=exc.lineno) from None
    except RecursionError:
        raise ImportFailed(f"{name}: JSON nested too deeply to read") from None
    if isinstance(data, dict):  # {"data": [...]} and similar wrappers
        lists = [v for v in data.values() if isinstance(v, list)]
        data = lists[0] if len(lists) == 1 else data
    if not isinstance(data, list):
        raise ImportFailed(f"{name}: expected a JSON list of objects, found a {type(data).__name__}")
    records = [(i + 1, _object(obj, name, f"item {i + 1}", i + 1)) for i, obj in enumerate(data)]
    return RawTable(fmt, _columns_of(records), records)


def _object(obj: object, name: str, where: str, line: int) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ImportFailed(f"{name}: {where} is a JSON {type(obj).__name__}, expected an object with named "
                           "fields", line=line)
    return obj


def _columns_of(records: list[tuple[int, dict[str, Any]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, rec in records[:1000]:
        seen.update(dict.fromkeys(rec))
    return list(seen)


# -- CoNLL ---------------------------------------------------------------------------------------
def _read_conll(path: Path, fmt: Format, opts: ReadOptions, name: str) -> RawTable:
    """Sentences of whitespace-separated columns; each record holds the sentence's columns as lists."""
    records: list[tuple[int, dict[str, Any]]] = []
    sentence: list[list[str]] = []
    start = width = 0
    for line, text in iter_lines(path, opts, name):
        parts = text.split()
        if not parts or parts[0] == "-DOCSTART-":
            if sentence:
                records.append((start, _conll_record(sentence, width)))
            sentence = []
            continue
        width = width or len(parts)
        if len(parts) != width:
            raise ImportFailed(f"{name}: line {line} has {len(parts)} column(s), expected {width} like the "
                               "lines before it", line=line)
        start = start if sentence else line
        sentence.append(parts)
    if sentence:
        records.append((start, _conll_record(sentence, width)))
    return RawTable(fmt, [str(i) for i in range(width)], records, header=False)


def _conll_record(sentence: list[list[str]], width: int) -> dict[str, Any]:
    return {str(i): [parts[i] for parts in sentence] for i in range(width)}
