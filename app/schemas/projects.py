"""Project settings: model specs, strategy, labeling schedule; create / update / read models."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictFloat,
    StrictInt,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.schemas.common import ReadModel, RequestModel
from app.schemas.specs import (
    ARCHITECTURES,
    DEFAULT_PROXY_ARCH,
    DEFAULT_STRATEGY,
    DEFAULT_TARGET_ARCH,
    SCHEDULE_PRESETS,
)

Modality = Literal["image", "text"]
Strategy = Literal["least_confidence", "margin", "entropy", "kcenters", "random"]
Augment = Literal["auto", "none", "flip", "crop_flip"]

# Project.seed and lease_seconds are 32-bit integer columns.
MAX_INT32 = 2**31 - 1
MAX_LEASE_SECONDS = 7 * 24 * 3600
MAX_CLASSES = 10_000
MAX_LABEL_LENGTH = 200  # item.label is String(200)


def _check_schedule_value(value: int | float) -> int | float:
    # Strict types: 1 is one item, 1.0 is the whole pool, so the JSON spelling matters.
    if isinstance(value, int):
        if value < 1:
            raise ValueError("an item count must be an integer >= 1")
    elif not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError("a fraction of the pool must be a number in (0, 1]; write an integer for an item count")
    return value


ScheduleValue = Annotated[StrictInt | StrictFloat, AfterValidator(_check_schedule_value)]


def _check_segment(segment: tuple[int, float]) -> tuple[int, float]:
    epochs, lr = segment
    if epochs < 1:
        raise ValueError("a schedule segment's epochs must be >= 1")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError("a schedule segment's learning rate must be a positive number")
    return segment


Segment = Annotated[tuple[StrictInt, float], AfterValidator(_check_segment)]

# A training schedule is a preset name or a list of segments; the discriminator keeps a bad list's
# errors from being buried under "should be a valid string".
TrainingSchedule = Annotated[
    Annotated[str, Tag("preset")] | Annotated[list[Segment], Field(min_length=1, max_length=100), Tag("segments")],
    Discriminator(lambda value: "preset" if isinstance(value, str) else "segments"),
]


class ModelSpec(RequestModel):
    """How to build and train one model (the proxy or the target)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"arch": "preact20", "schedule": "paper_resnet_proxy", "batch_size": 128},
                {"arch": "preact164", "epochs": 30, "schedule": [[1, 0.01], [20, 0.1], [9, 0.01]]},
            ]
        },
    )

    arch: str = Field(min_length=1, max_length=64, description="Architecture name; see the modality's list.")
    epochs: int | None = Field(None, ge=1, le=10_000, description="Total epochs; a named schedule is scaled to it.")
    schedule: TrainingSchedule | None = Field(
        None,
        description=f"Preset name ({', '.join(SCHEDULE_PRESETS)}) or [[epochs, lr], ...] piecewise-constant "
        "segments. Default: the architecture's own.",
    )
    batch_size: int = Field(128, ge=1, le=65_536)
    lr: float | None = Field(None, gt=0, le=100, allow_inf_nan=False)
    momentum: float | None = Field(None, ge=0, lt=1)
    weight_decay: float | None = Field(None, ge=0, le=1)
    augment: Augment = "auto"
    extra: dict[str, Any] = Field(default_factory=dict, description="Architecture-specific options.")

    @field_validator("schedule")
    @classmethod
    def _known_preset(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in SCHEDULE_PRESETS:
            raise ValueError(f"unknown schedule preset {value!r}; expected one of {', '.join(SCHEDULE_PRESETS)}")
        return value


class ScheduleSpec(RequestModel):
    """Labeling schedule. Floats are fractions of the pool, ints are item counts."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}]},
    )

    initial: ScheduleValue = Field(0.02, description="Size of round 0, the initial uniform random sample.")
    rounds: list[ScheduleValue] = Field(
        default_factory=lambda: [0.08, 0.10],
        min_length=1,
        max_length=1_000,
        description="Sizes of rounds 1, 2, ...; the last entry repeats.",
    )
    budget: ScheduleValue = Field(0.5, description="Labeled pool items at which the target model is trained.")


def _check_classes(classes: list[str]) -> list[str]:
    for name in classes:
        if not name.strip():
            raise ValueError("class names must be non-empty")
    seen: set[str] = set()
    duplicates = sorted({name for name in classes if name in seen or seen.add(name)})
    if duplicates:
        raise ValueError(f"class names must be unique; repeated: {', '.join(map(repr, duplicates))}")
    return classes


Classes = Annotated[
    list[Annotated[str, Field(max_length=MAX_LABEL_LENGTH)]],
    Field(min_length=2, max_length=MAX_CLASSES),
    AfterValidator(_check_classes),
]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"\S")]


def _model_spec_shorthand(value: Any) -> Any:
    # "proxy": "preact20" is accepted as {"arch": "preact20"}.
    return {"arch": value} if isinstance(value, str) else value


class ProjectCreate(RequestModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "cifar10-svp",
                    "modality": "image",
                    "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
                    "proxy": {"arch": "preact20", "schedule": "paper_resnet_proxy"},
                    "target": {"arch": "preact164"},
                    "strategy": "least_confidence",
                    "schedule": {"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5},
                    "seed": 0,
                },
                {"name": "reviews", "modality": "text", "classes": ["negative", "positive"]},
            ]
        },
    )

    name: Name
    modality: Modality
    classes: Classes = Field(description="Ordered class names; a class's position is its label id.")
    proxy: ModelSpec | None = Field(
        None, validate_default=True, description="Selection model. Default: preact20 (image), fasttext (text)."
    )
    target: ModelSpec | None = Field(
        None, validate_default=True, description="Final model. Default: preact164 (image), vdcnn29 (text)."
    )
    strategy: Strategy = DEFAULT_STRATEGY
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    seed: int = Field(0, ge=0, le=MAX_INT32)
    lease_seconds: int | None = Field(
        None, ge=1, le=MAX_LEASE_SECONDS, description="Query lease length; default: the service setting."
    )
    meta: dict[str, Any] = Field(default_factory=dict)

    _shorthand = field_validator("proxy", "target", mode="before")(_model_spec_shorthand)

    @field_validator("proxy", "target", mode="after")
    @classmethod
    def _architecture_fits_modality(cls, spec: ModelSpec | None, info: ValidationInfo) -> ModelSpec | None:
        # A field validator (not a model one) so an error's loc names the field; modality is
        # declared earlier, so it is already in info.data unless it was itself invalid.
        modality = info.data.get("modality")
        if modality is None:
            return spec
        if spec is None:
            defaults = DEFAULT_PROXY_ARCH if info.field_name == "proxy" else DEFAULT_TARGET_ARCH
            return ModelSpec(arch=defaults[modality])
        known = ARCHITECTURES[modality]
        if spec.arch not in known:
            raise ValueError(
                f"{spec.arch!r} is not an architecture for {modality} projects; expected one of {', '.join(known)}"
            )
        return spec


class ProjectUpdate(RequestModel):
    """Partial update of a draft project; the merged settings are validated as a whole.

    ``proxy`` / ``target`` set to null go back to the modality's default; ``lease_seconds`` null
    goes back to the service setting. Other fields cannot be null.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"strategy": "entropy", "schedule": {"initial": 100, "rounds": [500], "budget": 2000}}]},
    )

    name: Name | None = None
    modality: Modality | None = None
    classes: Classes | None = None
    proxy: ModelSpec | None = None
    target: ModelSpec | None = None
    strategy: Strategy | None = None
    schedule: ScheduleSpec | None = None
    seed: int | None = Field(None, ge=0, le=MAX_INT32)
    lease_seconds: int | None = Field(None, ge=1, le=MAX_LEASE_SECONDS)
    meta: dict[str, Any] | None = None

    _shorthand = field_validator("proxy", "target", mode="before")(_model_spec_shorthand)

    @model_validator(mode="after")
    def _no_null_where_meaningless(self) -> ProjectUpdate:
        nullable = {"proxy", "target", "lease_seconds"}
        nulls = sorted(f for f in self.model_fields_set - nullable if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"cannot be null: {', '.join(nulls)}")
        return self


class ProjectCounts(ReadModel):
    pool: int = Field(description="Pool items.")
    labeled: int = Field(description="Pool items with a label.")
    unlabeled: int = Field(description="Pool items without a label.")
    test: int = Field(description="Test-split items (labeled ground truth).")


class ProjectRead(ReadModel):
    id: int
    name: str
    modality: Modality
    classes: list[str]
    proxy: ModelSpec
    target: ModelSpec
    strategy: Strategy
    schedule: ScheduleSpec
    seed: int
    lease_seconds: int | None
    status: str = Field(description="draft, active, training_target, completed or failed.")
    current_round: int | None
    counts: ProjectCounts
    budget: int = Field(description="The labeling budget resolved to a number of labeled pool items.")
    meta: dict[str, Any]
    created_at: datetime
    updated_at: datetime
