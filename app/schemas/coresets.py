"""Core-set selection jobs (DESIGN.md section 6): the request, the job summary, rankings, subsets.

A core-set job ranks every labeled pool item of a project with a proxy trained once over all of
them; each requested subset is the top ``size`` items of that one ranking, so the subsets of one
job are nested (the 30% subset is a prefix of the 50% one).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, StrictFloat, StrictInt, field_validator, model_validator

from app.schemas.common import ReadModel, RequestModel
from app.schemas.projects import MAX_INT32, ModelSpec

CoresetMethod = Literal["forgetting_events", "entropy", "kcenters", "random"]
RankingName = Literal["proxy", "target"]

# The paper seeds greedy k-centers with 1,000 random points (2% of CIFAR10's 50,000).
PAPER_KCENTERS_INITIAL = 1000
MAX_SUBSETS = 100


def _check_fraction(value: float) -> float:
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError("a fraction must lie strictly between 0 and 1; give an item count in 'sizes' instead")
    return value


def _model_spec_shorthand(value: Any) -> Any:
    # "proxy": "mlp" is accepted as {"arch": "mlp"}, as in project settings.
    return {"arch": value} if isinstance(value, str) else value


Fraction = Annotated[StrictFloat, AfterValidator(_check_fraction)]
Size = Annotated[StrictInt, Field(ge=1, le=MAX_INT32)]


class CoresetCreate(RequestModel):
    """What to rank with, which subsets to keep, and whether to train the target on them."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "method": "forgetting_events",
                    "proxy": {"arch": "preact20", "epochs": 50, "schedule": "paper_resnet_proxy"},
                    "fractions": [0.3, 0.5, 0.7],
                    "seed": 0,
                    "train_target": True,
                    "full_data": True,
                },
                {"method": "kcenters", "sizes": [5000, 10000], "kcenters_initial": 1000},
            ]
        },
    )

    method: CoresetMethod = Field(
        description="forgetting_events (most forgotten first, never learned = +inf first), entropy (of the "
        "proxy's predictions, highest first), kcenters (greedy k-centers on penultimate features after a "
        "seeded random start set) or random (a seeded permutation)."
    )
    proxy: ModelSpec | None = Field(
        None, description="The proxy trained once over all labeled pool items. Default: the project's proxy."
    )
    fractions: list[Fraction] = Field(
        default_factory=list, max_length=MAX_SUBSETS,
        description="Subset sizes as fractions of the labeled pool, each in (0, 1).",
    )
    sizes: list[Size] = Field(
        default_factory=list, max_length=MAX_SUBSETS,
        description="Subset sizes as item counts, each at most the number of labeled pool items.",
    )
    seed: int | None = Field(None, ge=0, le=MAX_INT32, description="Default: the project's seed.")
    kcenters_initial: int | None = Field(
        None, ge=1, le=MAX_INT32,
        description="kcenters only: size of the seeded random start set. Default: 1,000 as in the paper, "
        "but at most 2% of the labeled pool (rounded up).",
    )
    train_target: bool = Field(False, description="Train the target on every subset and report its test accuracy.")
    target: ModelSpec | None = Field(None, description="Target override. Default: the project's target.")
    random_baseline: bool | None = Field(
        None, description="With train_target: also train it on a seeded random subset of each size (default on)."
    )
    full_data: bool = Field(
        False, description="With train_target: also train it on all labeled pool items (needed for the "
        "end-to-end speed-up and for the target's own ranking).",
    )

    _shorthand = field_validator("proxy", "target", mode="before")(_model_spec_shorthand)

    @model_validator(mode="after")
    def _consistent(self) -> CoresetCreate:
        if not self.fractions and not self.sizes:
            raise ValueError("give at least one subset in 'fractions' or 'sizes'")
        if not self.train_target:
            needs = [name for name in ("full_data", "random_baseline", "target") if getattr(self, name)]
            if needs:
                raise ValueError(f"{', '.join(needs)} only apply with train_target: true")
        return self


class TrainedTarget(ReadModel):
    """The target trained on one set of items, evaluated on the project's test split."""

    size: int = Field(description="Items it was trained on.")
    accuracy: float | None = Field(None, description="Test accuracy.")
    loss: float | None = Field(None, description="Mean test cross-entropy.")
    train_s: float = Field(description="Training time in seconds.")


class SelectionTimings(ReadModel):
    train_s: float = Field(description="Training the proxy over all labeled pool items.")
    inference_s: float = Field(description="Scoring / embedding the items with the proxy.")
    ranking_s: float = Field(description="Ranking them (forgetting order, entropy order, greedy k-centers).")
    total_s: float = Field(description="The paper's data selection runtime: the three above.")


class CoresetSubset(ReadModel):
    index: int = Field(description="Position in this job's subsets (ascending size); use it in the subset URL.")
    fraction: float | None = Field(description="The requested fraction, or null when requested as a size.")
    size: int
    target: TrainedTarget | None = Field(None, description="The target trained on this subset.")
    random: TrainedTarget | None = Field(None, description="The target trained on a random subset of this size.")
    end_to_end_s: float | None = Field(
        None, description="Data selection runtime + training the target on this subset."
    )
    speedup: float | None = Field(
        None, description="Training the target on the full data / end_to_end_s (needs full_data)."
    )
    url: str


class CoresetRead(ReadModel):
    job_id: int
    project_id: int
    status: str = Field(description="The job's status: queued, running, succeeded, failed or cancelled.")
    progress: dict[str, Any]
    error: str | None
    method: str
    seed: int
    proxy: dict[str, Any] | None = Field(description="The proxy spec (null for random, which trains none).")
    target: dict[str, Any] | None = Field(description="The target spec, when the target is trained.")
    labeled: int = Field(description="Labeled pool items ranked (at request time until the job has run).")
    subsets: list[CoresetSubset]
    selection: SelectionTimings | None = None
    proxy_metrics: dict[str, Any] = Field(default_factory=dict, description="Proxy test accuracy and loss.")
    full: TrainedTarget | None = Field(None, description="The target trained on all labeled pool items.")
    rankings: list[str] = Field(default_factory=list, description="Rankings stored: proxy, and target if any.")
    spearman_proxy_target: float | None = Field(
        None, description="Spearman rank correlation of the proxy's and the target's rankings."
    )
    notes: list[str] = Field(default_factory=list)
    params: dict[str, Any]
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RankedItem(ReadModel):
    rank: int = Field(description="0 is the first item kept.")
    item_id: int
    external_id: str
    label: str | None
    score: float | None = Field(
        description="The method's score: forgetting events, entropy, or k-centers distance at pick time; "
        "null for +inf (see 'infinite') and where the method has none (random, k-centers start set)."
    )
    infinite: bool = Field(description="The score is +inf: with forgetting events, an item never learned.")


class RankingPage(ReadModel):
    job_id: int
    ranking: str
    total: int = Field(description="Items in the ranking (or the subset).")
    offset: int
    items: list[RankedItem]
    next_offset: int | None


class SubsetPage(RankingPage):
    index: int
    fraction: float | None
    size: int


class RankingRef(ReadModel):
    job_id: int
    ranking: str
    method: str


class RankingComparison(ReadModel):
    a: RankingRef
    b: RankingRef
    items: int = Field(description="Items ranked by both.")
    spearman: float | None = Field(description="Spearman's rho; null when undefined (a constant ranking).")
    basis: Literal["scores", "ranks"] = Field(
        description="scores: both methods rank by a score (forgetting events, entropy), ties share their "
        "average rank; ranks: the stored positions."
    )
