import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.training import schedules


def test_paper_resnet_rates_at_the_boundaries():
    s = schedules.get("paper_resnet")
    assert schedules.total_epochs(s) == 181
    expected = {0: 0.01, 1: 0.1, 90: 0.1, 91: 0.01, 135: 0.01, 136: 0.001, 180: 0.001, 500: 0.001}
    assert {e: schedules.lr_at(s, e) for e in expected} == expected


def test_presets_have_the_papers_lengths_and_shapes():
    assert schedules.get("paper_resnet_proxy") == [(1, 0.01), (45, 0.1), (4, 0.01)]
    assert schedules.total_epochs(schedules.get("paper_resnet_proxy")) == 50
    vdcnn = schedules.get("paper_vdcnn")
    assert schedules.total_epochs(vdcnn) == 15
    rates = [schedules.lr_at(vdcnn, e) for e in range(15)]
    assert rates[0:3] == [0.01] * 3 and rates[3] == pytest.approx(0.005) and rates[14] == pytest.approx(0.01 / 16)
    imagenet = schedules.get("paper_imagenet")
    assert schedules.total_epochs(imagenet) == 100
    warmup = [schedules.lr_at(imagenet, e) for e in range(6)]
    assert warmup == sorted(warmup) and warmup[4] == pytest.approx(0.1) and warmup[0] < 0.1
    assert schedules.PRESET_DEFAULTS["paper_imagenet"]["weight_decay"] == 1e-4
    assert schedules.total_epochs(schedules.get("cpu_small")) < 20


def test_get_returns_a_copy_and_rejects_unknown_names():
    s = schedules.get("cpu_small")
    s.append((100, 1.0))
    assert schedules.total_epochs(schedules.get("cpu_small")) < 20
    with pytest.raises(ValueError, match="unknown schedule 'nope'"):
        schedules.get("nope")


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "non-empty"),
        ([[0, 0.1]], "segment 0: epochs"),
        ([[1, 0.1], [2.5, 0.1]], "segment 1: epochs"),
        ([[1, -0.1]], "segment 0: lr"),
        ([[1, float("nan")]], "segment 0: lr"),
        ([[1, 0.1, 3]], "segment 0 must be a pair"),
        ([[True, 0.1]], "segment 0: epochs"),
    ],
)
def test_validate_names_the_bad_segment(bad, message):
    with pytest.raises(ValueError, match=message):
        schedules.validate(bad)


def test_scale_to_its_own_length_is_the_identity():
    for name in schedules.PRESETS:
        s = schedules.get(name)
        assert schedules.scale(s, schedules.total_epochs(s)) == s


def test_scale_shrinks_proportionally_and_keeps_every_phase():
    scaled = schedules.scale(schedules.get("paper_resnet"), 18)
    assert schedules.total_epochs(scaled) == 18
    assert [lr for _, lr in scaled] == [0.01, 0.1, 0.01, 0.001]
    lengths = [e for e, _ in scaled]
    assert lengths[0] == 1  # the warm-up survives although its exact share is 0.1 epoch
    exact = [e * 18 / 181 for e in (1, 90, 45, 45)]
    assert all(abs(length - share) < 1 for length, share in zip(lengths, exact))


def test_scale_below_the_number_of_segments_keeps_the_longest():
    assert schedules.scale(schedules.get("paper_resnet"), 2) == [(1, 0.1), (1, 0.01)]
    with pytest.raises(ValueError):
        schedules.scale(schedules.get("paper_resnet"), 0)


def test_with_peak_lr_keeps_the_shape():
    s = schedules.with_peak_lr(schedules.get("paper_resnet_proxy"), 0.05)
    assert [e for e, _ in s] == [1, 45, 4]
    assert [lr for _, lr in s] == pytest.approx([0.005, 0.05, 0.005])


segments = st.lists(
    st.tuples(st.integers(1, 200), st.floats(1e-5, 1.0, allow_nan=False)), min_size=1, max_size=8
)


@given(segments, st.integers(1, 400))
def test_scale_always_hits_the_total_and_keeps_rates_in_order(schedule, total):
    scaled = schedules.scale(schedule, total)
    assert schedules.total_epochs(scaled) == total
    assert all(e >= 1 for e, _ in scaled)
    rates = [lr for _, lr in schedule]
    kept = [lr for _, lr in scaled]
    # The kept rates are a subsequence of the original ones (all of them when there is room).
    it = iter(rates)
    assert all(any(math.isclose(r, k) for r in it) for k in kept)
    if total >= len(schedule):
        assert kept == rates
