"""The schedule arithmetic: fractions vs counts, rounding, the repeating last round, the budget cap."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from app.services.schedule import DEFAULT_SCHEDULE, budget_count, resolve_count, round_size


def test_fractions_round_half_up_and_never_below_one():
    assert resolve_count(0.02, 50_000) == 1_000
    assert resolve_count(0.1, 45) == 5  # 4.5 rounds up, despite 0.1 not being exact in binary
    assert resolve_count(0.1, 44) == 4  # 4.4 rounds down
    assert resolve_count(0.02, 10) == 1  # 0.2 would round to 0; a round is never empty
    assert resolve_count(1.0, 37) == 37


def test_counts_are_absolute_and_capped_at_the_pool():
    assert resolve_count(1, 100) == 1  # int 1 is one item, float 1.0 is the whole pool
    assert resolve_count(250, 100) == 100
    assert resolve_count(7, 0) == 0
    assert resolve_count(0.5, 0) == 0


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, -0.1, True, "0.1", None])
def test_bad_values_raise(bad):
    with pytest.raises((ValueError, TypeError)):
        resolve_count(bad, 100)


def test_paper_schedule_on_cifar_sized_pool():
    pool = 50_000
    assert budget_count(DEFAULT_SCHEDULE, pool) == 25_000
    sizes, labeled, k = [], 0, 0
    while (size := round_size(DEFAULT_SCHEDULE, round_index=k, pool_size=pool, labeled=labeled)) > 0:
        sizes.append(size)
        labeled += size
        k += 1
    # 2% initial, 8% in round 1, then 10% repeating, stopping exactly at 50% of the pool.
    assert sizes == [1_000, 4_000, 5_000, 5_000, 5_000, 5_000]
    assert labeled == 25_000


def test_last_round_is_truncated_to_the_budget():
    schedule = {"initial": 10, "rounds": [30], "budget": 75}
    assert round_size(schedule, round_index=0, pool_size=1000, labeled=0) == 10
    assert round_size(schedule, round_index=1, pool_size=1000, labeled=10) == 30
    assert round_size(schedule, round_index=2, pool_size=1000, labeled=40) == 30
    assert round_size(schedule, round_index=3, pool_size=1000, labeled=70) == 5
    assert round_size(schedule, round_index=4, pool_size=1000, labeled=75) == 0
    assert round_size(schedule, round_index=4, pool_size=1000, labeled=80) == 0  # over budget: still 0


def test_accepts_a_model_with_model_dump():
    class Sched:
        def model_dump(self):
            return {"initial": 0.5, "rounds": [0.25], "budget": 1.0}

    assert round_size(Sched(), round_index=0, pool_size=8, labeled=0) == 4
    assert round_size(Sched(), round_index=5, pool_size=8, labeled=6) == 2
    assert budget_count(Sched(), 8) == 8


value = st.one_of(st.integers(1, 5_000), st.floats(1e-4, 1.0, allow_nan=False))


@given(
    initial=value,
    rounds=st.lists(value, min_size=1, max_size=4),
    budget=value,
    pool=st.integers(1, 20_000),
)
def test_running_the_schedule_reaches_the_budget_exactly(initial, rounds, budget, pool):
    schedule = {"initial": initial, "rounds": rounds, "budget": budget}
    target = budget_count(schedule, pool)
    assert 1 <= target <= pool
    labeled, k = 0, 0
    while True:
        size = round_size(schedule, round_index=k, pool_size=pool, labeled=labeled)
        assert 0 <= size <= target - labeled
        if size == 0:
            break
        labeled += size
        k += 1
        assert k <= pool  # every non-final round adds >= 1 item, so this terminates
    assert labeled == target
