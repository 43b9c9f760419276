"""Files -> documents: plain text, Markdown, HTML (Beautiful Soup), PDF (pypdf), and CSV / JSONL rows
(each row one document). A file that cannot be read fails alone, with its reason; the others go on.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from llmos.errors import InvalidInput, PayloadTooLarge

MAX_FILE_BYTES = 50 << 20  # one file; a larger one is refused whole with a clear error
MAX_ROWS = 100_000  # CSV / JSONL rows per file
TEXT_KINDS = {".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown", ".html": "html",
              ".htm": "html", ".pdf": "pdf", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
TEXT_FIELDS = ("text", "content", "body", "answer", "passage", "document")
TITLE_FIELDS = ("title", "name", "id", "question", "label")


@dataclass(frozen=True)
class Document:
    name: str  # unique within a knowledge base: the file name, or file#row for a row
    kind: str
    text: str
    source_digest: str  # sha256 of the bytes it came from (a row: of the row's own text)


@dataclass(frozen=True)
class Failure:
    file: str
    reason: str


@dataclass
class Parsed:
    documents: list[Document] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)


def kind_of(name: str) -> str:
    kind = TEXT_KINDS.get(Path(name).suffix.lower())
    if kind is None:
        known = ", ".join(sorted(TEXT_KINDS))
        raise InvalidInput(f"{name}: unknown file type {Path(name).suffix or '(none)'!r}; known: {known}")
    return kind


def parse_files(files: list[tuple[str, bytes]]) -> Parsed:
    """(name, bytes) pairs -> documents; each failing file is listed with its reason, the rest kept."""
    out = Parsed()
    for name, data in files:
        try:
            out.documents.extend(parse_bytes(name, data))
        except (InvalidInput, PayloadTooLarge) as exc:
            out.failed.append(Failure(name, str(exc)))
    return out


def parse_bytes(name: str, data: bytes) -> list[Document]:
    if len(data) > MAX_FILE_BYTES:
        raise PayloadTooLarge(f"{name}: {len(data):,} bytes is over the {MAX_FILE_BYTES >> 20} MiB limit per file")
    kind = kind_of(name)
    if kind in ("csv", "jsonl"):
        return _rows(name, kind, data)
    text = _READERS[kind](name, data)
    if not text.strip():
        raise InvalidInput(f"{name}: no text found in it")
    return [Document(name, kind, text, _sha(data))]


def _decode(name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{name}: not UTF-8 text (byte {exc.start})") from None


def _plain(name: str, data: bytes) -> str:
    return _decode(name, data)


def _html(name: str, data: bytes) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(name, data), "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    lines = (line.strip() for line in soup.get_text("\n").splitlines())
    return "\n".join(line for line in lines if line)


def _pdf(name: str, data: bytes) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = [page.extract_text() or "" for page in reader.pages]
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        raise InvalidInput(f"{name}: not a readable PDF ({exc.__class__.__name__}: {exc})") from None
    return "\n\n".join(p.strip() for p in pages if p.strip())


_READERS = {"text": _plain, "markdown": _plain, "html": _html, "pdf": _pdf}


def _rows(name: str, kind: str, data: bytes) -> list[Document]:
    text = _decode(name, data)
    records = _csv_records(name, text) if kind == "csv" else _jsonl_records(name, text)
    docs = []
    for i, rec in enumerate(records, start=1):
        body = _row_text(rec)
        if body.strip():
            title = next((str(rec[k]) for k in TITLE_FIELDS if rec.get(k) not in (None, "")), None)
            row_name = f"{name}#{title}" if title and len(title) <= 120 else f"{name}#{i}"
            docs.append(Document(row_name, kind, body, _sha(body.encode())))
    if not docs:
        raise InvalidInput(f"{name}: no rows with text")
    names = [d.name for d in docs]
    if len(set(names)) != len(names):  # titles repeat: number the rows instead
        docs = [Document(f"{name}#{i}", d.kind, d.text, d.source_digest) for i, d in enumerate(docs, start=1)]
    return docs


def _csv_records(name: str, text: str) -> list[dict[str, object]]:
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    except csv.Error as exc:
        raise InvalidInput(f"{name}: not CSV ({exc})") from None
    if len(rows) > MAX_ROWS:
        raise PayloadTooLarge(f"{name}: {len(rows):,} rows is over the limit of {MAX_ROWS:,}")
    return [dict(r) for r in rows]


def _jsonl_records(name: str, text: str) -> list[dict[str, object]]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{name} line {n}: not JSON ({exc.msg})") from None
        out.append(value if isinstance(value, dict) else {"text": str(value)})
        if len(out) > MAX_ROWS:
            raise PayloadTooLarge(f"{name}: more than {MAX_ROWS:,} rows")
    return out


def _row_text(rec: dict[str, object]) -> str:
    """The row's text field when it has one; otherwise every field as ``key: value`` lines."""
    for key in TEXT_FIELDS:
        if isinstance(rec.get(key), str) and str(rec[key]).strip():
            title = next((str(rec[k]) for k in ("title", "question") if rec.get(k)), None)
            return f"{title}\n{rec[key]}" if title else str(rec[key])
    return "\n".join(f"{k}: {v}" for k, v in rec.items() if v not in (None, ""))


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
