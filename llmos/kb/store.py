"""Knowledge bases as stored objects: tenant-scoped, versioned, their documents and chunks digested.

Each ``add`` reads and chunks the files, embeds the new chunks through the kernel, then writes the text
blobs (under the store's shared lock, so ``gc`` cannot collect them mid-write) and, in one transaction,
the document and chunk rows, a ``kb_versions`` row and the base's new version number. Writes to one
base are serialised by a per-base file lock (across processes too). When the embedding model's name
now resolves to another manifest than the one the stored vectors came from, every chunk is embedded
again first (a ``reembed`` version), so queries and chunks are never compared across two models.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError
from sqlalchemy.orm import Session

from llmos.data.info import check_name as check_dataset_name
from llmos.db.engine import Database
from llmos.db.tables import KbChunk, KbDocument, KbVersion, KnowledgeBase
from llmos.errors import Conflict, InvalidInput, InvalidName, NotFound
from llmos.kb.chunking import DEFAULT_OVERLAP, DEFAULT_SIZE, check_chunking, chunk_text
from llmos.kb.embed import Embedder
from llmos.kb.info import (
    AddReport,
    DocumentInfo,
    FailedFile,
    KbDetail,
    KbInfo,
    VersionInfo,
)
from llmos.kb.parse import Document, parse_files
from llmos.kb.pgvector import PgVectors, vectors_for
from llmos.store.blobs import BlobStore
from llmos.store.locks import FileLock

if TYPE_CHECKING:
    from llmos.runtime import Runtime

EmbedderFor = Callable[[str], Embedder]  # embedding model name -> embedder (in the caller's tenant)


def check_name(name: str) -> str:
    try:
        return check_dataset_name(name)
    except InvalidName:
        raise InvalidName(f"invalid knowledge base name {name!r}: use letters, digits, '.', '_' or '-' (up to "
                          "128, starting with a letter or digit)") from None


class KnowledgeBases:
    """The knowledge bases one tenant sees: every query and write is filtered by ``tenant``."""

    def __init__(self, db: Database, blobs: BlobStore, root: Path, locks: Path, tenant: str = "default") -> None:
        self.db, self.blobs, self.root, self.locks, self.tenant = db, blobs, root, locks, tenant

    @classmethod
    def of(cls, runtime: Runtime, tenant: str = "default") -> KnowledgeBases:
        s = runtime.settings
        return cls(runtime.db, runtime.store.blobs, s.home / "kb", s.locks_dir, tenant)

    # -- objects ---------------------------------------------------------------------------------
    def create(self, name: str, embedder: Embedder, *, chunk_size: int = DEFAULT_SIZE,
               overlap: int = DEFAULT_OVERLAP) -> KbInfo:
        check_name(name)
        check_chunking(chunk_size, overlap)
        try:
            with self.db.session() as s:
                row = KnowledgeBase(tenant=self.tenant, name=name, embed_model=embedder.model,
                                    embed_digest=embedder.digest, chunk_size=chunk_size, overlap=overlap, version=1)
                s.add(row)
                s.flush()
                s.add(KbVersion(kb_id=row.id, version=1, operation="create", embed_digest=embedder.digest,
                                detail={"embed_model": embedder.model, "chunk_size": chunk_size, "overlap": overlap}))
        except DbIntegrityError:
            raise Conflict(f"knowledge base {name!r} already exists") from None
        return self.get(name)

    def list(self) -> list[KbInfo]:
        with self.db.session() as s:
            rows = s.scalars(select(KnowledgeBase).where(KnowledgeBase.tenant == self.tenant)
                             .order_by(KnowledgeBase.name)).all()
            return [self._info(s, r) for r in rows]

    def get(self, name: str) -> KbInfo:
        with self.db.session() as s:
            return self._info(s, self._row(s, name))

    def show(self, name: str) -> KbDetail:
        with self.db.session() as s:
            row = self._row(s, name)
            counts = dict(s.execute(select(KbChunk.document_id, func.count()).where(KbChunk.kb_id == row.id)
                                    .group_by(KbChunk.document_id)).all())
            docs = s.scalars(select(KbDocument).where(KbDocument.kb_id == row.id).order_by(KbDocument.name)).all()
            versions = s.scalars(select(KbVersion).where(KbVersion.kb_id == row.id).order_by(KbVersion.version)).all()
            pg = self.pgvectors()
            where = "pgvector" if pg is not None and pg.can_index(row.id) else "faiss"
            return KbDetail(**self._info(s, row).model_dump(), vector_index=where,
                            document_list=[DocumentInfo(name=d.name, kind=d.kind, digest=d.digest,
                                                        source_digest=d.source_digest, chars=d.chars,
                                                        chunks=counts.get(d.id, 0), version=d.version) for d in docs],
                            versions=[VersionInfo(version=v.version, operation=v.operation, embed_digest=v.embed_digest,
                                                  detail=v.detail or {}, created_at=v.created_at) for v in versions])

    def remove(self, name: str) -> None:
        with self.db.session() as s:
            row = self._row(s, name)
            kb_id, folder = row.id, _folder(row.id, row.created_at)
            if (pg := self.pgvectors()) is not None:
                pg.remove(s, kb_id)
            for table in (KbChunk, KbDocument, KbVersion):  # explicit: SQLite may run without cascades
                s.execute(delete(table).where(table.kb_id == kb_id))
            s.delete(row)
        shutil.rmtree(self.root / folder, ignore_errors=True)

    def text(self, name: str, document: str) -> str:
        """A document's extracted text, read back from its verified blob."""
        with self.db.session() as s:
            row = self._row(s, name)
            doc = s.scalars(select(KbDocument).where(KbDocument.kb_id == row.id, KbDocument.name == document)).first()
            if doc is None:
                raise NotFound(f"knowledge base {name!r} has no document {document!r}")
        return self.blobs.open_verified(doc.digest).read_text("utf-8")

    # -- adding documents ------------------------------------------------------------------------
    def add(self, name: str, files: list[tuple[str, bytes]], embedder_for: EmbedderFor) -> AddReport:
        """Parse, chunk, embed and store ``files`` (name, bytes) as the next version of ``name``."""
        info = self.get(name)
        parsed = parse_files(files)
        failed = [FailedFile(file=f.file, reason=f.reason) for f in parsed.failed]
        if not parsed.documents:
            why = "; ".join(f"{f.file}: {f.reason}" for f in failed) or "no files given"
            raise InvalidInput(f"nothing was added to {name!r}: {why}")
        with FileLock(self.locks / f"kb-{self.kb_id(info)}.lock"):
            embedder = embedder_for(info.embed_model)
            reembedded = self._refresh(name, embedder)
            return self._add_locked(name, parsed.documents, embedder, failed, reembedded)

    def _add_locked(self, name: str, documents: list[Document], embedder: Embedder, failed: list[FailedFile],
                    reembedded: int) -> AddReport:
        info = self.get(name)
        known = self._known_sources(name)
        new = [d for d in _unique(documents) if known.get(d.name) != d.source_digest]
        unchanged = [d.name for d in _unique(documents) if known.get(d.name) == d.source_digest]
        report = AddReport(knowledge_base=name, version=info.version, unchanged=unchanged, failed=failed,
                           reembedded=reembedded)
        if not new:
            return report
        pieces = [chunk_text(d.text, info.chunk_size, info.overlap) for d in new]
        vectors = embedder.embed([p.text for doc in pieces for p in doc])
        with FileLock(self.locks / "store.lock", exclusive=False):
            for d in new:
                self.blobs.put_bytes(d.text.encode("utf-8"))
            version = self._write(name, new, pieces, vectors, embedder.digest, known, failed)
        return report.model_copy(update={
            "version": version, "chunks": len(vectors),
            "added": [d.name for d in new if d.name not in known], "replaced": [d.name for d in new if d.name in known]})

    def _write(self, name: str, docs: list[Document], pieces: list[list[Any]], vectors: np.ndarray, digest: str,
               known: dict[str, str], failed: list[FailedFile]) -> int:
        pg = self.pgvectors()
        with self.db.session() as s:
            row = self._row(s, name)
            if pg is not None:  # before a replaced document's chunks cascade into the vector table
                pg.lock(s)
            for doc in docs:
                if doc.name in known:  # a new text under a known name replaces the document
                    old = s.scalars(select(KbDocument.id).where(KbDocument.kb_id == row.id,
                                                                KbDocument.name == doc.name)).one()
                    s.execute(delete(KbChunk).where(KbChunk.document_id == old))
                    s.execute(delete(KbDocument).where(KbDocument.id == old))
            s.flush()
            row.version += 1
            at, chunks = 0, []
            for doc, doc_pieces in zip(docs, pieces):
                d = KbDocument(kb_id=row.id, name=doc.name, kind=doc.kind, digest=_sha(doc.text.encode("utf-8")),
                               source_digest=doc.source_digest, chars=len(doc.text), version=row.version)
                s.add(d)
                s.flush()
                for i, p in enumerate(doc_pieces):
                    chunks.append(KbChunk(kb_id=row.id, document_id=d.id, ordinal=i, start=p.start, end=p.end,
                                          digest=_sha(p.text.encode("utf-8")), text=p.text,
                                          embedding=vectors[at].tobytes(), embed_digest=digest))
                    at += 1
            s.add_all(chunks)
            if pg is not None:  # their vectors in the same transaction
                s.flush()
                pg.add(s, row.id, [c.id for c in chunks], vectors[:at], digest)
            s.add(KbVersion(kb_id=row.id, version=row.version, operation="add", embed_digest=digest,
                            detail={"documents": [d.name for d in docs], "chunks": at,
                                    "failed": [f.model_dump() for f in failed]}))
            return row.version

    # -- embeddings ------------------------------------------------------------------------------
    def ensure_current(self, name: str, embedder: Embedder) -> int:
        """Embed every chunk again when ``embedder``'s model is not the one the stored vectors came from;
        returns how many chunks were embedded (0: they were current)."""
        info = self.get(name)
        if info.embed_digest == embedder.digest:
            return 0
        with FileLock(self.locks / f"kb-{self.kb_id(info)}.lock"):
            return self._refresh(name, embedder)

    def reembed(self, name: str, embedder: Embedder) -> int:
        """Switch ``name`` to ``embedder``'s model (or its new version) and embed every chunk with it."""
        info = self.get(name)
        with FileLock(self.locks / f"kb-{self.kb_id(info)}.lock"):
            return self._refresh(name, embedder, force=True)

    def _refresh(self, name: str, embedder: Embedder, *, force: bool = False) -> int:
        info = self.get(name)
        if info.embed_digest == embedder.digest and not force:
            return 0
        ids, texts = self._chunk_texts(name)
        vectors = embedder.embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
        with self.db.session() as s:
            row = self._row(s, name)
            for cid, vec in zip(ids, vectors):
                chunk = s.get_one(KbChunk, cid)
                chunk.embedding, chunk.embed_digest = vec.tobytes(), embedder.digest
            if (pg := self.pgvectors()) is not None:
                pg.replace(s, row.id, ids, vectors, embedder.digest)
            row.version += 1
            s.add(KbVersion(kb_id=row.id, version=row.version, operation="reembed", embed_digest=embedder.digest,
                            detail={"embed_model": embedder.model, "from": row.embed_digest, "chunks": len(ids)}))
            row.embed_model, row.embed_digest = embedder.model, embedder.digest
        return len(ids)

    # -- what the index is built from --------------------------------------------------------------
    def chunk_rows(self, name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Every chunk's id, embedding (rows) and text, in id order."""
        with self.db.session() as s:
            row = self._row(s, name)
            found = s.execute(select(KbChunk.id, KbChunk.embedding, KbChunk.text).where(KbChunk.kb_id == row.id)
                              .order_by(KbChunk.id)).all()
        ids = np.asarray([r[0] for r in found], dtype=np.int64)
        vectors = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in found]) if found else np.zeros((0, 1), np.float32)
        return ids, vectors, [r[2] for r in found]

    def passages(self, ids: list[int]) -> dict[int, tuple[str, int, str]]:
        """chunk id -> (document name, position, text), for this tenant's chunks only."""
        if not ids:
            return {}
        with self.db.session() as s:
            q = (select(KbChunk.id, KbDocument.name, KbChunk.ordinal, KbChunk.text)
                 .join(KbDocument, KbDocument.id == KbChunk.document_id)
                 .join(KnowledgeBase, KnowledgeBase.id == KbChunk.kb_id)
                 .where(KbChunk.id.in_(ids), KnowledgeBase.tenant == self.tenant))
            return {cid: (doc, ordinal, text) for cid, doc, ordinal, text in s.execute(q)}

    def pgvectors(self) -> PgVectors | None:
        """pgvector when the database has it (PostgreSQL with the extension); None: FAISS files."""
        return vectors_for(self.db)

    def index_folder(self, info: KbInfo) -> Path:
        """``<id>-<created>/v<version>``: a database may give a deleted base's row id to a new one, so the
        creation time keeps a new base from ever reading a deleted one's cached index."""
        return self.root / _folder(self.kb_id(info), info.created_at) / f"v{info.version}"

    def kb_id(self, info: KbInfo) -> int:
        """The base's row id: names its lock and index folder (tenant names never reach a path)."""
        with self.db.session() as s:
            return self._row(s, info.name).id

    # -- helpers ---------------------------------------------------------------------------------
    def _chunk_texts(self, name: str) -> tuple[list[int], list[str]]:
        with self.db.session() as s:
            row = self._row(s, name)
            found = s.execute(select(KbChunk.id, KbChunk.text).where(KbChunk.kb_id == row.id).order_by(KbChunk.id)).all()
        return [r[0] for r in found], [r[1] for r in found]

    def _known_sources(self, name: str) -> dict[str, str]:
        with self.db.session() as s:
            row = self._row(s, name)
            return dict(s.execute(select(KbDocument.name, KbDocument.source_digest).where(KbDocument.kb_id == row.id)).all())

    def _row(self, s: Session, name: str) -> KnowledgeBase:
        row = s.scalars(select(KnowledgeBase).where(KnowledgeBase.tenant == self.tenant,
                                                    KnowledgeBase.name == name)).first()
        if row is None:
            known = s.scalars(select(KnowledgeBase.name).where(KnowledgeBase.tenant == self.tenant)).all()
            have = f" Knowledge bases: {', '.join(sorted(known))}." if known else " There are none yet."
            raise NotFound(f"knowledge base {name!r} not found.{have}")
        return row

    def _info(self, s: Session, row: KnowledgeBase) -> KbInfo:
        docs = s.scalar(select(func.count()).select_from(KbDocument).where(KbDocument.kb_id == row.id)) or 0
        chunks = s.scalar(select(func.count()).select_from(KbChunk).where(KbChunk.kb_id == row.id)) or 0
        return KbInfo(name=row.name, embed_model=row.embed_model, embed_digest=row.embed_digest,
                      chunk_size=row.chunk_size, overlap=row.overlap, version=row.version, documents=docs,
                      chunks=chunks, created_at=row.created_at, updated_at=row.updated_at)


def _folder(kb_id: int, created: datetime) -> str:
    stamp = created if created.tzinfo is not None else created.replace(tzinfo=timezone.utc)
    return f"{kb_id}-{int(stamp.timestamp() * 1e6)}"


def _unique(docs: list[Document]) -> list[Document]:
    """The last document of each name (a file given twice counts once)."""
    return list({d.name: d for d in docs}.values())


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
