"""bench.run: the order each round times the rows in."""

from bench.run import measuring_order

RUNS = [("textbook", None, "fp32", 1), ("ddp", "muon", "bf16", 1), ("ddp", "muon", "bf16", 2),
        ("ddp", "muon", "fp32", 1), ("ddp", "adamw", "bf16", 1), ("ddp", "adamw", "bf16", 2)]


def test_each_adamw_row_runs_beside_its_default_recipe_row_first_after_it_then_before_it():
    textbook, muon1, muon2, fp32, adamw1, adamw2 = RUNS
    assert measuring_order(RUNS, "muon", 1) == [textbook, muon1, adamw1, muon2, adamw2, fp32]
    assert measuring_order(RUNS, "muon", 2) == [textbook, adamw1, muon1, adamw2, muon2, fp32]
    assert measuring_order(RUNS, "muon", 3) == measuring_order(RUNS, "muon", 1)


def test_every_row_is_timed_once_a_round_when_the_default_recipe_has_no_partner():
    runs = [("textbook", None, "fp32", 1), ("ddp", "adamw", "bf16", 1), ("ddp", "adamw", "fp32", 1)]
    assert measuring_order(runs, "adamw", 1) == runs
    assert measuring_order(runs, "adamw", 2) == runs
