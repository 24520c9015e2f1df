"""Routes: item import (JSON body or file upload), item metadata, listing and content.

The import routes read their bodies themselves: the upload limit (``settings.max_upload_bytes``) is
enforced while the body streams in, before anything is parsed, and rows are reported by the import
service in one shape (``{"row" | "file" | "field": ..., "problem": ...}``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, UploadFile

from app.deps import AdminDep, PrincipalDep, ProjectDep, SessionDep, SettingsDep, PathId
from app.errors import ERROR_RESPONSES, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from app.schemas.items import UPLOAD_OPENAPI_SCHEMA, ImportRead, ItemPage, ItemRead, ItemsImport, Split
from app.services import items as service
from app.services.importers import UploadedFile, loads_strict

router = APIRouter(tags=["items"], responses=ERROR_RESPONSES)

# Each uploaded file is spooled separately; large image sets belong in one .zip or .npz.
MAX_UPLOAD_FILES = 10_000
MAX_FORM_FIELDS = 16
MAX_FORM_FIELD_BYTES = 16 << 20  # 'labels' maps every uploaded file name to a class


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is {declared} bytes, over the limit of {limit}")


def _limited(request: Request, limit: int) -> Request:
    """The same request, whose body fails with 413 as soon as more than ``limit`` bytes arrive
    (covers chunked uploads that declare no length)."""
    _check_declared_length(request, limit)
    received = 0
    upstream = request.receive

    async def receive():
        nonlocal received
        message = await upstream()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        return message

    return Request(request.scope, receive)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _import_read(result: service.ImportResult) -> ImportRead:
    id_range = None
    if result.first_item_id is not None:
        id_range = {"first": result.first_item_id, "last": result.last_item_id}
    return ImportRead(
        imported=result.imported,
        labeled=result.labeled,
        split=result.split,
        duplicates=result.duplicates,
        duplicate_count=result.duplicate_count,
        item_ids_range=id_range,
    )


@router.post(
    "/projects/{project_id}/items",
    status_code=201,
    response_model=ImportRead,
    summary="Import items from a JSON body",
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": ItemsImport.openapi_schema()}}}
    },
)
async def import_items(
    request: Request, project: ProjectDep, _admin: AdminDep, session: SessionDep, settings: SettingsDep
) -> ImportRead:
    """All-or-nothing: any bad row rejects the whole import (422, every bad row listed)."""
    if _media_type(request) not in ("application/json", ""):
        raise UnsupportedMediaType("send the items as application/json, or upload a file to .../items/upload")
    body = await _limited(request, settings.max_upload_bytes).body()
    try:
        payload = ItemsImport.model_validate(loads_strict(body))
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "problem": e["msg"]} for e in exc.errors()]
        raise Unprocessable("invalid import body", details=details) from None
    except ValueError as exc:
        raise Unprocessable("invalid import body", details=[{"field": "body", "problem": f"malformed JSON: {exc}"}])
    result = await run_in_threadpool(
        service.import_json,
        session,
        project=project,
        split=payload.split,
        items=payload.items,
        blobs=request.app.state.blobs,
        settings=settings,
    )
    return _import_read(result)


def _uploads(form: FormData) -> list[UploadedFile]:
    uploads = []
    for name in ("file", "files"):
        for value in form.getlist(name):
            if not isinstance(value, UploadFile):
                raise Unprocessable(f"invalid {name}", details=[{"field": name, "problem": f"'{name}' must be a file"}])
            uploads.append(
                UploadedFile(
                    filename=value.filename or "", content_type=value.content_type, file=value.file, size=value.size
                )
            )
    return uploads


def _text_field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise Unprocessable(f"invalid {name}", details=[{"field": name, "problem": f"'{name}' must be a text field"}])
    return value


@router.post(
    "/projects/{project_id}/items/upload",
    status_code=201,
    response_model=ImportRead,
    summary="Import items from an uploaded file",
    openapi_extra={
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": UPLOAD_OPENAPI_SCHEMA}}}
    },
)
async def upload_items(
    request: Request, project: ProjectDep, _admin: AdminDep, session: SessionDep, settings: SettingsDep
) -> ImportRead:
    """Multipart form: ``split`` and either ``file`` (.jsonl/.csv for text; .zip/.npz for images) or
    ``files`` (image files, with optional ``labels``: JSON mapping file name to class). A .zip is in
    image-folder layout ``<class>/<file>``; ``root`` names the folder inside it holding the class
    folders. All-or-nothing: any bad row rejects the whole import (422, every bad row listed)."""
    if _media_type(request) != "multipart/form-data":
        raise UnsupportedMediaType("upload files as multipart/form-data")
    form = await _limited(request, settings.max_upload_bytes).form(
        max_files=MAX_UPLOAD_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_FORM_FIELD_BYTES
    )
    try:
        uploads = _uploads(form)
        total = sum(u.size or 0 for u in uploads)
        if total > settings.max_upload_bytes:
            raise PayloadTooLarge(f"the upload is {total} bytes, over the limit of {settings.max_upload_bytes}")
        result = await run_in_threadpool(
            service.import_upload,
            session,
            project=project,
            split=_text_field(form, "split"),
            files=uploads,
            labels=_text_field(form, "labels"),
            root=_text_field(form, "root"),
            blobs=request.app.state.blobs,
            settings=settings,
        )
    finally:
        await form.close()
    return _import_read(result)


@router.get("/projects/{project_id}/items", response_model=ItemPage, summary="List items (keyset pagination)")
def list_items(
    project: ProjectDep,
    _principal: PrincipalDep,
    session: SessionDep,
    split: Split | None = None,
    labeled: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after_id: Annotated[int | None, Query(ge=0)] = None,
) -> ItemPage:
    rows = service.list_items(
        session, project_id=project.id, split=split, labeled=labeled, limit=limit, after_id=after_id
    )
    next_after_id = rows[-1].id if len(rows) == limit else None
    return ItemPage(items=[ItemRead.model_validate(r) for r in rows], next_after_id=next_after_id)


@router.get("/projects/{project_id}/items/{item_id}", response_model=ItemRead, summary="Item metadata")
def get_item(project: ProjectDep, _principal: PrincipalDep, session: SessionDep, item_id: PathId) -> Any:
    return service.get_item(session, project_id=project.id, item_id=item_id)


@router.get(
    "/projects/{project_id}/items/{item_id}/content",
    summary="Item content: the text (text/plain) or the image bytes",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}, "image/*": {}}}},
)
def get_item_content(
    request: Request, project: ProjectDep, _principal: PrincipalDep, session: SessionDep, item_id: PathId
) -> Response:
    item = service.get_item(session, project_id=project.id, item_id=item_id)
    content = service.item_content(item=item, blobs=request.app.state.blobs)
    # Content never changes for an item (it is addressed by its hash), so it can be cached.
    headers = {"ETag": f'"{item.content_sha256}"', "Cache-Control": "private, max-age=86400"}
    if content.text is not None:
        return Response(content=content.text, media_type=content.media_type, headers=headers)
    return FileResponse(content.path, media_type=content.media_type, headers=headers)
