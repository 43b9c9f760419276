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

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from llmos.db.engine import Database
from llmos.db.tables import Dataset, KbDocument, Manifest, ModelTag, RegistryClock, StoredFile
from llmos.errors import Conflict, IntegrityError, InvalidInput, ModelNotFound, PublicModel
from llmos.store.blobs import BlobStore
from llmos.store.locks import FileLock
from llmos.store.manifest import ManifestData, ModelInfo
from llmos.store.names import DEFAULT_TENANT, ModelRef, key_of, parse_key, parse_ref


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
    # Names are per tenant: ``tenant`` is whose namespace a user-typed ``name[:tag]`` is read in (its
    # private models, then public ones; ``None``: public ones alone). A tenant's private name hides a
    # public one of the same name. Internal callers hold a ``ModelInfo.key`` and use ``get_key``.
    def list(self, *, tenant: str | None = None) -> list[ModelInfo]:
        """Every model of every tenant; with ``tenant``, what it may see: its own private models and the
        public ones it does not shadow with a private name."""
        with self.db.session() as s:
            rows = s.execute(select(ModelTag, Manifest).join(Manifest))
            infos = sorted((_info(t, m) for t, m in rows), key=lambda i: (i.name, _tag_order(i.tag)))
        if tenant is None:
            return infos
        own = {i.name for i in infos if i.tenant == tenant}
        return [i for i in infos if i.tenant == tenant or (i.tenant is None and i.name not in own)]

    def versions(self, name: str, tenant: str | None) -> list[ModelInfo]:
        """Every tag of ``name`` in exactly ``tenant``'s namespace (``None``: the public one): other tags by
        name, then ``v1, v2 ... v10`` by number. One indexed query, where ``list`` reads the whole store."""
        who = ModelTag.tenant.is_(None) if tenant is None else ModelTag.tenant == tenant
        with self.db.session() as s:
            rows = s.execute(select(ModelTag, Manifest).join(Manifest).where(ModelTag.name == name, who))
            return sorted((_info(t, m) for t, m in rows), key=lambda i: _tag_order(i.tag))

    def version_of(self, info: ModelInfo) -> ModelInfo:
        """The version tag (``name:vN``, anything but ``latest``) holding ``info``'s manifest; ``info``
        itself when it is one, or when no other tag holds that manifest."""
        if info.tag != "latest":
            return info
        same = [i for i in self.versions(info.name, info.tenant) if i.tag != "latest" and i.digest == info.digest]
        return same[-1] if same else info

    def count(self) -> int:
        """Tags in the store, all tenants (what ``len(list())`` gives, without reading them)."""
        with self.db.session() as s:
            return int(s.scalar(select(func.count()).select_from(ModelTag)) or 0)

    def clock(self) -> int:
        """A number that moves on with every write of a name or manifest, by any process: a cached
        reading of the registry holds while it stays the same (``llmos.kernel.resolving``)."""
        with self.db.session() as s:
            return int(s.scalar(select(RegistryClock.tick).where(RegistryClock.id == 1)) or 0)

    def names(self) -> list[str]:
        return [i.ref for i in self.list()]

    def owner(self, name: str, tenant: str | None) -> str | None:
        """Whose namespace ``name`` resolves to for ``tenant``: the tenant's own when it holds the name or
        nobody does; ``None`` when the name is public (and not shadowed)."""
        if tenant is None:
            return None
        with self.db.session() as s:
            rows = set(s.scalars(select(ModelTag.tenant).where(ModelTag.name == name,
                                                               or_(ModelTag.tenant == tenant,
                                                                   ModelTag.tenant.is_(None)))))
        return None if None in rows and tenant not in rows else tenant

    def find(self, ref: str | ModelRef, *, tenant: str | None = DEFAULT_TENANT) -> ModelInfo | None:
        """``ref`` (a user's ``name[:tag]``) as ``tenant`` sees it; None when absent or not its to see."""
        r = ref if isinstance(ref, ModelRef) else parse_ref(ref)
        return self._row(self.owner(r.name, tenant), r)

    def find_key(self, key: str) -> ModelInfo | None:
        k = parse_key(key)
        return self._row(k.tenant, k.ref)

    def get_key(self, key: str) -> ModelInfo:
        """The model with this ``ModelInfo.key`` (internal: the caller already resolved a user's name)."""
        info = self.find_key(key)
        if info is None:
            raise ModelNotFound(f"model {parse_key(key).ref} not found")
        return info

    def _row(self, owner: str | None, r: ModelRef) -> ModelInfo | None:
        who = ModelTag.tenant.is_(None) if owner is None else ModelTag.tenant == owner
        with self.db.session() as s:
            row = s.execute(select(ModelTag, Manifest).join(Manifest)
                            .where(ModelTag.name == r.name, ModelTag.tag == r.tag, who)).first()
            return _info(*row) if row else None

    def get(self, ref: str | ModelRef, *, tenant: str | None = DEFAULT_TENANT) -> ModelInfo:
        """``ref``'s model as ``tenant`` sees it; another tenant's private model is not found, and the
        error names only models ``tenant`` may see."""
        info = self.find(ref, tenant=tenant)
        if info is None:
            visible = self.list(tenant=tenant) if tenant is not None else [i for i in self.list() if i.public]
            raise ModelNotFound.for_name(str(ref), [i.name if i.tag == "latest" else i.ref for i in visible])
        return info

    def exists(self, ref: str, *, tenant: str | None = DEFAULT_TENANT) -> bool:
        return self.find(ref, tenant=tenant) is not None

    def parent(self, info: ModelInfo) -> ModelInfo:
        """The model ``info``'s manifest names as its parent, read in ``info``'s own namespace."""
        if not info.manifest.parent:
            raise InvalidInput(f"model {info.ref} has no base model recorded")
        return self.get(info.manifest.parent.split("@", 1)[0], tenant=info.tenant)

    def check_write(self, name: str, tenant: str | None, *, admin: bool) -> str | None:
        """The namespace a write of ``name`` for ``tenant`` goes to; a public name takes new versions
        from an admin alone (PublicModel, 403, for anyone else)."""
        owner = self.owner(parse_ref(name).name, tenant)
        if owner is None and tenant is not None and not admin:
            raise PublicModel(f"model {parse_ref(name).name} is public: only an admin can create or change "
                              "its versions; choose another name")
        return owner

    # -- writing -------------------------------------------------------------------------------
    def add(self, ref: str, manifest: ManifestData, *, replace: bool = False, tenant: str | None = None) -> ModelInfo:
        """Point ``ref`` at ``manifest`` (whose blobs must all be stored) in one transaction, in ``tenant``'s
        namespace (``None``: public). A tenant cannot add a version under a public name it does not shadow."""
        r = parse_ref(ref)
        missing = [f.path for f in manifest.files if not self.blobs.has(f.digest)]
        if missing:
            raise IntegrityError(f"cannot register {r}: blobs missing for {', '.join(missing)}")
        if tenant is not None:
            self.check_write(r.name, tenant, admin=False)
        digest = manifest.digest()
        who = ModelTag.tenant.is_(None) if tenant is None else ModelTag.tenant == tenant
        with self.db.session() as s:
            if s.get(Manifest, digest) is None:
                s.add(Manifest(digest=digest, data=manifest.model_dump(mode="json")))
            row = s.scalar(select(ModelTag).where(ModelTag.name == r.name, ModelTag.tag == r.tag, who))
            if row is not None and not replace:
                raise Conflict(f"model {r} already exists; remove it first or choose another tag")
            if row is None:
                s.add(ModelTag(name=r.name, tag=r.tag, manifest_digest=digest, tenant=tenant))
            else:
                row.manifest_digest = digest
            _tick(s)
        return self.get_key(key_of(tenant, r))

    def tag(self, src: str, dst: str, *, replace: bool = False, tenant: str | None = DEFAULT_TENANT) -> ModelInfo:
        """Point ``dst`` at ``src``'s manifest, in ``src``'s namespace as ``tenant`` reads it."""
        info = self.get(src, tenant=tenant)
        return self.add(dst, info.manifest, replace=replace, tenant=info.tenant)

    def tag_key(self, key: str, dst: str, *, replace: bool = False) -> ModelInfo:
        info = self.get_key(key)
        return self.add(dst, info.manifest, replace=replace, tenant=info.tenant)

    def remove(self, ref: str, *, tenant: str | None = DEFAULT_TENANT) -> ModelInfo:
        info = self.get(ref, tenant=tenant)
        who = ModelTag.tenant.is_(None) if info.tenant is None else ModelTag.tenant == info.tenant
        with self.db.session() as s:
            s.execute(delete(ModelTag).where(ModelTag.name == info.name, ModelTag.tag == info.tag, who))
            users = s.scalar(select(func.count()).select_from(ModelTag)
                             .where(ModelTag.manifest_digest == info.digest))
            if not users:
                s.execute(delete(Manifest).where(Manifest.digest == info.digest))
            _tick(s)
        return info

    def next_version(self, name: str, tenant: str | None) -> str:
        """``name:vN`` one past the highest ``vN`` in ``tenant``'s namespace (``None``: public)."""
        ref = parse_ref(name)
        taken = [n for i in self.versions(ref.name, tenant) if (n := _version_number(i.tag)) is not None]
        return f"{ref.name}:v{max(taken, default=0) + 1}"

    # -- files ---------------------------------------------------------------------------------
    def snapshot(self, ref: str | ModelInfo) -> Path:
        """A folder with the model's files (links to verified blobs), ready for from_pretrained."""
        info = ref if isinstance(ref, ModelInfo) else self.get_key(ref)
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
        """Blobs in use: every manifest's files, every dataset version's rows, every uploaded file and
        every knowledge-base document's text."""
        with self.db.session() as s:
            manifests = s.scalars(select(Manifest)).all()
            files = {f["digest"] for m in manifests for f in m.data["files"]}
            return (files | set(s.scalars(select(Dataset.digest))) | set(s.scalars(select(StoredFile.digest)))
                    | set(s.scalars(select(KbDocument.digest))))

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
        return [i.key for i in self.list() if any(f.digest == digest for f in i.manifest.files)]


def _tick(s: Session) -> None:
    """Move the registry clock on inside the writing transaction (committed with the write, or not at all)."""
    s.execute(update(RegistryClock).where(RegistryClock.id == 1).values(tick=RegistryClock.tick + 1))


def _version_number(tag: str) -> int | None:
    """N of a version tag ``vN``; None for any other tag."""
    return int(tag[1:]) if tag[:1] == "v" and tag[1:].isdigit() else None


def _tag_order(tag: str) -> tuple[bool, int, str]:
    """Sort key of a tag: any other tag by name first, then ``vN`` by its number (``v10`` after ``v9``)."""
    number = _version_number(tag)
    return (number is not None, number or 0, tag)


def _info(tag: ModelTag, manifest: Manifest) -> ModelInfo:
    return ModelInfo(name=tag.name, tag=tag.tag, digest=manifest.digest, tenant=tag.tenant,
                     manifest=ManifestData.model_validate(manifest.data), created_at=tag.created_at)
