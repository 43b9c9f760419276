"""The dataset registry: named, versioned, immutable datasets, each owned by one tenant.

A version is its rows as one canonical-JSONL blob (its digest is the content's sha256) plus a
``datasets`` row: name, version (1, 2, ... per tenant and name), task, source and mapping, label set,
counts, and for derived versions the parent and the operation that made it. Splits live in the rows
(each carries ``split``), so a split version is still one blob and ``rows(split=...)`` filters it.

Every write reads and checks everything first, then stores the blob (under the store's shared lock,
so ``gc`` cannot collect it mid-write), then adds the row in one transaction; if that transaction
fails, a blob this write created is removed again. Nothing is half-registered.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DbIntegrityError

from llmos.data.augment import AugmentOptions, augment_rows
from llmos.data.clean import CleanOptions, clean_rows
from llmos.data.info import (
    DatasetCounts,
    DatasetInfo,
    DatasetPreview,
    DatasetSource,
    Derivation,
    check_name,
    count_rows,
    parse_ref,
    preview_dicts,
)
from llmos.data.mapping import Mapped, map_table, sort_labels
from llmos.data.readers import Format, ReadOptions, read_table
from llmos.data.rows import Row, SplitName, Task, from_jsonl, to_jsonl
from llmos.data.split import SplitOptions, split_rows
from llmos.db.engine import Database
from llmos.db.tables import Dataset
from llmos.errors import Conflict, InvalidInput, NotFound
from llmos.store.blobs import BlobStore
from llmos.store.locks import FileLock
from llmos.store.progress import NullProgress, Progress

if TYPE_CHECKING:
    from llmos.runtime import Runtime


class ImportOptions(BaseModel):
    """How to read and map a file; everything left None is inferred."""

    task: Task | None = None
    mapping: dict[str, str | int] | None = None
    format: Format | None = None
    header: bool | None = None
    encoding: str = "utf-8"
    split: SplitName | None = None  # every imported row joins this split
    append: bool = False  # add the rows to the latest version (a new version with it as parent)


class Datasets:
    """The registry as one tenant sees it: every query and write is filtered by ``tenant``."""

    def __init__(self, db: Database, blobs: BlobStore, locks: Path, tenant: str = "default") -> None:
        self.db = db
        self.blobs = blobs
        self.locks = locks
        self.tenant = tenant

    @classmethod
    def of(cls, runtime: Runtime, tenant: str = "default") -> "Datasets":
        """The registry over a ``Runtime``'s database and blob store."""
        return cls(runtime.db, runtime.store.blobs, runtime.settings.locks_dir, tenant)

    # -- reading files ---------------------------------------------------------------------------
    def read_file(self, path: Path, opts: ImportOptions | None = None, *, file_name: str | None = None,
                  progress: Progress | None = None) -> tuple[Mapped, DatasetSource]:
        opts = opts or ImportOptions()
        progress = progress or NullProgress()
        name = file_name or path.name
        progress.start(f"reading {name}", None)
        try:
            table = read_table(path, ReadOptions(opts.format, opts.header, opts.encoding), display_name=name)
            mapped = map_table(table, name, opts.task, opts.mapping)
        finally:
            progress.finish()
        source = DatasetSource(file=name, format=table.format.value, columns=table.columns, header=table.header,
                               encoding=opts.encoding, mapping=mapped.mapping)
        return mapped, source

    def preview_file(self, path: Path, opts: ImportOptions | None = None, *, file_name: str | None = None,
                     n: int = 5) -> DatasetPreview:
        """What importing ``path`` would register, without registering anything."""
        mapped, source = self.read_file(path, opts, file_name=file_name)
        return DatasetPreview(file=source.file or path.name, task=mapped.task, source=source, rows=len(mapped.rows),
                              labels=mapped.labels, preview=preview_dicts(mapped.rows, n), warnings=mapped.warnings)

    def import_file(self, path: Path, name: str, opts: ImportOptions | None = None, *, file_name: str | None = None,
                    progress: Progress | None = None) -> DatasetInfo:
        """Read, map and check ``path`` whole, then register it as the next version of ``name``."""
        check_name(name)
        opts = opts or ImportOptions()
        mapped, source = self.read_file(path, opts, file_name=file_name, progress=progress)
        rows = [r.model_copy(update={"split": opts.split}) for r in mapped.rows] if opts.split else mapped.rows
        if opts.append:
            return self._append(name, rows, mapped, source, opts, progress)
        info = self._write(name, mapped.task, rows, source, progress=progress)
        return info.model_copy(update={"warnings": mapped.warnings})

    def _append(self, name: str, rows: list[Row], mapped: Mapped, source: DatasetSource, opts: ImportOptions,
                progress: Progress | None) -> DatasetInfo:
        parent = self.get(name)
        if parent.task is not mapped.task:
            raise InvalidInput(f"cannot append {mapped.task.value} rows to {parent.ref}, a {parent.task.value} dataset")
        old = list(self.rows(parent.name, parent.version))
        if parent.counts.splits and not opts.split:
            raise InvalidInput(f"{parent.ref} is split; say which split the new rows join (train, validation, test)")
        if opts.split and not parent.counts.splits:
            old = [r.model_copy(update={"split": "train"}) for r in old]  # the existing rows become the train split
        derivation = Derivation(operation="append", params={"file": source.file, "split": opts.split},
                                report={"rows_added": len(rows)})
        info = self._write(name, parent.task, old + rows, parent.source, parent=parent, derivation=derivation,
                           progress=progress)
        return info.model_copy(update={"warnings": mapped.warnings})

    # -- queries ---------------------------------------------------------------------------------
    def list(self, *, all_versions: bool = False) -> list[DatasetInfo]:
        """This tenant's datasets, newest version of each (or every version), by name."""
        with self.db.session() as s:
            q = select(Dataset).where(Dataset.tenant == self.tenant).order_by(Dataset.name, Dataset.version)
            found = s.scalars(q).all()
            parents = self._parent_refs(s, found)
        if not all_versions:
            latest = {d.name: d for d in found}
            found = list(latest.values())
        return [self._info(d, parents.get(d.parent_id)) for d in found]

    def versions(self, name: str) -> list[DatasetInfo]:
        return [i for i in self.list(all_versions=True) if i.name == check_name(name)]

    def get(self, ref: str, version: int | None = None) -> DatasetInfo:
        """``name`` (latest), ``name@N`` or (``name``, N); NotFound names close matches."""
        name, ver = parse_ref(ref, version)
        with self.db.session() as s:
            q = select(Dataset).where(Dataset.tenant == self.tenant, Dataset.name == name)
            q = q.where(Dataset.version == ver) if ver is not None else q.order_by(Dataset.version.desc())
            row = s.scalars(q.limit(1)).first()
            if row is None:
                raise self._not_found(s, name, ver)
            parents = self._parent_refs(s, [row])
        return self._info(row, parents.get(row.parent_id))

    def rows(self, ref: str, version: int | None = None, split: str | None = None) -> Iterator[Row]:
        """A version's rows in stored order (only one split's when ``split`` is given)."""
        info = self.get(ref, version)
        if split is not None and split not in info.counts.splits:
            have = ", ".join(info.counts.splits) or "none: the version is not split"
            raise InvalidInput(f"{info.ref} has no {split!r} split (splits: {have})")
        path = self.blobs.open_verified(info.digest)
        with open(path, "rb") as fh:
            for row in from_jsonl(fh, info.task):
                if split is None or row.split == split:
                    yield row

    def preview(self, ref: str, version: int | None = None, n: int = 5) -> list[dict[str, Any]]:
        out: list[Row] = []
        for row in self.rows(ref, version):
            out.append(row)
            if len(out) >= n:
                break
        return preview_dicts(out, n)

    # -- derived versions ------------------------------------------------------------------------
    def clean(self, ref: str, options: CleanOptions | None = None, *, version: int | None = None,
              progress: Progress | None = None) -> DatasetInfo:
        options = options or CleanOptions()
        parent, rows = self._load(ref, version)
        with _stage(progress, f"cleaning {parent.ref} ({len(rows):,} rows)"):
            kept, report = clean_rows(rows, options)
        if not kept:
            raise InvalidInput(f"cleaning {parent.ref} would remove every row ({report.model_dump()}); nothing "
                               "was registered")
        return self._derive(parent, kept, Derivation(operation="clean", params=options.model_dump(),
                                                     report=report.model_dump()), progress)

    def split(self, ref: str, options: SplitOptions | None = None, *, version: int | None = None,
              progress: Progress | None = None) -> DatasetInfo:
        options = options or SplitOptions()
        parent, rows = self._load(ref, version)
        with _stage(progress, f"splitting {parent.ref} ({len(rows):,} rows)"):
            out, report = split_rows(rows, options)
        if self._made_by(parent, "augment"):
            report.warnings.append(f"{parent.ref} holds augmented copies: variants of one row can now sit in "
                                   "different splits; split first, then augment (it varies training rows only)")
        info = self._derive(parent, out, Derivation(operation="split", params=options.model_dump(),
                                                    report=report.model_dump()), progress)
        return info.model_copy(update={"warnings": report.warnings})

    def augment(self, ref: str, options: AugmentOptions | None = None, *, version: int | None = None,
                progress: Progress | None = None) -> DatasetInfo:
        options = options or AugmentOptions()
        parent, rows = self._load(ref, version)
        with _stage(progress, f"augmenting {parent.ref} ({len(rows):,} rows)"):
            out, report = augment_rows(rows, options)
        warnings = [] if report.added else ["no row could be varied; the new version equals its parent"]
        info = self._derive(parent, out, Derivation(operation="augment", params=options.model_dump(),
                                                    report=report.model_dump()), progress)
        return info.model_copy(update={"warnings": warnings})

    def register_rows(self, name: str, rows: Sequence[Row], *, parent: DatasetInfo | None,
                      derivation: Derivation, task: Task | None = None) -> DatasetInfo:
        """A new version of ``name`` holding ``rows`` made from ``parent`` outside the registry (the
        feedback loop merges corrections into a training set); recorded like any derived version.
        Without a parent (a loop starting from a prompt task has no dataset) ``task`` says what the rows are."""
        if not rows:
            raise InvalidInput(f"no rows to register as a version of {name!r}")
        if parent is None:
            if task is None:
                raise InvalidInput(f"rows for {name!r} without a parent dataset need their task")
            return self._write(check_name(name), task, rows, DatasetSource(format="feedback"), derivation=derivation)
        return self._write(check_name(name), parent.task, rows, parent.source, parent=parent, derivation=derivation)

    def _made_by(self, info: DatasetInfo, operation: str) -> bool:
        """Whether ``info`` or one of its ancestors was made by ``operation``."""
        while info.derivation is not None:
            if info.derivation.operation == operation:
                return True
            if info.parent is None:
                break
            info = self.get(info.parent)
        return False

    def _load(self, ref: str, version: int | None) -> tuple[DatasetInfo, list[Row]]:
        parent = self.get(ref, version)
        return parent, list(self.rows(parent.name, parent.version))

    def _derive(self, parent: DatasetInfo, rows: list[Row], derivation: Derivation,
                progress: Progress | None) -> DatasetInfo:
        return self._write(parent.name, parent.task, rows, parent.source, parent=parent, derivation=derivation,
                           progress=progress)

    # -- writing ---------------------------------------------------------------------------------
    def _write(self, name: str, task: Task, rows: Sequence[Row], source: DatasetSource, *,
               parent: DatasetInfo | None = None, derivation: Derivation | None = None,
               progress: Progress | None = None) -> DatasetInfo:
        counts = count_rows(rows)
        labels = sort_labels(set(counts.labels)) if task is not Task.sft else []
        data = to_jsonl(rows)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with FileLock(self.locks / "store.lock", exclusive=False), _stage(progress, f"storing {name}"):
            existed = self.blobs.has(digest)
            self.blobs.put_bytes(data)
            try:
                row_id = self._insert(name, task, digest, source, labels, counts, parent, derivation)
            except BaseException:
                if not existed:
                    self.blobs.remove(digest)
                raise
        with self.db.session() as s:
            row = s.get(Dataset, row_id)
            assert row is not None
            return self._info(row, parent.ref if parent else None)

    def _insert(self, name: str, task: Task, digest: str, source: DatasetSource, labels: list[str],
                counts: DatasetCounts, parent: DatasetInfo | None, derivation: Derivation | None) -> int:
        """One transaction: the next version number and the row. Two writers racing for the same
        number collide on the unique key; the loser retries with the next number."""
        for _ in range(5):
            try:
                with self.db.session() as s:
                    last = s.scalar(select(func.max(Dataset.version))
                                    .where(Dataset.tenant == self.tenant, Dataset.name == name)) or 0
                    row = Dataset(name=name, version=last + 1, digest=digest, task=task.value,
                                  schema=source.model_dump(mode="json"), labels=labels,
                                  counts=counts.model_dump(mode="json"), parent_id=parent.id if parent else None,
                                  tenant=self.tenant,
                                  derivation=derivation.model_dump(mode="json") if derivation else None)
                    s.add(row)
                    s.flush()
                    return row.id
            except DbIntegrityError:
                continue
        raise Conflict(f"could not register a new version of dataset {name!r}: other writers keep taking the "
                       "next version number; try again")

    # -- helpers ---------------------------------------------------------------------------------
    def _info(self, row: Dataset, parent: str | None) -> DatasetInfo:
        size = self.blobs.size(row.digest) if self.blobs.has(row.digest) else 0
        return DatasetInfo(id=row.id, name=row.name, version=row.version, tenant=row.tenant, task=Task(row.task),
                           digest=row.digest, size_bytes=size, labels=list(row.labels or []),
                           counts=DatasetCounts.model_validate(row.counts or {"rows": 0}),
                           source=DatasetSource.model_validate(row.schema or {}), parent=parent,
                           derivation=Derivation.model_validate(row.derivation) if row.derivation else None,
                           created_at=row.created_at)

    def _parent_refs(self, s: Any, rows: Sequence[Dataset]) -> dict[int, str]:
        ids = {r.parent_id for r in rows if r.parent_id is not None}
        if not ids:
            return {}
        parents = s.execute(select(Dataset.id, Dataset.name, Dataset.version).where(Dataset.id.in_(ids)))
        return {pid: f"{pname}@{pver}" for pid, pname, pver in parents}

    def _not_found(self, s: Any, name: str, version: int | None) -> NotFound:
        known = sorted(set(s.scalars(select(Dataset.name).where(Dataset.tenant == self.tenant))))
        if version is not None and name in known:
            have = s.scalars(select(Dataset.version).where(Dataset.tenant == self.tenant, Dataset.name == name)
                             .order_by(Dataset.version)).all()
            return NotFound(f"dataset {name!r} has no version {version}; versions: {', '.join(map(str, have))}")
        close = [k for k in known if name.lower() in k.lower()][:3]
        close += [k for k in difflib.get_close_matches(name, known, n=3, cutoff=0.5) if k not in close]
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        have = f" Known datasets: {', '.join(known)}." if known else " There are no datasets yet."
        return NotFound(f"dataset {name!r} not found.{hint}{have}", suggestions=close)


class _stage:
    """A context manager showing one stage of work on a Progress (a spinner in the CLI)."""

    def __init__(self, progress: Progress | None, description: str) -> None:
        self.progress = progress or NullProgress()
        self.description = description

    def __enter__(self) -> None:
        self.progress.start(self.description, None)

    def __exit__(self, *exc: object) -> None:
        self.progress.finish()
