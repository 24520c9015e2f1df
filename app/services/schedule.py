"""Pure arithmetic of a project's labeling schedule (DESIGN.md section 5).

A schedule is ``{"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}``: each value is either a
fraction of the pool (a float in (0, 1]) or an absolute item count (an int >= 1). ``rounds`` gives the
sizes of rounds 1, 2, ...; its last entry repeats for every later round. ``budget`` is the number of
labeled pool items at which selection stops and the target model is trained.

No database, no HTTP: the labels/queries services and the workers call these with numbers they read.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

DEFAULT_SCHEDULE: dict[str, Any] = {"initial": 0.02, "rounds": [0.08, 0.10], "budget": 0.5}


def _as_mapping(schedule: Any) -> Mapping[str, Any]:
    # Accept the stored JSON dict or the pydantic model it was validated with.
    if isinstance(schedule, Mapping):
        return schedule
    if hasattr(schedule, "model_dump"):
        return schedule.model_dump()
    raise TypeError(f"schedule must be a mapping, not {type(schedule).__name__}")


def resolve_count(value: int | float, pool_size: int) -> int:
    """Number of items that ``value`` stands for in a pool of ``pool_size`` items.

    Floats are fractions of the pool, rounded half up to the nearest item and never below 1 (a
    non-empty pool always gets a non-empty round). Ints are absolute counts. Either way the result
    is capped at the pool size, and an empty pool gives 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"schedule value must be an int or a float, not {value!r}")
    if pool_size <= 0:
        return 0
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"an item count must be >= 1, got {value}")
        return min(value, pool_size)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"a fraction of the pool must be in (0, 1], got {value}")
    # Decimal of the float's shortest repr, so 0.1 * 45 is exactly 4.5 (rounds to 5), not 4.4999...
    count = int((Decimal(repr(value)) * pool_size).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return min(max(count, 1), pool_size)


def budget_count(schedule: Any, pool_size: int) -> int:
    """The labeling budget as a number of labeled pool items."""
    return resolve_count(_as_mapping(schedule)["budget"], pool_size)


def nominal_round_size(schedule: Any, *, round_index: int, pool_size: int) -> int:
    """Size the schedule asks for in round ``round_index``, before the budget cap."""
    if round_index < 0:
        raise ValueError(f"round index must be >= 0, got {round_index}")
    sched = _as_mapping(schedule)
    rounds = list(sched.get("rounds") or [])
    if round_index == 0 or not rounds:
        value = sched["initial"]
    else:
        value = rounds[min(round_index, len(rounds)) - 1]  # the last entry repeats
    return resolve_count(value, pool_size)


def round_size(schedule: Any, *, round_index: int, pool_size: int, labeled: int) -> int:
    """Number of items to select in round ``round_index`` given ``labeled`` labeled pool items.

    Round 0 is the initial random sample; round k >= 1 uses ``rounds[k - 1]`` (the last repeating).
    Never more than ``budget - labeled`` nor than the unlabeled pool; 0 once the budget is reached.
    """
    nominal = nominal_round_size(schedule, round_index=round_index, pool_size=pool_size)
    remaining = min(budget_count(schedule, pool_size), pool_size) - max(labeled, 0)
    return max(0, min(nominal, remaining))
