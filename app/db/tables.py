"""The data model (DESIGN.md section 4). Typed SQLAlchemy 2 mappings; the migrations must match them.

Conventions: integer surrogate keys, ``*_at`` timestamps in UTC, JSON columns for specs and metrics.
String enums are stored as plain strings (validated by the schemas), so adding a value needs no
migration.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, utcnow

# Status values. Kept here so services, workers and tests share one spelling.
PROJECT_DRAFT = "draft"  # created, items may be imported, settings may change
PROJECT_ACTIVE = "active"  # started: rounds are being labeled / selected
PROJECT_TRAINING_TARGET = "training_target"  # budget reached, target job queued or running
PROJECT_COMPLETED = "completed"
PROJECT_FAILED = "failed"

ROUND_SELECTING = "selecting"  # a select_round job is computing its queries
ROUND_OPEN = "open"  # queries written, annotators are labeling them
ROUND_COMPLETED = "completed"  # every query labeled (or the admin advanced)

JOB_QUEUED = "queued"
JOB_RUNNING = "running"
JOB_SUCCEEDED = "succeeded"
JOB_FAILED = "failed"
JOB_CANCELLED = "cancelled"
JOB_FINISHED = (JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED)

JOB_SELECT_ROUND = "select_round"
JOB_TRAIN_TARGET = "train_target"
JOB_CORESET = "coreset"

SPLIT_POOL = "pool"
SPLIT_TEST = "test"


class Project(Base):
    __tablename__ = "project"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    modality: Mapped[str] = mapped_column(String(16))  # image | text
    classes: Mapped[list[Any]]  # ordered class names; the index is the model's label id
    proxy: Mapped[dict[str, Any]]  # model spec: {"arch": ..., "epochs": ..., ...}
    target: Mapped[dict[str, Any]]
    strategy: Mapped[str] = mapped_column(String(32))
    schedule: Mapped[dict[str, Any]]  # {"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(32), default=PROJECT_DRAFT)
    current_round: Mapped[int | None] = mapped_column(Integer, default=None)
    lease_seconds: Mapped[int | None] = mapped_column(Integer, default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Item(Base):
    """One pool or test example. Text lives inline; image bytes live in the blob store by sha256.

    ``label`` / ``labeled_at`` / ``label_round`` mirror the latest annotation so that counts and the
    training set are one indexed query; the ``annotation`` table keeps the full history.
    """

    __tablename__ = "item"
    __table_args__ = (
        UniqueConstraint("project_id", "external_id"),
        UniqueConstraint("project_id", "content_sha256"),
        Index("ix_item_project_split_label", "project_id", "split", "label"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    external_id: Mapped[str] = mapped_column(String(512))
    split: Mapped[str] = mapped_column(String(8))  # pool | test
    content_type: Mapped[str] = mapped_column(String(64))  # text/plain, image/png, ...
    content_sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str | None] = mapped_column(Text, default=None)
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    label: Mapped[str | None] = mapped_column(String(200), default=None)
    labeled_at: Mapped[datetime | None] = mapped_column(default=None)
    label_round: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Annotation(Base):
    """Label history. The newest row of an item is its effective label; ``label`` None retracts."""

    __tablename__ = "annotation"
    __table_args__ = (
        UniqueConstraint("project_id", "idempotency_key"),
        Index("ix_annotation_item_created", "item_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    label: Mapped[str | None] = mapped_column(String(200))
    annotator: Mapped[str] = mapped_column(String(200))
    round_index: Mapped[int | None] = mapped_column(Integer, default=None)  # round that requested it
    idempotency_key: Mapped[str | None] = mapped_column(String(200), default=None)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Round(Base):
    __tablename__ = "round"
    __table_args__ = (UniqueConstraint("project_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=ROUND_SELECTING)
    strategy: Mapped[str] = mapped_column(String(32))  # "random" for round 0
    selector: Mapped[dict[str, Any] | None] = mapped_column(default=None)  # proxy spec used, if any
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"), default=None)
    labeled_at_start: Mapped[int] = mapped_column(Integer, default=0)
    size: Mapped[int] = mapped_column(Integer, default=0)
    train_s: Mapped[float | None] = mapped_column(Float, default=None)
    inference_s: Mapped[float | None] = mapped_column(Float, default=None)
    ranking_s: Mapped[float | None] = mapped_column(Float, default=None)
    total_s: Mapped[float | None] = mapped_column(Float, default=None)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    opened_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class Query(Base):
    """One item of a round's batch, leased to at most one annotator at a time."""

    __tablename__ = "query"
    __table_args__ = (
        UniqueConstraint("round_id", "item_id"),
        Index("ix_query_lease", "project_id", "round_index", "labeled_at", "lease_expires_at", "rank"),
        # Leasing walks a round's unlabeled queries in rank order: with this partial index that is an
        # ordered index scan that stops after ``limit`` rows, not a sort of the whole round per call.
        Index(
            "ix_query_open_rank",
            "project_id",
            "round_index",
            "rank",
            postgresql_where=text("labeled_at IS NULL"),
            sqlite_where=text("labeled_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    round_id: Mapped[int] = mapped_column(ForeignKey("round.id", ondelete="CASCADE"))
    round_index: Mapped[int] = mapped_column(Integer)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(Integer)
    score: Mapped[float | None] = mapped_column(Float, default=None)
    leased_to: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    labeled_at: Mapped[datetime | None] = mapped_column(default=None)


class Job(Base):
    """The source of truth for background work; Celery only carries its id."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("dedup_key"),
        Index("ix_job_status", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JOB_QUEUED)
    # At most one job per key (e.g. "select_round:<project>:<round>"), so a round is computed once.
    dedup_key: Mapped[str | None] = mapped_column(String(200), default=None)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)  # fraction, phase, epoch, message
    result: Mapped[dict[str, Any]] = mapped_column(default=dict)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    celery_task_id: Mapped[str | None] = mapped_column(String(64), default=None)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)


class ModelArtifact(Base):
    __tablename__ = "model_artifact"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("job.id", ondelete="SET NULL"), default=None)
    role: Mapped[str] = mapped_column(String(16))  # proxy | target
    arch: Mapped[str] = mapped_column(String(64))
    round_index: Mapped[int | None] = mapped_column(Integer, default=None)
    path: Mapped[str] = mapped_column(String(512))  # blob-store key
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CoresetResult(Base):
    """Per-item score and rank of a core-set job; ``ranking`` names whose (proxy, target, ...)."""

    __tablename__ = "coreset_result"
    __table_args__ = (
        UniqueConstraint("job_id", "ranking", "item_id"),
        Index("ix_coreset_result_job_rank", "job_id", "ranking", "rank"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"))
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"))
    ranking: Mapped[str] = mapped_column(String(32), default="proxy")
    score: Mapped[float | None] = mapped_column(Float)  # +inf is stored as None-safe large float
    rank: Mapped[int] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_key"

    id: Mapped[int] = mapped_column(primary_key=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    prefix: Mapped[str] = mapped_column(String(16))  # first characters, to recognise a key in lists
    role: Mapped[str] = mapped_column(String(16))  # admin | annotator
    name: Mapped[str] = mapped_column(String(200))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Prediction(Base):
    """The proxy's predicted class and confidence (max probability) for every pool item, written by
    the ``select_round`` job in the transaction that publishes its round. Only the latest round's
    rows are kept: they are what annotation tools read (Label Studio's pre-annotations and the
    least-confidence order of the items outside the current batch)."""

    __tablename__ = "prediction"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    round_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), primary_key=True)
    class_index: Mapped[int] = mapped_column(Integer)  # index into project.classes
    confidence: Mapped[float] = mapped_column(Float)


class LabelStudioLink(Base):
    """What the last Label Studio ``/setup`` call told the service about the Label Studio project
    connected to this one: its label config, and where (with which token) to fetch task media."""

    __tablename__ = "label_studio_link"

    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"), primary_key=True)
    ls_project: Mapped[str | None] = mapped_column(String(200), default=None)
    hostname: Mapped[str | None] = mapped_column(String(2048), default=None)
    access_token: Mapped[str | None] = mapped_column(Text, default=None)  # never returned by any route
    label_config: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class LabelStudioTask(Base):
    """Label Studio task id -> item. Several tasks may share one item (same content: the import
    deduplicates by content), so the mapping cannot live on ``item.external_id`` alone."""

    __tablename__ = "label_studio_task"
    __table_args__ = (UniqueConstraint("project_id", "task_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id", ondelete="CASCADE"))
    task_id: Mapped[int] = mapped_column(BigInteger)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
