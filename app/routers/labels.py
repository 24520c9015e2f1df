"""Labels: one or many at once (idempotent), retraction, and an item's label history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from app.db import tables as t
from app.deps import AdminDep, PathId, ProjectAccessDep, ProjectDep, SessionDep
from app.errors import ERROR_RESPONSES, error_body
from app.schemas.labels import AnnotationRead, BulkLabelCreate, BulkLabelResponse, LabelCreate, LabelRead, LabelResponse
from app.services import labels as service
from app.services.labels import LabelInput, LabelOutcome

router = APIRouter(prefix="/projects/{project_id}", tags=["labels"], responses=ERROR_RESPONSES)

CONFLICT = {
    409: {
        "description": "the project does not accept labels now, or an idempotency key was reused",
        "content": {"application/json": {"example": error_body("conflict", "project 3 has not been started")}},
    }
}


def _read(outcome: LabelOutcome) -> LabelRead:
    annotation = outcome.annotation
    return LabelRead(
        annotation_id=annotation.id,
        item_id=outcome.item.id,
        external_id=outcome.item.external_id,
        label=annotation.label,
        annotator=annotation.annotator,
        round_index=annotation.round_index,
        created_at=annotation.created_at,
        replayed=outcome.replayed,
    )


@router.post(
    "/labels",
    summary="Label one item",
    description="`label` must be one of the project's classes; the item is named by `item_id` or `external_id`. "
    "Repeating a request with the same `Idempotency-Key`, or the same annotator sending the same label again, "
    "writes nothing and returns the original annotation (`replayed: true`).",
    response_model=LabelResponse,
    responses=CONFLICT,
)
async def create_label(
    body: LabelCreate,
    access: ProjectAccessDep,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> LabelResponse:
    entry = LabelInput(
        label=body.label, item_id=body.item_id, external_id=body.external_id, meta=body.meta,
        idempotency_key=idempotency_key,
    )

    def write(session, project) -> tuple[t.Project, list[LabelOutcome]]:
        return project, service.add_labels(session, project=project, annotator=access.principal.name, entries=[entry])

    project, [outcome] = await access.run(write)  # one thread turn: project lookup, writes, commit (app.deps)
    return LabelResponse(
        **_read(outcome).model_dump(), project_status=project.status, current_round=project.current_round
    )


@router.post(
    "/labels/bulk",
    summary="Label many items",
    description="All or nothing: if any entry is invalid the answer is 422 with every problem listed (by index) "
    "and nothing is written. Each entry may carry its own `idempotency_key`.",
    response_model=BulkLabelResponse,
    responses=CONFLICT,
)
async def create_labels_bulk(body: BulkLabelCreate, access: ProjectAccessDep) -> BulkLabelResponse:
    entries = [
        LabelInput(
            label=e.label, item_id=e.item_id, external_id=e.external_id, meta=e.meta, idempotency_key=e.idempotency_key
        )
        for e in body.labels
    ]

    def write(session, project) -> tuple[t.Project, list[LabelOutcome]]:
        return project, service.add_labels(
            session, project=project, annotator=access.principal.name, entries=entries, bulk=True
        )

    project, outcomes = await access.run(write)
    return BulkLabelResponse(
        labels=[_read(o) for o in outcomes], project_status=project.status, current_round=project.current_round
    )


@router.delete(
    "/labels/{item_id}",
    summary="Retract an item's label",
    description="Admin only. The history keeps a retraction (label null); if the item is in the current round's "
    "batch it can be leased again.",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=CONFLICT,
)
def retract_label(
    item_id: PathId, project: ProjectDep, admin: AdminDep, session: SessionDep
) -> Response:
    service.retract_label(session, project=project, item_id=item_id, annotator=admin.name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/items/{item_id}/labels",
    summary="An item's label history",
    description="Every annotation, newest first; a null label is a retraction.",
    response_model=list[AnnotationRead],
)
def label_history(item_id: PathId, project: ProjectDep, session: SessionDep) -> list[AnnotationRead]:
    return [AnnotationRead.model_validate(a) for a in service.label_history(session, project=project, item_id=item_id)]
