"""Active-learning rounds of a project (read only; workers fill timings and metrics)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.deps import ProjectDep, SessionDep
from app.errors import ERROR_RESPONSES
from app.schemas.rounds import RoundRead
from app.services import reports

router = APIRouter(prefix="/projects/{project_id}/rounds", tags=["rounds"], responses=ERROR_RESPONSES)


@router.get(
    "",
    summary="List a project's rounds",
    description="Every round in order: size, labeled so far, selection timings and proxy metrics.",
    response_model=list[RoundRead],
)
def list_rounds(project: ProjectDep, session: SessionDep) -> list[RoundRead]:
    return reports.list_rounds(session, project_id=project.id)


@router.get("/{index}", summary="Get one round", response_model=RoundRead)
def get_round(project: ProjectDep, index: Annotated[int, Path(ge=0)], session: SessionDep) -> RoundRead:
    return reports.get_round(session, project_id=project.id, index=index)
