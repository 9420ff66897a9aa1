"""bench.quality's rows and table: the first evaluation at or below the target, or none."""

import pytest

from bench.quality import build_parser, check_values, first_at_or_below, quality_row, quality_table
from common.cli import UsageError

EVALUATIONS = [{"step": 1, "train_loss": 4.17, "val_loss": 4.17, "train_s": 0.1},
               {"step": 100, "train_loss": 1.6, "val_loss": 1.55, "train_s": 10.0},
               {"step": 200, "train_loss": 1.4, "val_loss": 1.49, "train_s": 20.0},
               {"step": 300, "train_loss": 1.3, "val_loss": 1.51, "train_s": 30.0}]


def test_the_first_evaluation_at_or_below_the_target_counts_not_a_later_one():
    assert first_at_or_below(EVALUATIONS, 1.50)["step"] == 200
    assert first_at_or_below(EVALUATIONS, 1.55)["step"] == 100  # at the target counts
    assert first_at_or_below(EVALUATIONS, 1.0) is None


def test_a_row_has_the_step_and_seconds_at_the_target_and_the_final_and_best_losses():
    row = quality_row("muon", EVALUATIONS, 1.50, 300, wall_s=40.0)
    assert (row["step_at_target"], row["train_s_at_target"]) == (200, 20.0)
    assert (row["final_val_loss"], row["final_train_loss"], row["best_val_loss"]) == (1.51, 1.3, 1.49)
    assert (row["train_s"], row["wall_s"], len(row["evaluations"])) == (30.0, 40.0, 4)


def test_a_run_that_never_reaches_the_target_says_so_in_the_table():
    table = quality_table([quality_row("muon", EVALUATIONS, 1.50, 300, 40.0),
                           quality_row("textbook loop", EVALUATIONS, 1.0, 300, 50.0)])
    lines = table.splitlines()
    assert lines[2].startswith("| muon | 200 | 20 | 1.5100 |")
    assert lines[3].startswith("| textbook loop | not within 300 steps | - |")


@pytest.mark.parametrize("argv, words", [
    (["--target", "nan"], "--target (TARGET= for make) must be a positive finite validation loss, got nan"),
    (["--target", "-1"], "got -1.0"), (["--target", "inf"], "got inf"),
    (["--steps", "0"], "--steps (QUALITY_STEPS= for make) must be at least 1, got 0"),
    (["--eval-iters", "-2"], "--eval-iters must be at least 1, got -2"),
])
def test_a_bad_value_is_named_with_its_make_variable(argv, words):
    with pytest.raises(UsageError) as caught:
        check_values(build_parser().parse_args(argv))
    assert words in str(caught.value)
