"""trainer.schedule.lr_at: linear warm-up to lr, then cosine decay to min_lr, or constant."""

import math

import pytest

from trainer.schedule import lr_at

LR, MIN_LR, WARMUP, TOTAL = 1e-3, 1e-4, 10, 110


def cosine(step: int, warmup: int = WARMUP) -> float:
    return lr_at(step, LR, MIN_LR, warmup, TOTAL, "cosine")


def test_first_step_is_one_warmup_step_of_lr():
    assert cosine(1) == pytest.approx(LR / WARMUP)


def test_warmup_is_linear():
    assert [cosine(s) for s in range(1, WARMUP + 1)] == pytest.approx([LR * s / WARMUP for s in range(1, WARMUP + 1)])


def test_end_of_warmup_is_exactly_lr():
    assert cosine(WARMUP) == LR


def test_last_step_is_min_lr():
    assert cosine(TOTAL) == pytest.approx(MIN_LR)


def test_decay_after_warmup_is_monotone():
    lrs = [cosine(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[0] == LR and lrs[-1] == pytest.approx(MIN_LR)


def test_cosine_midpoint_is_halfway_between_lr_and_min_lr():
    middle = WARMUP + (TOTAL - WARMUP) // 2
    assert cosine(middle) == pytest.approx((LR + MIN_LR) / 2)


def test_steps_past_the_total_stay_at_min_lr():
    assert cosine(TOTAL + 50) == pytest.approx(MIN_LR)


def test_constant_schedule_is_lr_at_every_step_warmup_included():
    assert {lr_at(s, LR, MIN_LR, WARMUP, TOTAL, "constant") for s in range(1, TOTAL + 1)} == {LR}


def test_no_warmup_starts_the_cosine_at_step_one():
    assert cosine(1, warmup=0) == pytest.approx(MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi / TOTAL)))
    assert cosine(1, warmup=0) < LR
    assert cosine(TOTAL // 2, warmup=0) == pytest.approx((LR + MIN_LR) / 2)
    assert cosine(TOTAL, warmup=0) == pytest.approx(MIN_LR)


def test_wsd_holds_lr_then_decays_linearly_to_min_lr_over_the_last_part():
    from trainer.schedule import WSD_DECAY_FRACTION

    lrs = [lr_at(s, LR, MIN_LR, WARMUP, TOTAL, "wsd") for s in range(1, TOTAL + 1)]
    decay_from = TOTAL - round(WSD_DECAY_FRACTION * (TOTAL - WARMUP))
    assert lrs[WARMUP - 1:decay_from] == [LR] * (decay_from - WARMUP + 1)  # stable until the decay starts
    steps = [b - a for a, b in zip(lrs[decay_from:], lrs[decay_from + 1:])]
    assert all(d == pytest.approx(steps[0]) and d < 0 for d in steps)  # then a straight line down
    assert lrs[-1] == pytest.approx(MIN_LR)
