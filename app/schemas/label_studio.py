"""The shapes of Label Studio's ML-backend protocol (as Label Studio 1.23 sends and expects them).

Requests accept the many fields Label Studio sends and the service does not read (``extra``
allowed); the fields it reads are checked, so a malformed request is a 422, never a 500.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_ID = 2**63 - 1  # Label Studio's ids are 64-bit at most
MAX_TASKS = 100_000


class LSModel(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class LSTask(LSModel):
    id: int = Field(ge=1, le=MAX_ID, description="Label Studio's task id.")
    data: dict[str, Any] | None = Field(None, description="The task's data; the config's $value key is read.")


class IdRef(LSModel):
    id: int = Field(ge=1, le=MAX_ID)


class SetupRequest(LSModel):
    label_config: str = Field(alias="schema", description="The Label Studio project's label config (XML).")
    project: str | None = Field(None, max_length=200, description="Label Studio's '<project id>.<created>' uid.")
    hostname: str | None = Field(None, max_length=2048, description="Where Label Studio serves task media.")
    access_token: str | None = Field(None, max_length=4096, description="Token for Label Studio's media URLs.")
    extra_params: Any = None


class SetupResponse(BaseModel):
    model_version: str = Field(description="Changes after every proxy retrain; Label Studio then fetches new scores.")


class PredictRequest(LSModel):
    tasks: list[LSTask] = Field(max_length=MAX_TASKS)
    label_config: str | None = Field(None, description="Default: the config of the last /setup.")
    project: str | None = None
    params: dict[str, Any] | None = None


class PredictionOut(BaseModel):
    result: list[dict[str, Any]] = Field(description="The proxy's class as a choices result; [] before any proxy.")
    score: float = Field(description="Lower is served first by Label Studio's Uncertainty sampling.")
    model_version: str


class PredictResponse(BaseModel):
    results: list[PredictionOut] = Field(description="One per task, in request order.")
    model_version: str


class HealthResponse(BaseModel):
    status: Literal["UP"] = "UP"
    model_class: str = "SVP"
    project_status: str
    model_version: str


class WebhookRequest(LSModel):
    action: str = Field(min_length=1, max_length=100, description="ANNOTATION_CREATED, START_TRAINING, ...")


class LSAnnotation(LSModel):
    id: int = Field(ge=1, le=MAX_ID)
    task: int | IdRef = Field(description="The task's id (or the task object with its id).")
    result: list[Any] = Field(default_factory=list)
    was_cancelled: bool = False
    completed_by: int | dict[str, Any] | None = None
    created_at: str | None = Field(None, max_length=64)
    updated_at: str | None = Field(None, max_length=64)

    @property
    def task_id(self) -> int:
        return self.task if isinstance(self.task, int) else self.task.id

    @property
    def user(self) -> str:
        by = self.completed_by.get("id") if isinstance(self.completed_by, dict) else self.completed_by
        return "unknown" if by is None else str(by)


class WebhookResponse(BaseModel):
    status: str = Field(description="What the service did: recorded, replayed, retracted, imported, started, "
                        "advanced, skipped, ignored.")
    action: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
