"""Datasets: upload (multipart ``file``), list (own + samples; admins all), get with schema, delete (owner or admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile, status
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from auth_api import stored_inputs
from auth_api.api.params import MAX_ID, Offset
from auth_api.api.strict_query import no_unknown_query
from auth_api.authn import Principal
from auth_api.core.errors import Forbidden
from auth_api.datasets import service
from auth_api.datasets.models import Dataset, DatasetPublic, DatasetSummary
from auth_api.datasets.samples import SAMPLES, is_sample, sample_public, sample_summaries
from auth_api.deps import CurrentPrincipal, GatewayDep, SessionDep
from auth_api.models import Message, User
from mlstack.tables import TableTooLarge

router = APIRouter(prefix="/datasets", tags=["datasets"], dependencies=[Depends(no_unknown_query)])
DatasetId = Annotated[str, Path(max_length=36)]
UPLOAD_CHUNK = 1024 * 1024


def dataset_user(p: CurrentPrincipal) -> Principal:
    """Users and testers (testers: samples only); API keys need the 'models' scope, as training jobs do."""
    if not p.at_least("user") and p.role != "tester":
        raise Forbidden("requires role 'user' or 'tester'", code="insufficient_role")
    if p.kind == "api_key" and "models" not in p.scopes:
        raise Forbidden("this API key lacks the 'models' scope", code="missing_scope")
    return p


DatasetUser = Annotated[Principal, Depends(dataset_user)]


def _owners(db: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return {u.id: u.username for u in db.exec(select(User).where(col(User.id).in_(ids))).all() if u.id is not None}


def _public(row: Dataset, owner: str | None) -> DatasetPublic:
    prof = row.profile or {}
    return DatasetPublic(id=row.id, name=row.name, kind=row.kind, format=row.format, size=row.size, sha256=row.sha256,
                         rows=row.rows, owner_id=row.owner_id, owner=owner, created_at=row.created_at, filename=row.filename,
                         **{k: v for k, v in prof.items() if v is not None})


async def _read(upload: UploadFile, limit: int) -> bytes:
    """The upload's bytes, refusing past ``limit`` without reading the rest."""
    chunks, size = [], 0
    while chunk := await upload.read(UPLOAD_CHUNK):
        size += len(chunk)
        if size > limit:
            raise TableTooLarge("bytes", limit, f"more than {limit}")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DatasetPublic)
async def upload(p: DatasetUser, gw: GatewayDep, file: Annotated[UploadFile, File(description="CSV, TXT, XLSX or a ZIP of "
                 "images in one folder per class.")], name: Annotated[str | None, Form(max_length=200)] = None,
                 sheet: Annotated[str | None, Query(max_length=100, description="XLSX: the sheet to read (default: the first).")] = None,
                 ) -> DatasetPublic:
    """Upload a dataset: its schema is inferred and returned (413 over a limit or the quota, 422 unreadable)."""
    service.refuse_tester(p)
    assert p.user_id is not None
    settings = gw.settings
    data = await _read(file, settings.dataset_max_bytes)
    filename = (file.filename or "upload").rsplit("/", 1)[-1][:255]
    parsed = await run_in_threadpool(service.parse, data, filename, sheet, service.table_limits(settings))
    storage = stored_inputs.open_store(gw).storage
    row = await run_in_threadpool(service.save, gw.engine, storage, p.user_id, data, parsed, name=(name or filename).strip()[:200]
                                  or filename, filename=filename, quota=settings.dataset_quota_bytes)
    return _public(row, p.username)


@router.get("", response_model=list[DatasetSummary])
def list_datasets(p: DatasetUser, db: SessionDep, offset: Offset = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100,
                  owner: Annotated[int | None, Query(ge=1, le=MAX_ID, description="Admins: only this user's uploads.")] = None,
                  ) -> list[DatasetSummary]:
    """The samples, then your uploads, newest first (admins: everyone's, or ``?owner=``)."""
    if owner is not None and owner != p.user_id and p.role != "admin":
        raise Forbidden("only admins list other users' datasets", code="insufficient_role")
    stmt = select(Dataset).order_by(col(Dataset.created_at).desc(), col(Dataset.id).desc())
    if owner is not None:
        stmt = stmt.where(Dataset.owner_id == owner)
    elif p.role != "admin":
        stmt = stmt.where(Dataset.owner_id == p.user_id)
    samples = sample_summaries() if owner is None else []
    skip = max(0, offset - len(samples))
    samples = samples[offset:offset + limit]
    rows = db.exec(stmt.offset(skip).limit(limit - len(samples))).all() if limit > len(samples) else []
    names = _owners(db, {r.owner_id for r in rows})
    return [*samples, *(DatasetSummary.model_validate(_public(r, names.get(r.owner_id)).model_dump(include=set(
        DatasetSummary.model_fields))) for r in rows)]


@router.get("/{dataset_id}", response_model=DatasetPublic)
async def get_dataset(dataset_id: DatasetId, p: DatasetUser, gw: GatewayDep) -> DatasetPublic:
    """A dataset with its schema, candidate targets, class balance and 10-row preview (404 when not yours)."""
    if is_sample(dataset_id) and dataset_id in SAMPLES:
        return await run_in_threadpool(sample_public, dataset_id)  # generated and profiled once per process

    def find(db: Session) -> DatasetPublic:
        row = service.visible(db, p, dataset_id)
        if row is None:
            raise service.not_found(dataset_id)
        return _public(row, _owners(db, {row.owner_id}).get(row.owner_id))

    return await gw.run_db(find)


@router.delete("/{dataset_id}", response_model=Message)
async def delete_dataset(dataset_id: DatasetId, p: DatasetUser, gw: GatewayDep) -> Message:
    """Delete your dataset (admins: any) and its stored file; samples cannot be deleted (403)."""
    storage = stored_inputs.open_store(gw).storage
    await run_in_threadpool(service.remove, gw.engine, storage, p, dataset_id)
    return Message(message=f"dataset {dataset_id} deleted")
