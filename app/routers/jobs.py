"""Background jobs: read progress and results; admins cancel and retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from app.db import tables as t
from app.deps import AdminDep, PrincipalDep, ProjectDep, SessionDep, PathId
from app.errors import ERROR_RESPONSES, error_body
from app.schemas.jobs import JobRead, JobStatus, JobType
from app.services import jobs as service
from app.services import reports

router = APIRouter(tags=["jobs"], responses=ERROR_RESPONSES)

CONFLICT = {
    409: {
        "description": "the job's status does not allow this",
        "content": {"application/json": {"example": error_body("conflict", "job 3 is already succeeded")}},
    }
}


def get_job(session: SessionDep, principal: PrincipalDep, job_id: PathId) -> t.Job:
    """The job in the path, after checking the key may see its project."""
    job = service.get_job(session, job_id=job_id)
    principal.check_project(job.project_id)
    return job


JobDep = Annotated[t.Job, Depends(get_job)]


@router.get(
    "/projects/{project_id}/jobs",
    summary="List a project's jobs",
    description="Newest first; filter by status and type.",
    response_model=list[JobRead],
)
def list_jobs(
    project: ProjectDep,
    session: SessionDep,
    status: JobStatus | None = None,
    type: JobType | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[JobRead]:
    rows = reports.list_jobs(session, project_id=project.id, status=status, type=type, limit=limit, offset=offset)
    return [JobRead.model_validate(job) for job in rows]


@router.get("/jobs/{job_id}", summary="Get a job", description="Status, progress, params, result, error.", response_model=JobRead)
def read_job(job: JobDep) -> JobRead:
    return JobRead.model_validate(job)


@router.post(
    "/jobs/{job_id}/cancel",
    summary="Cancel a job",
    description="A queued job is cancelled at once; a running one stops at its next check (between epochs).",
    response_model=JobRead,
    responses=CONFLICT,
)
def cancel_job(_admin: AdminDep, job: JobDep, session: SessionDep) -> JobRead:
    return JobRead.model_validate(service.request_cancel(session, job=job))


@router.post(
    "/jobs/{job_id}/retry",
    summary="Retry a job",
    description="Re-queues a failed or cancelled job; the same job row runs again.",
    response_model=JobRead,
    responses=CONFLICT,
)
def retry_job(_admin: AdminDep, job: JobDep, session: SessionDep) -> JobRead:
    return JobRead.model_validate(service.retry_job(session, job=job))
