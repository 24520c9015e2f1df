"""Core-set selection jobs (admin only): queue one, follow it, read its ranking and subsets, compare
two rankings."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import StreamingResponse

from app.deps import MAX_ID, AdminDep, PathId, ProjectDep, SessionDep
from app.errors import ERROR_RESPONSES, error_body
from app.schemas.coresets import (
    CoresetCreate,
    CoresetRead,
    RankingComparison,
    RankingName,
    RankingPage,
    SubsetPage,
)
from app.services import coresets as service

router = APIRouter(prefix="/projects/{project_id}/coresets", tags=["coresets"], responses=ERROR_RESPONSES)

NOT_READY = {
    409: {
        "description": "the job has not succeeded (yet)",
        "content": {"application/json": {"example": error_body("conflict", "core-set job 3 is running; ...")}},
    }
}
PAGE_LIMIT = 100_000
Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=PAGE_LIMIT)]


@router.post(
    "",
    summary="Queue a core-set selection job",
    description="Trains the proxy once over every labeled pool item, ranks them by the method and keeps the "
    "top of the ranking for each requested size (nested subsets). With train_target, the target is trained on "
    "each subset (and a random subset of the same size, and optionally the full data) and evaluated on the "
    "test split. Follow it at `GET /jobs/{id}` or here; cancel and retry with the job routes.",
    response_model=CoresetRead,
    status_code=status.HTTP_202_ACCEPTED,
)
def create_coreset(_admin: AdminDep, project: ProjectDep, body: CoresetCreate, session: SessionDep) -> CoresetRead:
    job = service.create_coreset(session, project=project, request=body)
    return service.describe(job)


@router.get("", summary="List a project's core-set jobs", description="Newest first.", response_model=list[CoresetRead])
def list_coresets(_admin: AdminDep, project: ProjectDep, session: SessionDep,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0) -> list[CoresetRead]:
    return [service.describe(job) for job in
            service.list_coreset_jobs(session, project_id=project.id, limit=limit, offset=offset)]


@router.get(
    "/compare",
    summary="Compare two rankings by Spearman's rank correlation",
    description="The paper's measure of how good a proxy is: e.g. a proxy's ranking against the target's "
    "(`a_ranking=proxy&b_ranking=target` of one job), or two proxies' (two jobs). Computed over the items "
    "both rankings hold.",
    response_model=RankingComparison,
    responses=NOT_READY,
)
def compare(_admin: AdminDep, project: ProjectDep, session: SessionDep,
            a: Annotated[int, Query(ge=1, le=MAX_ID)], b: Annotated[int, Query(ge=1, le=MAX_ID)],
            a_ranking: RankingName = "proxy", b_ranking: RankingName = "proxy") -> RankingComparison:
    return service.compare_rankings(session, project_id=project.id, a=a, a_ranking=a_ranking, b=b,
                                    b_ranking=b_ranking)


@router.get("/{job_id}", summary="Get a core-set job", description="Request, progress and, once done, the outcome.",
            response_model=CoresetRead)
def get_coreset(_admin: AdminDep, project: ProjectDep, session: SessionDep, job_id: PathId) -> CoresetRead:
    return service.describe(service.get_coreset_job(session, project_id=project.id, job_id=job_id))


@router.get(
    "/{job_id}/ranking",
    summary="Page through a job's ranking",
    description="Every labeled pool item with its rank and score. +inf scores (never learned) come as "
    "`score: null, infinite: true`.",
    response_model=RankingPage,
    responses=NOT_READY,
)
def get_ranking(_admin: AdminDep, project: ProjectDep, session: SessionDep, job_id: PathId,
                ranking: RankingName = "proxy", offset: Offset = 0, limit: Limit = 1000) -> RankingPage:
    job = service.get_coreset_job(session, project_id=project.id, job_id=job_id)
    return RankingPage.model_validate(service.ranking_page(session, job=job, ranking=ranking, offset=offset, limit=limit))


@router.get(
    "/{job_id}/subsets/{index}",
    summary="Fetch one subset as JSON or CSV",
    description="Subset `index` (0 = the smallest) of the job: its top-ranked items. `format=csv` streams every "
    "item (external_id first); JSON pages with offset/limit.",
    response_model=SubsetPage,
    responses={**NOT_READY, 200: {"content": {"text/csv": {}}}},
)
def get_subset(_admin: AdminDep, project: ProjectDep, session: SessionDep, request: Request, job_id: PathId,
               index: Annotated[int, Path(ge=0, le=MAX_ID)], format: Literal["json", "csv"] = "json",
               ranking: RankingName = "proxy", offset: Offset = 0, limit: Limit = 10_000):
    job = service.get_coreset_job(session, project_id=project.id, job_id=job_id)
    if format == "json":
        return SubsetPage.model_validate(
            service.subset_page(session, job=job, index=index, ranking=ranking, offset=offset, limit=limit))
    size = int(service.get_subset(job, index)["size"])
    service.require_ranking(job, ranking)  # a 404 / 409 must come before the stream starts
    body = service.subset_csv(request.app.state.sessionmaker, job_id=job.id, ranking=ranking, size=size)
    filename = f"project-{project.id}-coreset-{job.id}-{ranking}-{size}.csv"
    return StreamingResponse(body, media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
