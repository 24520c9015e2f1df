"""Annotation flow and round lifecycle: start a project, lease what to label next, release leases,
advance a round early, train the target early."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.deps import AdminDep, PrincipalDep, ProjectAccessDep, ProjectDep, SessionDep
from app.errors import ERROR_RESPONSES, error_body
from app.schemas.queries import LeaseResponse, LifecycleResponse, ReleaseRequest, ReleaseResponse, RoundSummary
from app.services import queries as service
from app.services import rounds

router = APIRouter(prefix="/projects/{project_id}", responses=ERROR_RESPONSES)

CONFLICT = {
    409: {
        "description": "the project's state does not allow this",
        "content": {"application/json": {"example": error_body("conflict", "project 3 is already started")}},
    }
}

MAX_LEASE_SECONDS = 24 * 3600


def _lifecycle(project, session, job_id: int | None = None) -> LifecycleResponse:
    current = rounds.current_round(session, project=project)
    return LifecycleResponse(
        project_id=project.id,
        status=project.status,
        current_round=project.current_round,
        round=RoundSummary.model_validate(current) if current is not None else None,
        job_id=job_id,
    )


@router.post(
    "/start",
    tags=["rounds"],
    summary="Start a project",
    description="Draws round 0, a uniform random sample of the pool seeded by the project's seed, and opens "
    "it; the project becomes active. The project must be a draft with at least 2 pool items.",
    response_model=LifecycleResponse,
    responses=CONFLICT,
)
def start_project(project: ProjectDep, _admin: AdminDep, session: SessionDep) -> LifecycleResponse:
    rounds.start_project(session, project_id=project.id)
    return _lifecycle(project, session)


@router.get(
    "/queries/next",
    tags=["annotation"],
    summary="Lease the next items to label",
    description="Leases up to `limit` unlabeled items of the current round, most wanted first, to the calling "
    "key's name. Calling again first returns (and renews) what the caller already holds. When nothing can be "
    "handed out the list is empty, `status` says why (selecting, all_leased, training_target, completed, "
    "not_started) and `Retry-After` says when to ask again (not sent once the project is completed).",
    response_model=LeaseResponse,
)
async def next_queries(
    access: ProjectAccessDep,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=100, description="Most items to lease.")] = 1,
    lease_seconds: Annotated[
        int | None, Query(ge=1, le=MAX_LEASE_SECONDS, description="Lease length; default: the project's.")
    ] = None,
) -> LeaseResponse:
    settings = access.settings

    def lease(session, project) -> service.LeaseBatch:
        seconds = lease_seconds or project.lease_seconds or settings.lease_seconds
        return service.lease_next(
            session, project=project, annotator=access.principal.name, limit=limit, lease_seconds=seconds
        )

    batch = await access.run(lease)  # one thread turn: project lookup, leasing, commit (app.deps)
    retry_after = None
    if not batch.items and batch.status not in service.FINAL_STATUSES:
        retry_after = settings.retry_after_seconds
        response.headers["Retry-After"] = str(retry_after)
    return LeaseResponse(
        round=batch.round,
        items=[item.__dict__ for item in batch.items],
        status=batch.status,
        reason=batch.reason,
        retry_after=retry_after,
    )


@router.post(
    "/queries/release",
    tags=["annotation"],
    summary="Give leased items back",
    description="Releases the caller's leases on these items (to skip them); others may lease them at once. "
    "Items not leased to the caller are ignored.",
    response_model=ReleaseResponse,
)
def release_queries(
    body: ReleaseRequest, project: ProjectDep, principal: PrincipalDep, session: SessionDep
) -> ReleaseResponse:
    released = service.release(session, project=project, annotator=principal.name, item_ids=body.item_ids)
    return ReleaseResponse(released=released)


@router.post(
    "/rounds/advance",
    tags=["rounds"],
    summary="Complete the current round now",
    description="Closes the open round even if partly labeled and queues what follows: the next round's "
    "selection job, or the target training once the budget is reached.",
    response_model=LifecycleResponse,
    responses=CONFLICT,
)
def advance_round(project: ProjectDep, _admin: AdminDep, session: SessionDep) -> LifecycleResponse:
    project, job = rounds.advance_round(session, project_id=project.id)
    return _lifecycle(project, session, job.id)


@router.post(
    "/train-target",
    tags=["rounds"],
    summary="Train the target model now",
    description="Stops selecting (a running selection is cancelled) and queues the target training on the "
    "labels so far. Calling it again returns the same job.",
    response_model=LifecycleResponse,
    responses=CONFLICT,
)
def train_target(project: ProjectDep, _admin: AdminDep, session: SessionDep) -> LifecycleResponse:
    project, job = rounds.request_train_target(session, project_id=project.id)
    return _lifecycle(project, session, job.id)
