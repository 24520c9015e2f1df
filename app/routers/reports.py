"""Routes: learning curve, label export, model artifacts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from sqlalchemy import select

from app.db import tables as t
from app.deps import ProjectDep, SessionDep, PathId
from app.errors import ERROR_RESPONSES, NotFound
from app.services.export import export_csv, export_jsonl
from app.services.learning_curve import learning_curve

router = APIRouter(tags=["reports"], responses=ERROR_RESPONSES)


@router.get("/projects/{project_id}/learning-curve", summary="Per-round proxy accuracy and selection runtime")
def get_learning_curve(project: ProjectDep, session: SessionDep) -> dict[str, Any]:
    return learning_curve(session, project=project)


@router.get("/projects/{project_id}/export", summary="Export labels as CSV or JSONL")
def export_labels(
    project: ProjectDep,
    request: Request,
    format: Annotated[Literal["csv", "jsonl"], Query()] = "jsonl",
    include_unlabeled: bool = False,
) -> StreamingResponse:
    sessions = request.app.state.sessionmaker
    if format == "csv":
        body, media = export_csv(sessions, project_id=project.id, include_unlabeled=include_unlabeled), "text/csv"
    else:
        body, media = export_jsonl(sessions, project_id=project.id, include_unlabeled=include_unlabeled), "application/x-ndjson"
    filename = f"project-{project.id}-labels.{format}"
    return StreamingResponse(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _artifact_read(artifact: t.ModelArtifact) -> dict[str, Any]:
    return {
        "id": artifact.id,
        "role": artifact.role,
        "arch": artifact.arch,
        "round_index": artifact.round_index,
        "job_id": artifact.job_id,
        "size_bytes": artifact.size_bytes,
        "metrics": artifact.metrics,
        "created_at": artifact.created_at,
        "download_url": f"/projects/{artifact.project_id}/artifacts/{artifact.id}/download",
    }


@router.get("/projects/{project_id}/artifacts", summary="List trained models (proxies per round, the target)")
def list_artifacts(project: ProjectDep, session: SessionDep, role: Literal["proxy", "target"] | None = None) -> list[dict[str, Any]]:
    query = select(t.ModelArtifact).where(t.ModelArtifact.project_id == project.id).order_by(t.ModelArtifact.id)
    if role:
        query = query.where(t.ModelArtifact.role == role)
    return [_artifact_read(a) for a in session.scalars(query)]


@router.get("/projects/{project_id}/artifacts/{artifact_id}/download", summary="Download a model checkpoint")
def download_artifact(project: ProjectDep, session: SessionDep, request: Request, artifact_id: PathId) -> FileResponse:
    artifact = session.get(t.ModelArtifact, artifact_id)
    if artifact is None or artifact.project_id != project.id:
        raise NotFound(f"artifact {artifact_id} does not exist in project {project.id}")
    path = request.app.state.blobs.path(artifact.path)
    if not path.is_file():
        raise NotFound(f"artifact {artifact_id}'s file is missing from the blob store")
    filename = f"project-{project.id}-{artifact.role}-{artifact.arch}-{artifact.id}.ckpt"
    return FileResponse(path, media_type="application/octet-stream", filename=filename)
