"""Nothing lost, nothing hangs: one run per --out, non-finite losses, full disks (a real ENOSPC on
a small tmpfs), a killed torchrun and a frozen worker. Each test also checks that a file that
was good before is still good after."""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import QUICK, ROOT, assert_one_line_error, child_env, read_jsonl, run, step_losses, trainer_cmd
from tests.test_faults import rank_of, start, wait_for_step, worker_pids
from tests.test_launch import error_lines, make_train
from trainer import checkpoint, run_folder
from trainer.metrics import MetricsLog, read_metrics
from trainer.run_folder import RunFolder


def strict_records(path: Path) -> list[dict]:
    """metrics.jsonl read by a strict JSON reader: NaN/Infinity tokens and torn lines fail."""
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    text = path.read_text()
    assert text.endswith("\n") or not text
    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A small RAM file system at `path`, which really runs out of space (needs root, as CI is)."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last byte; returns the filler file."""
    filler = directory / "filler"
    with open(filler, "wb", buffering=0) as f:
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0" * 4096)
        with contextlib.suppress(OSError):
            while True:
                f.write(b"\0")
    return filler


# -- 1. one run per --out -----------------------------------------------------------------------


def test_a_second_run_on_a_busy_out_is_refused_before_touching_anything(tmp_path, corpus):
    first = start(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 400, "--eval-every", 200, *QUICK))
    try:
        wait_for_step(tmp_path, 2, first)
        # Stopped, it still holds the lock and leaves both cores to the runs it must refuse.
        first.send_signal(signal.SIGSTOP)
        for extra in ([], ["--resume"], ["--dry-run"]):
            metrics_before = (tmp_path / "metrics.jsonl").read_text()
            checkpoint_before = (tmp_path / "model.pt").read_bytes()
            second = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 12, "--seed", 2,
                                     *QUICK, *extra))
            assert_one_line_error(second, str(tmp_path), "in use by another training run", f"pid {first.pid} on ")
            # The first run's files are its own: its records go on from where they were.
            assert (tmp_path / "metrics.jsonl").read_text().startswith(metrics_before)
            assert (tmp_path / "model.pt").read_bytes() == checkpoint_before
        first.send_signal(signal.SIGCONT)
        assert first.poll() is None
    finally:
        first.kill()
        first.communicate()
    # The kernel dropped the lock with the killed process: no stale lock is left behind.
    run_folder.acquire(tmp_path)
    run_folder.release(tmp_path)


def test_the_dry_run_checks_the_lock_but_does_not_keep_it(tmp_path, corpus):
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--dry-run", *QUICK))
    assert result.returncode == 0, result.stderr
    run_folder.acquire(tmp_path)
    try:
        refused = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--dry-run", *QUICK))
        assert_one_line_error(refused, "in use by another training run", f"pid {os.getpid()}")
    finally:
        run_folder.release(tmp_path)


# -- 2. non-finite numbers ----------------------------------------------------------------------


def test_a_non_finite_loss_stops_every_rank_and_keeps_the_good_checkpoint(tmp_path, corpus, trained_run):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(trained_run / "model.pt", out)
    shutil.copy(trained_run / "metrics.jsonl", out)
    good = (out / "model.pt").read_bytes()
    # A checkpoint at step 30 of the same 60-step run, with one weight matrix blown up: finite, so
    # the checkpoint is valid (a NaN weight is refused as damaged), but the loss overflows at once.
    poisoned = torch.load(trained_run / "model.pt", weights_only=True)
    poisoned["step"] = 30
    for weights in ("training_weights", "model"):  # the weights the optimiser steps, and their average
        next(iter(poisoned[weights].values())).fill_(1e30)
    torch.save(poisoned, tmp_path / "poisoned.pt")
    result = subprocess.run(make_train(out, corpus, "--resume", tmp_path / "poisoned.pt", "--steps", 60,
                                       "--eval-every", 30, *QUICK), cwd=ROOT, env=child_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert "diverged at step 31" in errors[0] and "--lr" in errors[0] and "--grad-clip" in errors[0]
    assert "Traceback" not in result.stderr
    assert (out / "model.pt").read_bytes() == good
    records = strict_records(out / "metrics.jsonl")
    assert max(r["step"] for r in records) == 30  # the resumed run dropped the later ones, logged no NaN


def test_metrics_lines_are_strict_json_whatever_the_numbers(tmp_path):
    log = MetricsLog(RunFolder(tmp_path), None, tensorboard=False)
    log.step(1, math.nan, 1e-3, seconds=0.5)
    log.evaluation(1, {"train": math.inf, "val": -math.inf}, world_size=1)
    log.close()
    records = strict_records(tmp_path / "metrics.jsonl")
    assert records[0] == {"step": 1, "loss": None, "lr": 1e-3}
    assert {key: records[1][key] for key in ("step", "train_loss", "val_loss", "steps_per_s", "world_size")} == {
        "step": 1, "train_loss": None, "val_loss": None, "steps_per_s": 2.0, "world_size": 1}


# -- 3. full disk --------------------------------------------------------------------------------


def test_on_a_full_disk_a_checkpoint_fails_whole_and_a_metrics_record_is_dropped_whole(tmp_path, trained_run, capsys):
    with tmpfs(tmp_path / "small", "24m") as disk:
        shutil.copy(trained_run / "model.pt", disk)
        good = (disk / "model.pt").read_bytes()
        log = MetricsLog(RunFolder(disk), None, tensorboard=False)
        log.step(1, 4.0, 1e-3, seconds=0.1)
        filler = fill(disk)
        saved = checkpoint.load(disk / "model.pt")
        with pytest.raises(OSError) as failure:
            checkpoint.save(disk / "model.pt", saved)
        assert failure.value.errno == 28  # ENOSPC, not torch's RuntimeError
        # The file's last page still has room; the record that crosses into a new page is cut
        # short by the kernel. No exception: a warning, and that record and the later ones skipped.
        for step in range(2, 400):
            log.step(step, 3.0, 1e-3, seconds=0.1)
        filler.unlink()
        log.step(400, 2.0, 1e-3, seconds=0.1)  # writing works again
        checkpoint.save(disk / "model.pt", dataclasses.replace(saved, step=61))  # the next checkpoint is tried again
        log.close()
        steps = [r["step"] for r in strict_records(disk / "metrics.jsonl")]
        assert steps[-1] == 400 and steps[:-1] == list(range(1, len(steps))) and len(steps) < 300, steps
        assert checkpoint.load(disk / "model.pt").step == 61
        assert sorted(p.name for p in disk.iterdir()) == ["metrics.jsonl", "model.pt"]  # no temporary left
        assert good != (disk / "model.pt").read_bytes()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "No space left on device" in warnings[0]  # once, not at every step


def test_training_on_a_full_disk_warns_goes_on_and_fails_when_the_last_checkpoint_fails(tmp_path, corpus,
                                                                                          trained_run):
    checkpoint_size = (trained_run / "model.pt").stat().st_size
    # Room for one checkpoint and the logs, not for a second checkpoint beside it while it is written.
    size = f"{(checkpoint_size * 3 // 2) // 1024}k"
    with tmpfs(tmp_path / "small", size) as disk:
        result = subprocess.run(make_train(disk, corpus, "--steps", 6, "--eval-every", 2, *QUICK),
                                cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=300)
        assert "Traceback" not in result.stderr + result.stdout and "RuntimeError" not in result.stderr
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: could not write")]
        assert len(warnings) == 2, result.stderr  # steps 2 and 4, each tried again
        assert all("No space left on device" in w and "previous checkpoint is kept" in w for w in warnings)
        # The last one has no next one: the run fails in one line, with no "done" and nothing exported.
        assert result.returncode != 0, result.stderr[-3000:]  # the worker's 1; make's own 2 after it
        assert error_lines(result.stderr) == [line for line in result.stderr.splitlines() if line.startswith(
            "error: could not write the last checkpoint") and "No space left on device" in line and
            "at step 1, is kept" in line and "resume with:" in line], result.stderr
        assert "done:" not in result.stdout and "writing" not in result.stdout
        assert checkpoint.load(disk / "model.pt").step == 1  # the checkpoint that fitted, intact
        assert sorted(step_losses(disk)) == list(range(1, 7))
        strict_records(disk / "metrics.jsonl")
        assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]


def test_a_torn_last_metrics_line_is_dropped_with_a_warning_by_resume_and_plot(tmp_path, trained_run):
    whole = (trained_run / "metrics.jsonl").read_text()
    (tmp_path / "metrics.jsonl").write_text(whole + '{"step": 2')
    plot = run([sys.executable, "-m", "trainer.plot", tmp_path])
    assert plot.returncode == 0, plot.stderr
    assert "warning: the last line" in plot.stderr and "incomplete" in plot.stderr
    assert (tmp_path / "loss.png").stat().st_size > 0
    steps, evals = read_metrics(tmp_path / "metrics.jsonl")
    assert len(steps) == 60 and len(evals) == 3
    # On resume the torn line goes, and what was whole stays.
    MetricsLog(RunFolder(tmp_path), 30, tensorboard=False).close()
    assert max(r["step"] for r in strict_records(tmp_path / "metrics.jsonl")) == 30
    assert read_jsonl(tmp_path / "metrics.jsonl") == [json.loads(line) for line in whole.splitlines()
                                                      if json.loads(line)["step"] <= 30]


# -- 4. torchrun killed --------------------------------------------------------------------------


def alive(pid: int) -> bool:
    """Running or stopped, not a zombie waiting for the init process (the launcher is gone) to reap it."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_workers_stop_soon_after_their_launcher_is_killed(tmp_path, corpus):
    proc = start(make_train(tmp_path, corpus, "--steps", 400, "--eval-every", 200, "--save-every", 2, *QUICK))
    wait_for_step(tmp_path, 3, proc)
    workers = worker_pids(proc.pid)
    assert len(workers) == 2
    launcher = int((Path("/proc") / str(workers[0]) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(launcher, signal.SIGKILL)
    killed = time.monotonic()
    # The workers hold make's output pipes: communicate() returns once they are gone too.
    stdout, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - killed < 15, "workers trained on without their launcher"
    deadline = time.monotonic() + 5  # their output closed, they may still be exiting
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers)
    assert "the launcher (torchrun" in stderr and "is gone" in stderr
    last = max(step_losses(tmp_path))
    assert last < 400
    assert checkpoint.load(tmp_path / "model.pt").step == last  # consistent: the step they stopped at
    strict_records(tmp_path / "metrics.jsonl")
    run_folder.acquire(tmp_path)  # and nobody holds the folder any more
    run_folder.release(tmp_path)


# -- 7. a frozen worker --------------------------------------------------------------------------


def test_a_killed_rank_is_one_line_whatever_gloo_says_on_the_survivor(tmp_path, corpus):
    """The survivor's collective fails with gloo's "Connection closed by peer": under make train the
    launcher names the killed rank, and the survivor adds no traceback."""
    proc = start(make_train(tmp_path, corpus, "--steps", 400, "--eval-every", 200, "--save-every", 2, *QUICK))
    try:
        wait_for_step(tmp_path, 3, proc)
        victim = next(pid for pid in worker_pids(proc.pid) if rank_of(pid) == 1)
        os.kill(victim, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    errors = error_lines(stderr)
    assert len(errors) == 1, stderr
    assert f"rank 1 (pid {victim}) was killed by SIGKILL" in errors[0] and "resume with: make train" in errors[0]
    assert "Traceback" not in stderr and "Connection" not in stderr and "exitcode" not in stderr, stderr
    strict_records(tmp_path / "metrics.jsonl")


def test_a_frozen_rank_is_named_by_the_others_within_the_timeout(tmp_path, corpus):
    """A rank that stops answering is named. A long evaluation sample (1000 characters at step 1,
    several seconds here) is no stall: every rank draws it, none waits for rank 0's."""
    timeout = 5
    proc = start(make_train(tmp_path, corpus, "--steps", 400, "--eval-every", 200, "--save-every", 2,
                            "--timeout", timeout, *QUICK, "--sample-tokens", 1000), TORCH_ELASTIC_SHUTDOWN_TIMEOUT=2)
    frozen, lines, named = None, [], threading.Event()

    def read_stderr():
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("error: "):
                named.set()

    try:
        wait_for_step(tmp_path, 3, proc)
        frozen = next(pid for pid in worker_pids(proc.pid) if rank_of(pid) == 1)
        os.kill(frozen, signal.SIGSTOP)
        stopped = time.monotonic()
        stalled_at = max(step_losses(tmp_path))
        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        assert named.wait(timeout + 30), "".join(lines)
        assert time.monotonic() - stopped < timeout + 15
        # torchrun then waits up to 30 s for the stopped process to take its SIGTERM (its agent's
        # _stop_workers ignores --shutdown-timeout): end it, as a process that never comes back.
        os.kill(frozen, signal.SIGKILL)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        stderr = "".join(lines)
    finally:
        if frozen is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(frozen, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    errors = error_lines(stderr)
    # The first line names the frozen rank; a second may only say the kill above ended it.
    assert len(errors) == 1 or (len(errors) == 2 and "rank 1 " in errors[1] and "SIGKILL" in errors[1]), stderr
    assert f"rank 1 stopped answering: no reply within --timeout {timeout} s" in errors[0]
    assert "resume with: make train NPROC=2" in errors[0]
    assert "Traceback" not in stderr
    saved = checkpoint.load(tmp_path / "model.pt").step
    assert saved <= stalled_at + 1 and saved >= 2
    strict_records(tmp_path / "metrics.jsonl")
