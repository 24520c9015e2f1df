import inspect

import numpy as np
import torch

from worker.training.callbacks import ForgettingTracker, ProgressThrottle


def _feed(tracker, batches):
    for indices, correct in batches:
        tracker.update(torch.tensor(indices), torch.tensor(correct))


def test_forgetting_counts_on_a_hand_worked_sequence():
    tracker = ForgettingTracker(6, "cpu")
    _feed(tracker, [
        ([0, 1, 2, 4], [True, False, True, True]),
        ([3, 0, 4], [False, False, True]),       # 0: correct -> incorrect (1)
        ([0, 2, 1, 4], [True, False, False, True]),  # 0 relearned; 2 forgotten (1); 1 still never
        ([0, 3, 4], [False, False, True]),        # 0 forgotten again (2)
        ([2], [True]),                            # 2 relearned: learning is not an event
    ])
    counts = tracker.counts()
    assert counts.dtype == np.float64
    # 0: learned, forgotten, relearned, forgotten = 2; 1 and 3 never correct = inf; 2: one event;
    # 4: always correct = 0; 5: never presented = inf (it was never predicted correctly).
    assert counts.tolist() == [2.0, np.inf, 1.0, np.inf, 0.0, np.inf]
    assert tracker.presentations.tolist() == [4, 2, 3, 2, 4, 0]


def test_incorrect_then_correct_is_not_an_event_and_first_presentation_never_is():
    tracker = ForgettingTracker(2)
    _feed(tracker, [([0, 1], [False, True]), ([0, 1], [True, True])])
    assert tracker.counts().tolist() == [0.0, 0.0]


def test_state_stays_on_the_tracker_device_as_tensors():
    tracker = ForgettingTracker(3, torch.device("cpu"))
    _feed(tracker, [([2, 0], [True, True]), ([2], [False])])
    assert tracker.events.device.type == "cpu" and tracker.events.tolist() == [0, 0, 1]
    assert tracker.ever_correct.tolist() == [True, False, True]


def test_progress_throttle_lets_one_report_through_per_interval():
    now = [0.0]
    throttle = ProgressThrottle(2.0, clock=lambda: now[0])
    seen = []
    report = throttle.wrap(lambda epoch, step, loss, accuracy: seen.append((epoch, step)))
    for t, step in [(0.0, 1), (0.5, 2), (1.9, 3), (2.0, 4), (3.0, 5), (4.5, 6)]:
        now[0] = t
        report(0, step, 1.0, 0.5)
    assert seen == [(0, 1), (0, 4), (0, 6)]
    now[0] = 4.6
    assert not throttle.ready() and throttle.ready(force=True)
    # The wrapper shows the wrapped function's signature (the loop looks for keyword parameters).
    assert list(inspect.signature(report).parameters) == ["epoch", "step", "loss", "accuracy"]
