"""bench.report: the bench's rows and the tables printed from them."""

import pytest

from bench.report import fastest_row, format_table, generation_table, recipe_ratios, training_row, training_table
from bench.timing import fastest_round

MEASURED = {"steps_per_s": 4.0, "threads_per_rank": 1, "ms_per_step": 250.0, "steps_per_s_by_round": [3.5, 4.0]}


def row(steps_per_s: float = 4.0, eta_steps: int = 3000, recipe: str = "muon", nproc: int = 2) -> dict:
    return training_row("ddp", recipe, "bf16", nproc, {**MEASURED, "steps_per_s": steps_per_s}, tokens_per_step=4096,
                        flops_per_step=10 ** 9, peak_gflops=100.0, baseline_steps_per_s=2.0, eta_steps=eta_steps)


def test_format_table_aligns_columns_first_left_others_right():
    table = format_table(["name", "n"], [["a", 1], ["long name", 1234]])
    assert table.splitlines() == [
        "name          n",
        "---------  ----",
        "a             1",
        "long name  1234",
    ]


def test_format_table_lines_have_one_length_and_a_dashes_line_under_the_header():
    header = ["run", "steps/s", "MFU"]
    lines = format_table(header, [["textbook", "1.25", "3.0%"], ["ddp", "12.50", "30.1%"]]).splitlines()
    assert len({len(line) for line in lines}) == 1
    assert set(lines[1]) == {"-", " "} and lines[1].split() == ["-" * len("textbook"), "-" * len("steps/s"), "-----"]
    assert lines[2].startswith("textbook  ") and lines[3].startswith("ddp       ")
    assert lines[2].endswith(" 3.0%") and lines[3].endswith("30.1%")


def test_training_row_derives_speedup_tokens_eta_and_mfu():
    r = row()
    assert (r["run"], r["recipe"], r["dtype"], r["nproc"], r["threads_per_rank"], r["ms_per_step"]) == (
        "ddp", "muon", "bf16", 2, 1, 250.0)
    assert r["speedup_vs_textbook"] == pytest.approx(4.0 / 2.0)
    assert r["tokens_per_s"] == pytest.approx(4.0 * 4096)
    assert r["eta_s"] == pytest.approx(3000 / 4.0)
    assert r["mfu"] == pytest.approx(10 ** 9 * 4.0 / (100.0 * 1e9))


def test_training_table_prints_the_row():
    lines = training_table([row()], eta_steps=3000).splitlines()
    assert lines[0].split()[-2:] == ["3000-step", "ETA"]
    assert lines[2].split() == ["ddp", "muon", "bf16", "2", "1", "4.00", "3.50", "4.00", "16,384", "250", "4.0%",
                                "2.00x", "12", "min"]


@pytest.mark.parametrize("eta_s, shown", [(3900, "1 h 05 min"), (3599, "1 h 00 min"), (7260, "2 h 01 min"),
                                          (600, "10 min"), (100, "2 min")])
def test_training_table_eta_in_hours_and_minutes(eta_s, shown):
    steps_per_s = 3000 / eta_s
    assert training_table([row(steps_per_s)], eta_steps=3000).splitlines()[2].endswith("  " + shown)


def test_recipe_ratios_pair_the_rows_of_one_nproc_and_skip_an_nproc_only_one_recipe_ran():
    rows = [row(3.0, recipe="muon", nproc=1), row(4.0, recipe="adamw", nproc=1), row(2.0, recipe="muon", nproc=2),
            row(2.5, recipe="adamw", nproc=4), {**row(1.0, recipe="adamw", nproc=2), "dtype": "fp32"}]
    rows = [{**r, "steps_per_s_by_round": [r["steps_per_s"]]} for r in rows]
    assert recipe_ratios(rows, "muon", "adamw", "bf16") == [{"nproc": 1, "dtype": "bf16", "ratio": 0.75,
                                                             "ratio_by_round": [0.75]}]


def test_recipe_ratio_is_the_median_of_the_rounds_ratios_not_the_fastest_rounds_ratio():
    # Round 3 caught the adamw row alone in a fast spell: the fastest rounds' ratio would be 0.6.
    muon = {**row(3.0, recipe="muon", nproc=1), "steps_per_s_by_round": [2.7, 3.0, 2.9]}
    adamw = {**row(5.0, recipe="adamw", nproc=1), "steps_per_s_by_round": [3.0, 3.0, 5.0]}
    [ratio] = recipe_ratios([muon, adamw], "muon", "adamw", "bf16")
    assert ratio["ratio_by_round"] == pytest.approx([0.9, 1.0, 0.58])
    assert ratio["ratio"] == pytest.approx(0.9)


def test_fastest_row_is_the_most_steps_per_s_of_its_recipe_and_dtype():
    rows = [row(3.0, nproc=1), row(4.0, nproc=2), row(9.0, recipe="adamw", nproc=4),
            {**row(8.0, nproc=4), "dtype": "fp32"}]
    assert fastest_row(rows, "muon", "bf16") is rows[1]
    assert fastest_row(rows, "muon", "fp32") is rows[3]


def test_generation_table_shows_an_unmeasured_format_with_its_reason():
    lines = generation_table([
        {"format": "onnx", "runtime": "onnxruntime", "tokens_per_s": 812.4, "ms_per_token": 1.2309},
        {"format": "ts", "runtime": "libtorch", "not_measured": "no compiler"},
    ]).splitlines()
    assert lines[2].split() == ["onnx", "onnxruntime", "812", "1.23"]
    assert lines[3].split() == ["ts", "libtorch", "not", "measured:", "no", "compiler"]


def test_fastest_round_keeps_the_fastest_and_lists_every_round_in_order():
    rounds = [{"steps_per_s": 8.0, "ms_per_step": 125.0}, {"steps_per_s": 10.0, "ms_per_step": 100.0},
              {"steps_per_s": 9.0, "ms_per_step": 111.1}]
    assert fastest_round(rounds) == {"steps_per_s": 10.0, "ms_per_step": 100.0,
                                     "steps_per_s_by_round": [8.0, 10.0, 9.0]}


def test_a_levers_fastest_round_keeps_the_first_rounds_first_step_and_a_skipped_row_stays_skipped():
    from bench.levers import fastest_lever_round

    rounds = [{"lever": "compile", "steps_per_s": 6.0, "first_step_s": 30.0},
              {"lever": "compile", "steps_per_s": 7.0, "first_step_s": 2.0}]
    assert fastest_lever_round(rounds) == {"lever": "compile", "steps_per_s": 7.0, "first_step_s": 30.0,
                                           "steps_per_s_by_round": [6.0, 7.0]}
    skipped = [{"lever": "compile", "skipped": "no C++ compiler for inductor"}] * 2
    assert fastest_lever_round(skipped) == skipped[0]
