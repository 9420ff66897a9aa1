"""What a run shows and leaves: clean logs off a terminal, a sample per evaluation, loss.png, metrics.jsonl."""

import json
import shutil
import struct
import subprocess

from tests.conftest import ROOT, child_env, eval_records, read_jsonl


def test_log_off_a_terminal_has_no_control_characters(trained_run):
    log = (trained_run / "train.log").read_text()
    assert "step 60 | train loss: " in log
    assert "\r" not in log and "\x1b" not in log


def test_a_sample_is_printed_at_each_evaluation(trained_run):
    lines = (trained_run / "train.log").read_text().splitlines()
    evals = [i for i, line in enumerate(lines) if line.startswith("step ")]
    assert len(evals) == len(eval_records(trained_run)) == 3  # steps 1, 30, 60
    for i in evals:
        assert lines[i + 1].startswith("  sample: ROMEO:") and len(lines[i + 1]) > len("  sample: ROMEO:") + 20


def test_loss_png_is_a_real_picture(trained_run):
    png = (trained_run / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 400 and height >= 300 and len(png) > 20_000


def test_metrics_jsonl_has_a_record_per_step_and_per_evaluation(trained_run):
    records = read_jsonl(trained_run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 61))
    for record in eval_records(trained_run):
        assert set(record) == {"step", "train_loss", "val_loss", "steps_per_s", "elapsed_s", "world_size"}
        assert record["steps_per_s"] > 0 and record["world_size"] == 1
    assert json.loads(json.dumps(records)) == records


def test_make_plot_draws_the_picture_from_metrics(trained_run, tmp_path):
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    result = subprocess.run(["make", "--no-print-directory", "plot", f"OUT={tmp_path}"], cwd=ROOT,
                            env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_make_help_lists_every_target():
    result = subprocess.run(["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True)
    targets = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert {"install", "train", "test", "export", "generate", "cpp-generate", "bench", "bench-levers", "bench-micro", "plot"} <= targets
