"""Dataset routes: upload and import a file, list, show, and derive clean / split / augment versions.

Every route works inside the caller's tenant: another tenant's dataset is reported as not found
(404, not 403), so a caller cannot even learn which names other tenants use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from llmos.api.bounds import BodyVersion, Version
from llmos.api.uploads import spool
from llmos.api.deps import Caller, get_caller, get_runtime
from llmos.data import (
    AugmentOptions,
    CleanOptions,
    DatasetInfo,
    DatasetPreview,
    Datasets,
    ImportOptions,
    SplitOptions,
    validated,
)
from llmos.errors import InvalidInput
from llmos.runtime import Runtime

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
CallerDep = Annotated[Caller, Depends(get_caller)]
MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB: far above the datasets llmos trains on, well below filling a disk


class DatasetOut(DatasetInfo):
    preview: list[dict[str, Any]] = Field(default_factory=list)


class DatasetList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DatasetInfo]


class CleanIn(CleanOptions):
    version: BodyVersion | None = Field(default=None, description="version to clean (default: the latest)")


class SplitIn(SplitOptions):
    version: BodyVersion | None = None


class AugmentIn(AugmentOptions):
    version: BodyVersion | None = None


def _datasets(runtime: Runtime, caller: Caller) -> Datasets:
    return Datasets.of(runtime, caller.tenant)


def _with_preview(datasets: Datasets, info: DatasetInfo, n: int = 5, split: str | None = None) -> DatasetOut:
    rows = []
    for row in datasets.rows(info.ref, split=split):
        if len(rows) >= n:
            break
        rows.append(row.model_dump(mode="json", exclude_defaults=True))
    return DatasetOut(**info.model_dump(), preview=rows)


@router.post("", status_code=201, response_model=DatasetOut | DatasetPreview)
async def import_dataset(
    runtime: RuntimeDep, caller: CallerDep,
    file: Annotated[UploadFile, File(description="CSV, TSV, JSONL, JSON or CoNLL file")],
    name: Annotated[str, Form()],
    task: Annotated[Optional[str], Form()] = None,
    format: Annotated[Optional[str], Form()] = None,
    mapping: Annotated[Optional[str], Form(description='JSON object, e.g. {"text": "sentence", "label": 1}')] = None,
    header: Annotated[Optional[bool], Form()] = None,
    encoding: Annotated[str, Form()] = "utf-8",
    split: Annotated[Optional[str], Form()] = None,
    append: Annotated[bool, Form()] = False,
    dry_run: Annotated[bool, Form()] = False,
) -> DatasetOut | DatasetPreview:
    """Upload a file and register it as the next version of ``name`` (``dry_run``: preview only)."""
    opts = validated(ImportOptions, task=task, mapping=_parse_mapping(mapping), format=format, header=header,
                     encoding=encoding, split=split, append=append)
    file_name = Path(file.filename or "upload").name
    path = await _save_upload(file, runtime.settings.tmp_dir, Path(file_name).suffix)
    try:
        datasets = _datasets(runtime, caller)
        if dry_run:
            return await run_in_threadpool(datasets.preview_file, path, opts, file_name=file_name)
        info = await run_in_threadpool(datasets.import_file, path, name, opts, file_name=file_name)
        return _with_preview(datasets, info)
    finally:
        path.unlink(missing_ok=True)


def _parse_mapping(text: str | None) -> dict[str, str | int] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"mapping is not valid JSON ({exc.msg}); send an object such as "
                           '{"text": "sentence", "label": "label"}') from None
    if not isinstance(value, dict) or not all(isinstance(v, (str, int)) for v in value.values()):
        raise InvalidInput("mapping must be a JSON object of field -> column name or position")
    return value


async def _save_upload(upload: UploadFile, tmp_dir: Path, suffix: str) -> Path:
    """Stream the upload to a temp file (keeping its extension for format detection), capped in size."""
    return await spool(upload, tmp_dir, prefix="upload-", suffix=suffix[:16], limit=MAX_UPLOAD_BYTES,
                       too_large=f"the upload is larger than {MAX_UPLOAD_BYTES >> 20} MiB")


@router.get("")
def list_datasets(runtime: RuntimeDep, caller: CallerDep, all_versions: bool = False) -> DatasetList:
    return DatasetList(data=_datasets(runtime, caller).list(all_versions=all_versions))


@router.get("/{name}")
def show_dataset(runtime: RuntimeDep, caller: CallerDep, name: str, version: Optional[Version] = None,
                 rows: Annotated[int, Query(ge=0, le=100)] = 5, split: Optional[str] = None) -> DatasetOut:
    datasets = _datasets(runtime, caller)
    return _with_preview(datasets, datasets.get(name, version), rows, split)


@router.post("/{name}/clean", status_code=201)
async def clean_dataset(runtime: RuntimeDep, caller: CallerDep, name: str, body: CleanIn) -> DatasetOut:
    datasets = _datasets(runtime, caller)
    opts = CleanOptions(**body.model_dump(exclude={"version"}))
    info = await run_in_threadpool(datasets.clean, name, opts, version=body.version)
    return _with_preview(datasets, info)


@router.post("/{name}/split", status_code=201)
async def split_dataset(runtime: RuntimeDep, caller: CallerDep, name: str, body: SplitIn) -> DatasetOut:
    datasets = _datasets(runtime, caller)
    opts = SplitOptions(**body.model_dump(exclude={"version"}))
    info = await run_in_threadpool(datasets.split, name, opts, version=body.version)
    return _with_preview(datasets, info)


@router.post("/{name}/augment", status_code=201)
async def augment_dataset(runtime: RuntimeDep, caller: CallerDep, name: str, body: AugmentIn) -> DatasetOut:
    datasets = _datasets(runtime, caller)
    opts = AugmentOptions(**body.model_dump(exclude={"version"}))
    info = await run_in_threadpool(datasets.augment, name, opts, version=body.version)
    return _with_preview(datasets, info)
