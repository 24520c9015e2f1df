"""Label Studio ML-backend protocol, one backend URL per project: ``/ls/{project_id}``.

Label Studio calls ``{url}/health``, ``{url}/setup``, ``{url}/predict`` and ``{url}/webhook``.
Every call needs an API key that may act on the project (a project-scoped annotator key is
enough; it also lets Label Studio's "Start Training" advance the round). Label Studio sends it as
HTTP Basic auth: the password is the key, the user name is free. Its webhooks carry no auth
header of their own, so put the credentials in the URL (``http://ls:<key>@host/ls/1``) and every
call, webhooks included, carries them. ``Authorization: Bearer`` and ``X-API-Key`` work too.
"""

from __future__ import annotations

import base64
import binascii
import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Header, Path, Request
from sqlalchemy.orm import Session
from sqlalchemy import select

from app.db import tables as t
from app.deps import MAX_ID, Principal, SessionDep, SettingsDep
from app.errors import ERROR_RESPONSES, NotFound, Unauthorized
from app.schemas.label_studio import (
    HealthResponse,
    PredictionOut,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    WebhookRequest,
    WebhookResponse,
)
from app.security import hash_secret
from app.services.label_studio import backend, webhook
from app.services.label_studio.scoring import current_model_version
from app.services.label_studio.sync import VersionSync, target_of
from app.services.label_studio.tasks import TaskIn

router = APIRouter(prefix="/ls/{project_id}", tags=["label-studio"], responses=ERROR_RESPONSES)

CHALLENGE = {"WWW-Authenticate": 'Basic realm="svp"'}
_SYNC_LOCK = threading.Lock()


@dataclass(frozen=True)
class Caller:
    principal: Principal
    project: t.Project


def _secret(authorization: str | None, x_api_key: str | None) -> str | None:
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value:
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            raise Unauthorized("malformed Basic credentials", headers=CHALLENGE) from None
        # The key is the password; a key given as the user name with no password is accepted too.
        return (password or user).strip() or None
    return None


def get_caller(
    session: SessionDep,
    project_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> Caller:
    secret = _secret(authorization, x_api_key)
    if not secret:
        raise Unauthorized(
            "an API key is required: Basic auth with the key as password, or in the backend URL "
            "(http://ls:<key>@host/ls/<project>)",
            headers=CHALLENGE,
        )
    key = session.scalar(select(t.ApiKey).where(t.ApiKey.key_hash == hash_secret(secret)))
    if key is None or key.revoked_at is not None:
        raise Unauthorized("unknown or revoked API key", headers=CHALLENGE)
    principal = Principal(key_id=key.id, name=key.name, role=key.role, project_id=key.project_id)
    principal.check_project(project_id)
    project = session.get(t.Project, project_id)
    if project is None:
        raise NotFound(f"project {project_id} does not exist")
    session.commit()  # end the lookup's read transaction, as app.deps does for its lookups
    return Caller(principal=principal, project=project)


CallerDep = Annotated[Caller, Depends(get_caller)]


def _version_sync(request: Request) -> VersionSync:
    with _SYNC_LOCK:
        state = getattr(request.app.state, "label_studio_sync", None)
        if state is None:
            state = request.app.state.label_studio_sync = VersionSync()
        return state


def _keep_in_step(
    request: Request, background: BackgroundTasks, session: Session, project: t.Project, *, new_tasks: bool
) -> None:
    """After the answer is sent, bring the Label Studio project to the current model version (and
    predict new tasks); while a round is being selected, watch for it and sync once it is
    published. Only when the last /setup told where Label Studio is (services.label_studio.sync)."""
    target = target_of(backend.get_link(session, project_id=project.id))
    if target is None:
        return
    version, selecting = backend.standing(session, project_id=project.id)
    sync = _version_sync(request)
    if selecting:
        if sync.claim(project.id, version, follow=True):
            sessionmaker = request.app.state.sessionmaker

            def standing() -> tuple[str, bool]:
                with sessionmaker() as fresh:
                    return backend.standing(fresh, project_id=project.id)

            background.add_task(sync.follow, project.id, version, target, standing)
    elif sync.claim(project.id, version, new_tasks=new_tasks):
        background.add_task(sync.run, project.id, version, target)


@router.get("/health", summary="Label Studio: is the backend up", response_model=HealthResponse)
def health(caller: CallerDep, session: SessionDep) -> HealthResponse:
    return HealthResponse(
        project_status=caller.project.status,
        model_version=current_model_version(session, project=caller.project),
    )


@router.post(
    "/setup",
    summary="Label Studio: connect a Label Studio project",
    description="Checks that the label config is one single-choice `Choices` over a `Text` (text project) or "
    "`Image` (image project) with exactly the project's classes (422 naming each problem otherwise), remembers "
    "Label Studio's hostname and token for task media, and returns the current `model_version`.",
    response_model=SetupResponse,
)
def setup(body: SetupRequest, caller: CallerDep, session: SessionDep) -> SetupResponse:
    version = backend.setup(
        session,
        project=caller.project,
        label_config=body.label_config,
        ls_project=body.project,
        hostname=body.hostname,
        access_token=body.access_token,
    )
    return SetupResponse(model_version=version)


@router.post(
    "/predict",
    summary="Label Studio: predictions whose scores order tasks as the service selects them",
    description="One result per task, in request order. Unknown tasks are imported into the pool first. "
    "Scores: the current batch in rank order, then the rest by least confidence, then unscored items "
    "(Label Studio's Uncertainty sampling serves the lowest score first).",
    response_model=PredictResponse,
)
def predict(body: PredictRequest, caller: CallerDep, session: SessionDep, settings: SettingsDep, request: Request) -> PredictResponse:
    version, predictions = backend.predict(
        session,
        project=caller.project,
        tasks=[TaskIn(id=task.id, data=task.data) for task in body.tasks],
        label_config=body.label_config,
        blobs=request.app.state.blobs,
        settings=settings,
    )
    return PredictResponse(
        results=[PredictionOut(result=p.result, score=p.score, model_version=version) for p in predictions],
        model_version=version,
    )


@router.post(
    "/webhook",
    summary="Label Studio: webhook events",
    description="ANNOTATION_CREATED / ANNOTATION_UPDATED record the label (idempotent), ANNOTATIONS_DELETED "
    "retracts it, TASKS_CREATED imports tasks, START_TRAINING starts the project or advances its round (the proxy "
    "retrains in a queued job). Other events are acknowledged with status `ignored`. Answers at once; then, in the "
    "background, moves the Label Studio project to the current model version (retrieving predictions first).",
    response_model=WebhookResponse,
)
def receive_webhook(
    body: WebhookRequest,
    caller: CallerDep,
    session: SessionDep,
    settings: SettingsDep,
    request: Request,
    background: BackgroundTasks,
) -> WebhookResponse:
    outcome = webhook.handle_webhook(
        session,
        project=caller.project,
        payload=body.model_dump(by_alias=True),
        annotator=caller.principal.name,
        blobs=request.app.state.blobs,
        settings=settings,
    )
    _keep_in_step(request, background, session, caller.project, new_tasks=outcome.status == "imported")
    return WebhookResponse(status=outcome.status, action=outcome.action, message=outcome.message, details=outcome.details)
