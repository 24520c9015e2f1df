"""Projects: create, list, read (with counts and the resolved budget), update while draft, delete."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.deps import AdminDep, GlobalAdminDep, PrincipalDep, ProjectDep, SessionDep
from app.errors import ERROR_RESPONSES, error_body
from app.schemas.projects import ProjectCreate, ProjectRead, ProjectUpdate
from app.services import projects as service

router = APIRouter(prefix="/projects", tags=["projects"], responses=ERROR_RESPONSES)

CONFLICT = {
    409: {
        "description": "the name is taken, or the project is no longer a draft",
        "content": {"application/json": {"example": error_body("conflict", "a project named 'x' already exists")}},
    }
}


@router.post(
    "",
    summary="Create a project",
    description="Creates a draft project. Unset models default to the paper's pair for the modality; "
    "the schedule defaults to the paper's (2% initial, 8% then 10% a round, budget 50% of the pool).",
    response_model=ProjectRead,
    status_code=status.HTTP_201_CREATED,
    responses=CONFLICT,
)
def create_project(body: ProjectCreate, _admin: GlobalAdminDep, session: SessionDep) -> ProjectRead:
    project = service.create_project(session, spec=body)
    return service.describe_project(session, project=project)


@router.get(
    "",
    summary="List projects",
    description="Admins see every project; a project-scoped key sees only its own.",
    response_model=list[ProjectRead],
)
def list_projects(principal: PrincipalDep, session: SessionDep) -> list[ProjectRead]:
    return service.list_projects(session, scope_project_id=principal.project_id)


@router.get(
    "/{project_id}",
    summary="Get a project",
    description="Settings, status, current round, item counts and the budget as an item count.",
    response_model=ProjectRead,
)
def get_project(project: ProjectDep, session: SessionDep) -> ProjectRead:
    return service.describe_project(session, project=project)


@router.patch(
    "/{project_id}",
    summary="Update a draft project",
    description="Partial update, only while the project is a draft (409 afterwards). The merged "
    "settings are validated as a whole.",
    response_model=ProjectRead,
    responses=CONFLICT,
)
def update_project(_admin: AdminDep, project: ProjectDep, body: ProjectUpdate, session: SessionDep) -> ProjectRead:
    service.update_project(session, project=project, changes=body)
    return service.describe_project(session, project=project)


@router.delete(
    "/{project_id}",
    summary="Delete a project",
    description="Deletes the project with its items, labels, rounds, jobs and scoped keys.",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
def delete_project(_admin: AdminDep, project: ProjectDep, session: SessionDep) -> Response:
    service.delete_project(session, project=project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
