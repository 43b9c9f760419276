"""The registry: ``name:tag`` -> manifest, in the database; files as blobs; loading folders.

Writes are single transactions, and a manifest is only written after all its blobs are in place,
so a crash at any point leaves either the old state or the new one (plus unreferenced blobs that
``gc`` removes). ``gc`` holds the store lock exclusively; imports hold it shared, so a blob just
written for an import in flight is never collected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, func, select

from llmos.db.engine import Database
from llmos.db.tables import Dataset, Manifest, ModelTag
from llmos.errors import Conflict, IntegrityError, ModelNotFound
from llmos.store.blobs import BlobStore
from llmos.store.locks import FileLock
from llmos.store.manifest import ManifestData, ModelInfo
from llmos.store.names import ModelRef, parse_ref


@dataclass
class GcReport:
    blobs_removed: int
    bytes_freed: int
    snapshots_removed: int


@dataclass
class Problem:
    what: str  # "corrupt_blob", "missing_blob", "orphan_blob"
    detail: str


class Registry:
    def __init__(self, db: Database, blobs: BlobStore, snapshots: Path, locks: Path) -> None:
        self.db = db
        self.blobs = blobs
        self.snapshots = snapshots
        self.locks = locks
        snapshots.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)

    # -- locks ---------------------------------------------------------------------------------
    def store_lock(self, *, exclusive: bool, wait: bool = True) -> FileLock:
        return FileLock(self.locks / "store.lock", exclusive=exclusive, wait=wait)

    def name_lock(self, name: str, *, wait: bool) -> FileLock:
        return FileLock(self.locks / f"name-{name}.lock", exclusive=True, wait=wait)

    # -- reading -------------------------------------------------------------------------------
    def list(self, *, tenant: str | None = None) -> list[ModelInfo]:
        """Every model; with ``tenant``, only what it may see: public models and its own private ones."""
        with self.db.session() as s:
            rows = s.execute(select(ModelTag, Manifest).join(Manifest).order_by(ModelTag.name, ModelTag.tag))
            return [_info(t, m) for t, m in rows if tenant is None or t.tenant in (None, tenant)]

    def names(self) -> list[str]:
        return [i.ref for i in self.list()]

    def find(self, ref: str | ModelRef) -> ModelInfo | None:
        r = ref if isinstance(ref, ModelRef) else parse_ref(ref)
        with self.db.session() as s:
            row = s.execute(select(ModelTag, Manifest).join(Manifest)
                            .where(ModelTag.name == r.name, ModelTag.tag == r.tag)).first()
            return _info(*row) if row else None

    def get(self, ref: str | ModelRef, *, tenant: str | None = None) -> ModelInfo:
        """``ref``'s model; with ``tenant``, another tenant's private model is not found (and not named)."""
        info = self.find(ref)
        if info is None or (tenant is not None and info.tenant not in (None, tenant)):
            known = [i.name if i.tag == "latest" else i.ref for i in self.list(tenant=tenant)]
            raise ModelNotFound.for_name(str(ref), known)
        return info

    def exists(self, ref: str) -> bool:
        return self.find(ref) is not None

    # -- writing -------------------------------------------------------------------------------
    def add(self, ref: str, manifest: ManifestData, *, replace: bool = False, tenant: str | None = None) -> ModelInfo:
        """Point ``ref`` at ``manifest`` (whose blobs must all be stored) in one transaction."""
        r = parse_ref(ref)
        missing = [f.path for f in manifest.files if not self.blobs.has(f.digest)]
        if missing:
            raise IntegrityError(f"cannot register {r}: blobs missing for {', '.join(missing)}")
        digest = manifest.digest()
        with self.db.session() as s:
            if s.get(Manifest, digest) is None:
                s.add(Manifest(digest=digest, data=manifest.model_dump(mode="json")))
            row = s.scalar(select(ModelTag).where(ModelTag.name == r.name, ModelTag.tag == r.tag))
            if row is not None and not replace:
                raise Conflict(f"model {r} already exists; remove it first or choose another tag")
            if row is None:
                s.add(ModelTag(name=r.name, tag=r.tag, manifest_digest=digest, tenant=tenant))
            else:
                row.manifest_digest = digest
        return self.get(r)

    def tag(self, src: str, dst: str, *, replace: bool = False) -> ModelInfo:
        info = self.get(src)
        return self.add(dst, info.manifest, replace=replace, tenant=info.tenant)

    def remove(self, ref: str) -> ModelInfo:
        info = self.get(ref)
        with self.db.session() as s:
            s.execute(delete(ModelTag).where(ModelTag.name == info.name, ModelTag.tag == info.tag))
            users = s.scalar(select(func.count()).select_from(ModelTag)
                             .where(ModelTag.manifest_digest == info.digest))
            if not users:
                s.execute(delete(Manifest).where(Manifest.digest == info.digest))
        return info

    # -- files ---------------------------------------------------------------------------------
    def snapshot(self, ref: str | ModelInfo) -> Path:
        """A folder with the model's files (links to verified blobs), ready for from_pretrained."""
        info = ref if isinstance(ref, ModelInfo) else self.get(ref)
        paths = {f.path: self.blobs.open_verified(f.digest) for f in info.manifest.files}
        final = self.snapshots / info.digest.removeprefix("sha256:")
        if final.is_dir():
            return final
        staging = Path(tempfile.mkdtemp(dir=self.blobs.tmp, prefix="snapshot-"))
        for rel, blob in paths.items():
            link = staging / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(blob, link)
        try:
            os.replace(staging, final)
        except OSError:  # another process materialised it first
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def referenced_digests(self) -> set[str]:
        """Blobs in use: every manifest's files and every dataset version's rows."""
        with self.db.session() as s:
            manifests = s.scalars(select(Manifest)).all()
            files = {f["digest"] for m in manifests for f in m.data["files"]}
            return files | set(s.scalars(select(Dataset.digest)))

    def gc(self) -> GcReport:
        with self.store_lock(exclusive=True):
            keep = self.referenced_digests()
            removed = freed = 0
            for digest in self.blobs.digests():
                if digest not in keep:
                    freed += self.blobs.size(digest)
                    self.blobs.remove(digest)
                    removed += 1
            return GcReport(removed, freed, self._prune_snapshots())

    def _prune_snapshots(self) -> int:
        with self.db.session() as s:
            live = {d.removeprefix("sha256:") for d in s.scalars(select(Manifest.digest))}
        count = 0
        for entry in self.snapshots.iterdir():
            if entry.name not in live:
                shutil.rmtree(entry, ignore_errors=True)
                count += 1
        return count

    def check(self) -> list[Problem]:
        """Verify every referenced blob's hash; list corrupt, missing and orphaned blobs."""
        problems: list[Problem] = []
        keep = self.referenced_digests()
        for digest in sorted(keep):
            if not self.blobs.has(digest):
                problems.append(Problem("missing_blob", digest))
            elif not self.blobs.verify(digest):
                problems.append(Problem("corrupt_blob", digest))
        for digest in self.blobs.digests():
            if digest not in keep:
                problems.append(Problem("orphan_blob", f"{digest} (removed by `llmos gc`)"))
        return problems

    def users_of(self, digest: str) -> list[str]:
        return [i.ref for i in self.list() if any(f.digest == digest for f in i.manifest.files)]


def _info(tag: ModelTag, manifest: Manifest) -> ModelInfo:
    return ModelInfo(name=tag.name, tag=tag.tag, digest=manifest.digest, tenant=tag.tenant,
                     manifest=ManifestData.model_validate(manifest.data), created_at=tag.created_at)
