"""The bench: the textbook model matches ours in size, the FLOP count, bad input, and a tiny real run."""

import json
import math
import sys

import pytest

from tests.conftest import assert_one_line_error, run
from trainer.precision import resolve_dtype

BENCH = [sys.executable, "-m", "bench"]


def test_textbook_model_has_our_size_and_starts_at_uniform_loss(corpus):
    from bench.textbook import make_step
    from model import count_parameters
    from trainer.data import load_corpus

    model, step = make_step(load_corpus(corpus, 128))
    assert count_parameters(model) == 824_897
    assert abs(step(1).item() - math.log(65)) < 0.15


def test_flops_per_step_follows_the_formula():
    from bench.peak import model_flops_per_step
    from model import GPT, GPTConfig

    tokens = 32 * 128
    weights = 824_897 - 128 * 128  # all parameters but the position table
    expected = 6 * weights * tokens + 12 * 4 * 128 * 128 * tokens  # + attention: 12 x layers x n_embd x T
    assert model_flops_per_step(GPT(GPTConfig()), tokens) == expected


def test_zero_rounds_is_one_line():
    assert_one_line_error(run([*BENCH, "--rounds", "0"], timeout=60), "--rounds 0", "--rounds 3")


def test_a_peak_time_that_measures_nothing_is_one_line():
    assert_one_line_error(run([*BENCH, "--peak-seconds", "0"], timeout=60), "--peak-seconds 0", "--peak-seconds 2")


def test_nproc_that_does_not_divide_the_batch_is_one_line():
    assert_one_line_error(run([*BENCH, "--nprocs", "3"], timeout=60), "over 3 processes", "--nprocs 1,2,4")


def test_levers_reject_a_bad_step_count_and_zero_rounds():
    assert_one_line_error(run([sys.executable, "-m", "bench.levers", "--steps", "0"], timeout=60), "--steps")
    assert_one_line_error(run([sys.executable, "-m", "bench.levers", "--rounds", "0"], timeout=60), "--rounds 0")


def test_tiny_run_writes_every_row(tmp_path, corpus):
    out = tmp_path / "results.json"
    # One round of one-process jobs: test_bench_report checks the fastest-round rule and the rows of
    # several NPROC, and the trainer's own tests run NPROC=2 and 4.
    result = run([*BENCH, "--nprocs", "1", "--warmup", 1, "--steps", 2, "--rounds", 1, "--skip-generation",
                  "--peak-seconds", 0.2, "--data", corpus, "--out", out], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    results = json.loads(out.read_text())
    rows = results["training"]
    default = resolve_dtype("auto")[0]
    dtypes = [default] + (["fp32"] if default == "bf16" else [])
    assert [(r["run"], r["recipe"], r["dtype"], r["nproc"]) for r in rows] == [
        ("textbook", None, "fp32", 1), *(("ddp", "muon", dtype, 1) for dtype in dtypes), ("ddp", "adamw", default, 1)]
    assert all(r["steps_per_s"] > 0 and r["tokens_per_s"] == r["steps_per_s"] * 4096 for r in rows)
    assert all(r["steps_per_s_by_round"] == [r["steps_per_s"]] for r in rows)
    peaks = results["machine"]["peak_gflops"]
    assert peaks["fp32"] > 0 and peaks["bf16"] > 0
    for r in rows:  # MFU divides by the peak of the row's own dtype
        flops_per_s = results["setup"]["flops_per_step"] * r["steps_per_s"]
        assert r["mfu"] == pytest.approx(flops_per_s / (peaks[r["dtype"]] * 1e9))
    assert results["best_nproc"] == 1 and results["generation"] is None
    assert f"best NPROC in {default}" in result.stdout
    [ratio] = results["default_vs_adamw_recipe"]
    assert ratio["ratio"] == rows[1]["steps_per_s"] / rows[-1]["steps_per_s"]
    assert f"{ratio['ratio']:.2f}x at NPROC=1" in result.stdout


def test_profile_groups_the_step_for_each_dtype(corpus):
    result = run([sys.executable, "-m", "bench.profile", "--data", corpus, "--warmup", 0, "--steps", 1], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    default = resolve_dtype("auto")[0]
    tables = result.stdout.split("one process, ")[1:]
    assert [t.split(" ")[0] for t in tables] == [default] + (["fp32"] if default == "bf16" else [])
    for table in tables:
        rows = {line[:40].strip(): line[40:].split() for line in table.splitlines()
                if line[40:].split() and line[40:].split()[-1].endswith("%")}
        step_ms = float(rows.pop("step (wall time, profiled)")[0])
        parts_ms = [float(ms) for ms, _ in rows.values()]
        # The overhead row is what the operators leave of the step: the parts cover all of it.
        assert sum(parts_ms) >= step_ms - 0.1 * len(parts_ms) and min(parts_ms) >= 0
        assert float(rows["GEMMs (mm, addmm, bmm, baddbmm)"][0]) > 0


def test_quality_bench_trains_each_recipe_and_the_textbook_loop_and_finds_the_first_step_at_target(tmp_path, corpus):
    out = tmp_path / "quality.json"
    # A fresh model's loss is ln 65 = 4.17: a target of 4.5 is reached at the first evaluation.
    result = run([sys.executable, "-m", "bench.quality", "--steps", 4, "--eval-every", 2, "--eval-iters", 2,
                  "--target", 4.5, "--nproc", 1, "--recipes", "muon", "--data", corpus, "--out", out], timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["run"] for r in rows] == ["muon recipe, NPROC=1", "textbook loop"]
    for r in rows:
        assert [e["step"] for e in r["evaluations"]] == [1, 2, 4]
        assert r["step_at_target"] == 1 and 0 < r["train_s_at_target"] <= r["train_s"] < r["wall_s"]
        assert r["final_val_loss"] == r["evaluations"][-1]["val_loss"] < 4.3
    assert "| muon recipe, NPROC=1 | 1 |" in result.stdout
    assert_one_line_error(run([sys.executable, "-m", "bench.quality", "--recipes", "sgd"], timeout=60), "--recipes")


def test_the_link_bench_builds_its_trainer_and_counts_muons_stacks(tmp_path, corpus):
    """bench.link's compute job in-process (its two-machine jobs need root and minutes): the
    trainer it times is the trainer's own setup, and Muon's stacks cover its 16 matrices."""
    from bench.link_worker import muon_stacks, trainer_for
    from common.dist_env import DistEnv

    trainer = trainer_for(DistEnv(), str(corpus), str(tmp_path / "out"), batch_size=8)
    assert trainer.cfg.batch_size == 8 and len(trainer.corpus.vocab) == 65
    assert sum(count for count, _, _ in muon_stacks(trainer)) >= 16
