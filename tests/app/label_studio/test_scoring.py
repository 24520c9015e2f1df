"""The score encoding: ascending score (what Label Studio's Uncertainty sampling serves first) is
the service's order: the batch by rank, then least confidence, then unscored items, labeled last."""

from __future__ import annotations

import random

from app.services.label_studio.scoring import band_score, seeded_uniform


def score(item_id=1, *, labeled=False, rank=None, size=10, confidence=None, seed=0):
    return band_score(item_id=item_id, seed=seed, labeled=labeled, rank=rank, round_size=size, confidence=confidence)


def test_sorting_by_score_gives_batch_then_least_confident_then_unscored_then_labeled():
    rng = random.Random(3)
    items = []  # (expected position key, score)
    for item_id in range(1, 301):
        kind = rng.choice(["query", "proxy", "unscored", "labeled"])
        if kind == "query":
            rank = rng.randrange(50)
            items.append(((0, rank, item_id), score(item_id, rank=rank, size=50, confidence=rng.random())))
        elif kind == "proxy":
            confidence = rng.choice([0.34, 0.5, 0.5, 0.99, rng.uniform(1 / 3, 1.0)])
            items.append(((1, confidence, item_id), score(item_id, confidence=confidence)))
        elif kind == "unscored":
            items.append(((2, 0, 0), score(item_id)))
        else:
            items.append(((3, 0, 0), score(item_id, labeled=True, rank=0, confidence=0.4)))
    by_score = sorted(items, key=lambda pair: pair[1])
    # Each band keeps its place; within the first two, rank and confidence (ties: lower id) decide.
    assert [key[0] for key, _ in by_score] == sorted(key[0] for key, _ in items)
    ordered = [key for key, _ in by_score if key[0] < 2]
    assert ordered == sorted(ordered)
    assert all(0.0 <= s <= 1.0 for _, s in items)


def test_extremes_stay_inside_their_bands():
    assert score(rank=49, size=50) < score(confidence=0.0) < score(confidence=1.0, item_id=2**31 - 1)
    assert score(confidence=1.0, item_id=2**31 - 1) < min(score(item_id=i) for i in range(1, 2000))
    assert max(score(item_id=i) for i in range(1, 2000)) < score(labeled=True)


def test_unscored_order_is_a_seeded_random_order_that_does_not_depend_on_the_pool():
    a = sorted(range(1, 200), key=lambda i: seeded_uniform(7, i))
    assert a == sorted(range(1, 200), key=lambda i: seeded_uniform(7, i))  # stable
    assert a != sorted(range(1, 200))  # shuffled
    assert a != sorted(range(1, 200), key=lambda i: seeded_uniform(8, i))  # the seed matters
    # Adding items does not reorder the existing ones.
    bigger = [i for i in sorted(range(1, 400), key=lambda i: seeded_uniform(7, i)) if i < 200]
    assert bigger == a
