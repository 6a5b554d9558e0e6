"""The demo model's training schedule: the learning rate's warmup and cosine, and the step count
that `--steps auto` picks from the measured speed (pure functions of `tools/demo_training_loop.py`)."""

from __future__ import annotations

import math

from tools.demo_training_loop import UNBOUNDED, auto_steps, lr_at


def test_lr_warms_up_linearly_then_falls_on_a_cosine_to_five_percent():
    assert [lr_at(s, 1.0, 4, 20) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, 1.0, 4, 20) == 1.0  # the cosine starts at the peak
    assert math.isclose(lr_at(12, 1.0, 4, 20), 0.05 + 0.95 * 0.5)  # half way down
    assert math.isclose(lr_at(20, 1.0, 4, 20), 0.05) and math.isclose(lr_at(99, 1.0, 4, 20), 0.05)  # the floor


def test_lr_before_auto_steps_chose_a_count_decays_over_the_unbounded_horizon():
    assert lr_at(1000, 2.0, 4, None) == lr_at(1000, 2.0, 4, UNBOUNDED) > 1.99


def test_auto_steps_fill_the_time_left_at_the_measured_speed():
    assert auto_steps(rate=2.0, seconds_left=100.0, warmup=10) == 260 + 200
    assert auto_steps(rate=2.5, seconds_left=100.3, warmup=10) == 510  # whole steps, rounded down


def test_auto_steps_never_end_before_warmup_and_200_steps():
    assert auto_steps(rate=2.0, seconds_left=-50.0, warmup=300) == 500  # the probe alone overran the budget
