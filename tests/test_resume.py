"""--resume continues the checkpoint's own run: its length and schedule, unless --extend says otherwise."""

import os
import shutil
import signal

import torch

from tests.conftest import (
    QUICK,
    assert_one_line_error,
    eval_records,
    read_jsonl,
    run,
    step_losses,
    train_cmd,
    trainer_cmd,
)
from tests.test_faults import start, wait_for_step
from trainer import checkpoint
from trainer.schedule import lr_at

# Not the defaults, so a resumed run that fell back to them would show in the losses.
ORIGINAL = ["--steps", 8, "--eval-every", 4, "--save-every", 4, "--batch-size", 8, "--lr", "1e-3", "--warmup-steps", 2,
            "--seed", 7, "--dropout", "0.1", *QUICK]


def test_resume_without_flags_ends_where_the_original_run_would_have(tmp_path, corpus):
    reference = tmp_path / "reference"
    assert run(trainer_cmd(None, "--data", corpus, "--out", reference, *ORIGINAL)).returncode == 0
    out = tmp_path / "stopped"
    proc = start(trainer_cmd(None, "--data", corpus, "--out", out, *ORIGINAL))
    wait_for_step(out, 5, proc)  # the checkpoint of step 4 is on disk, the one of step 8 is not
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.load(out / "model.pt").step == 4
    result = run(trainer_cmd(None, "--data", corpus, "--out", out, "--resume", "--no-export"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at step 4: 8 steps" in result.stdout
    assert "recipe muon (Muon lr " in result.stdout and ", lr 0.001 (embeddings 0.006, head 0.001), " in result.stdout
    assert "done: 4 steps in" in result.stdout  # the steps this process ran
    ours, theirs = step_losses(out), step_losses(reference)
    assert sorted(ours) == list(range(1, 9))
    for step in theirs:
        assert abs(ours[step] - theirs[step]) <= 1e-6, (step, ours[step], theirs[step])
    assert [r["step"] for r in eval_records(out)] == [1, 4, 8]
    assert abs(eval_records(out)[-1]["val_loss"] - eval_records(reference)[-1]["val_loss"]) <= 1e-6


def finished_copy(trained_run, tmp_path):
    shutil.copy(trained_run / "model.pt", tmp_path)
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    return tmp_path / "model.pt"


def test_another_step_count_needs_extend_and_leaves_the_checkpoint_alone(tmp_path, corpus, trained_run):
    path = finished_copy(trained_run, tmp_path)
    before = path.read_bytes()
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--resume", "--steps", 70))
    assert_one_line_error(result, f"{path} is a run of 60 steps", "--steps 70", "--extend")
    assert path.read_bytes() == before


def test_resuming_a_finished_run_says_so(tmp_path, corpus, trained_run):
    path = finished_copy(trained_run, tmp_path)
    before = path.read_bytes()
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--resume"))
    assert_one_line_error(result, "has finished its 60 steps", "--extend", "make export")
    assert path.read_bytes() == before


def test_extend_trains_on_to_the_new_total(tmp_path, corpus, trained_run):
    finished_copy(trained_run, tmp_path)
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--resume", "--steps", 62, "--extend",
                             "--no-export"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming at step 60: 62 steps" in result.stdout
    assert checkpoint.load(tmp_path / "model.pt").step == 62
    assert checkpoint.load(tmp_path / "model.pt").train_config["steps"] == 62
    assert sorted(step_losses(tmp_path)) == list(range(1, 63))


def test_optimiser_flags_given_on_resume_are_what_trains_and_what_is_recorded(tmp_path, corpus, trained_run):
    """A Muon checkpoint resumed under another recipe and rate (a traceback once, or ignored flags),
    at one and two processes: the same losses, and the checkpoint and metrics say what trained."""
    losses = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc-{nproc}"
        out.mkdir()
        finished_copy(trained_run, out)
        args = ["--data", corpus, "--out", out, "--resume", "--steps", 62, "--extend", "--recipe", "adamw",
                "--lr", "5e-4", "--beta2", "0.95", "--no-export"]
        result = run(train_cmd(nproc, *args))
        assert result.returncode == 0, result.stderr[-3000:]
        assert "Traceback" not in result.stderr
        saved = checkpoint.load(out / "model.pt").train_config
        assert (saved["recipe"], saved["lr"], saved["muon_lr"], saved["beta2"]) == ("adamw", 5e-4, 0.0, 0.95)
        records = [r for r in read_jsonl(out / "metrics.jsonl") if r.get("step", 0) > 60 and "lr" in r]
        assert [r["lr"] for r in records] == [
            lr_at(step, 5e-4, saved["min_lr"], saved["warmup_steps"], 62, saved["schedule"]) for step in (61, 62)]
        losses[nproc] = step_losses(out)
    assert all(abs(losses[1][s] - losses[2][s]) <= 1e-4 for s in (61, 62)), losses


def test_a_new_run_leaves_a_stopped_runs_checkpoint_alone_unless_told_to_start_over(tmp_path, corpus, trained_run):
    stopped = torch.load(trained_run / "model.pt", weights_only=True)
    stopped["step"] = 30  # as a run of 60 steps stopped (Ctrl-C, a crash) at step 30 leaves it
    torch.save(stopped, tmp_path / "model.pt")
    shutil.copy(trained_run / "metrics.jsonl", tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in ("model.pt", "metrics.jsonl")}
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 4, *QUICK))
    assert_one_line_error(result, f"{tmp_path / 'model.pt'} holds a run stopped at step 30 of 60", "--resume",
                          "another --out", "--start-over")
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    told = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 4, "--start-over", "--dry-run"))
    assert told.returncode == 0, told.stderr
