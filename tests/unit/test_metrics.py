"""trainer.metrics.MetricsLog: the records of metrics.jsonl, the eval line's speed and the last line;
its readers, and the picture drawn from them."""

import json
import math

import pytest

from trainer.metrics import MetricsLog, read_metrics, read_records, speed_label
from trainer.run_folder import RunFolder

LOSSES = {"train": 2.123456789, "val": 2.5}


@pytest.fixture
def log(tmp_path):
    metrics = MetricsLog(RunFolder(tmp_path), resume_step=None, tensorboard=False, write=True)
    yield metrics
    metrics.close()


def records(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]


def test_speed_label_of_a_window():
    assert speed_label(4, 6, 1.5) == "2.00 steps/s over steps 4-6 (training only)"


def test_speed_label_of_one_step_is_its_time():
    assert speed_label(7, 7, 3.14159) == "step 7 took 3.14 s"


def test_evaluation_line_reports_the_speed_of_the_steps_since_the_last(log):
    for step in (1, 2, 3):
        log.step(step, loss=2.0, lr=1e-3, seconds=0.7)
    assert log.evaluation(3, LOSSES, world_size=2) == \
        "step 3 | train loss: 2.1235 | val loss: 2.5000 | 1.43 steps/s over steps 1-3 (training only)"


def test_evaluation_record_rounds_steps_per_s_to_3_places(log, tmp_path):
    for step in (1, 2, 3):
        log.step(step, loss=2.0, lr=1e-3, seconds=0.7)
    log.evaluation(3, LOSSES, world_size=2)
    *steps, evaluation = records(tmp_path)
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[0] == {"step": 1, "loss": 2.0, "lr": 1e-3}
    assert evaluation["steps_per_s"] == 1.429
    assert (evaluation["step"], evaluation["train_loss"], evaluation["val_loss"], evaluation["world_size"]) == \
        (3, 2.123457, 2.5, 2)
    assert evaluation["elapsed_s"] >= 0 and evaluation["train_s"] == 2.1  # the training steps' seconds so far


def test_the_window_resets_after_an_evaluation(log, tmp_path):
    log.step(1, 2.0, 1e-3, 5.0)
    log.step(2, 2.0, 1e-3, 5.0)
    log.evaluation(2, LOSSES, 1)
    log.step(3, 2.0, 1e-3, 0.25)
    assert log.evaluation(3, LOSSES, 1).endswith(" | step 3 took 0.25 s")
    log.step(4, 2.0, 1e-3, 0.25)
    log.step(5, 2.0, 1e-3, 0.25)
    assert log.evaluation(5, LOSSES, 1).endswith(" | 4.00 steps/s over steps 4-5 (training only)")
    assert [r["steps_per_s"] for r in records(tmp_path) if "val_loss" in r] == [0.2, 4.0, 4.0]


def test_a_non_finite_loss_is_written_as_null(log, tmp_path):
    log.step(1, float("nan"), 1e-3, 0.1)
    assert records(tmp_path) == [{"step": 1, "loss": None, "lr": 1e-3}]


def test_write_false_creates_no_file(tmp_path):
    log = MetricsLog(RunFolder(tmp_path), resume_step=None, tensorboard=False, write=False)
    log.step(1, 2.0, 1e-3, 0.5)
    log.step(2, 2.0, 1e-3, 0.5)
    assert log.evaluation(2, LOSSES, 1).endswith("2.00 steps/s over steps 1-2 (training only)")  # still timed
    log.close()
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_empties_the_old_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 9, "loss": 1.0, "lr": 0.1}\n')
    MetricsLog(RunFolder(tmp_path), resume_step=None, tensorboard=False).close()
    assert (tmp_path / "metrics.jsonl").read_text() == ""


def test_done_line_counts_the_steps_since_the_resume_step(tmp_path):
    log = MetricsLog(RunFolder(tmp_path), resume_step=10, tensorboard=False, write=False)
    for step in range(11, 16):
        log.step(step, 2.0, 1e-3, 0.5)
    line = log.done_line(15, tmp_path / "model.pt")
    assert line.startswith("done: 5 steps in ")
    assert ": 2 s in training steps (2.00 steps/s), " in line
    assert line.endswith(f"; checkpoint {tmp_path / 'model.pt'}")


def test_a_resumed_log_drops_the_records_after_the_resume_step(tmp_path):
    log = MetricsLog(RunFolder(tmp_path), resume_step=None, tensorboard=False)
    for step in range(1, 7):
        log.step(step, 2.0, 1e-3, 0.1)
        if step % 2 == 0:
            log.evaluation(step, LOSSES, 1)
    log.close()
    resumed = MetricsLog(RunFolder(tmp_path), resume_step=4, tensorboard=False)
    assert [(r["step"], "val_loss" in r) for r in records(tmp_path)] == \
        [(1, False), (2, False), (2, True), (3, False), (4, False), (4, True)]
    resumed.step(5, 1.5, 1e-3, 0.1)
    resumed.close()
    assert records(tmp_path)[-1] == {"step": 5, "loss": 1.5, "lr": 1e-3}


# A reader of metrics.jsonl survives any line with one warning.

GOOD = b'{"step": 1, "loss": 4.1, "lr": 0.001}\n{"step": 1, "train_loss": 4.0, "val_loss": 4.2}\n'
HOSTILE = [b"[1, 2]", b'"text"', b"null", b'{"loss": 3.0}', b'{"step": "7"}', b'{"step": true}', b"\xff\xfe{}",
           b"not json"]


@pytest.mark.parametrize("line", HOSTILE)
def test_a_line_that_is_no_record_is_skipped_with_one_warning(tmp_path, capsys, line):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(GOOD + line + b"\n" + line + b"\n" + b'{"step": 2, "loss": 3.9, "lr": 0.001}\n')
    assert [r["step"] for r in read_records(path)] == [1, 1, 2]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "2 line(s)" in warnings[0]


def test_a_torn_last_line_is_dropped_and_a_whole_one_without_its_newline_kept(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(GOOD + b'{"step": 2, "lo')
    assert len(read_records(path)) == 2 and "incomplete" in capsys.readouterr().err
    path.write_bytes(GOOD + b'{"step": 2, "loss": 3.9}')
    assert len(read_records(path)) == 3 and capsys.readouterr().err == ""


def test_a_null_loss_is_nan_for_the_picture(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "loss": null}\n{"step": 1, "train_loss": null, "val_loss": 2.5}\n')
    steps, evals = read_metrics(path)
    assert math.isnan(steps[0]["loss"]) and math.isnan(evals[0]["train_loss"]) and evals[0]["val_loss"] == 2.5


def test_resume_keeps_the_records_up_to_its_step_despite_a_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(GOOD + b"[1]\n" + b'{"step": 2, "loss": 3.9, "lr": 0.001}\n')
    MetricsLog(RunFolder(tmp_path), resume_step=1, tensorboard=False).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 1]


def test_the_guessing_line_is_ln_of_the_run_s_vocabulary(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from model import uniform_loss
    from trainer.plot import plot_metrics

    drawn, axhline = [], Axes.axhline
    monkeypatch.setattr(Axes, "axhline", lambda ax, y, **kw: drawn.append(y) or axhline(ax, y, **kw))
    (tmp_path / "metrics.jsonl").write_bytes(GOOD)
    plot_metrics(tmp_path / "metrics.jsonl", tmp_path / "loss.png", vocab_size=33)
    assert uniform_loss(33) in drawn and uniform_loss(65) not in drawn
