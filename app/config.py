"""Service settings, read from the environment (prefix ``SVP_``) and an optional ``.env`` file.

One module-level instance, ``settings``; tests and the CLI build their own with ``Settings(...)``
and pass it to ``app.main.create_app``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SVP_", env_file=".env", extra="ignore")

    # Storage. The defaults are the embedded mode: one SQLite file and a local blob folder.
    data_dir: Path = Field(Path("svp-data"), description="Root folder for the SQLite file, blobs and caches.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL. Default: sqlite:///<data_dir>/svp.db (embedded mode)."
    )
    blob_dir: Path | None = Field(None, description="Blob store folder. Default: <data_dir>/blobs.")

    # Jobs. No broker means embedded mode: the same task code runs in-process in the background.
    broker_url: str | None = Field(None, description="Celery broker URL, e.g. redis://127.0.0.1:6379/0.")
    gpu_queue: str = Field("gpu", description="Celery queue the training tasks are routed to.")
    job_heartbeat_s: float = Field(10.0, gt=0, description="How often a running job records that it is alive.")
    job_stale_s: float = Field(
        60.0, gt=0, description="A running job whose heartbeat is older than this is taken as dead and re-queued."
    )
    requeue_queued_after_s: float = Field(
        300.0, gt=0, description="A queued job not started after this long is sent again (its message may be lost)."
    )
    reconcile_interval_s: float = Field(30.0, gt=0, description="How often a worker runs the job reconciler.")
    device: str | None = Field(None, description="Torch device for workers (cuda, cuda:1, cpu). Default: automatic.")
    torch_threads: int | None = Field(
        None, ge=1, description="CPU threads per worker process for torch (e.g. cores / workers). Default: torch's."
    )

    # Annotation.
    lease_seconds: int = Field(600, ge=1, description="How long a query lease lasts by default.")
    retry_after_seconds: int = Field(5, ge=1, description="Retry-After sent while no round is ready.")

    # Authentication.
    auth_cache_seconds: float = Field(
        5.0,
        ge=0,
        description="How long an api process reuses an API-key lookup. A key revoked through this process stops "
        "at once; one revoked elsewhere (another api process or replica) may work here this much longer. 0: no cache.",
    )

    # Limits on input.
    max_item_bytes: int = Field(10 * 1024 * 1024, description="Largest single item (image file or text).")
    max_upload_bytes: int = Field(2 * 1024 * 1024 * 1024, description="Largest upload (zip, npz, jsonl).")
    max_image_pixels: int = Field(64 * 1024 * 1024, description="Largest decoded image, in pixels.")

    log_level: str = Field("INFO", description="Logging level of the api and the workers (DEBUG, INFO, WARNING, ...).")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log line format: text for people, json for log collectors (one object per line)."
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'svp.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def resolved_cache_dir(self) -> Path:
        return (self.data_dir / "cache").resolve()

    @property
    def embedded(self) -> bool:
        return not self.broker_url


settings = Settings()
