"""Faults: kill and resume, SIGTERM, torchrun elastic restarts, damaged checkpoints, two nodes on loopback."""

import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from common.files import atomic_write
from tests.conftest import (
    QUICK,
    ROOT,
    RUN,
    STEPS,
    assert_one_line_error,
    child_env,
    eval_records,
    run,
    step_losses,
    train_cmd,
    trainer_cmd,
)
from tests.ports import free_port
from trainer import checkpoint
from trainer.config import read_command_line


def start(cmd: list, **env) -> subprocess.Popen:
    return subprocess.Popen([str(c) for c in cmd], cwd=ROOT, env=child_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_step(out: Path, step: int, proc: subprocess.Popen, timeout: float = 120) -> int:
    """Block until metrics.jsonl records `step` (or later); returns the last recorded step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        losses = step_losses(out) if (out / "metrics.jsonl").exists() else {}
        if losses and max(losses) >= step:
            return max(losses)
        time.sleep(0.02)
    raise TimeoutError(f"step {step} not reached")


def assert_same_run(out: Path, reference: Path, tol: float) -> None:
    ours, theirs = step_losses(out), step_losses(reference)
    assert sorted(ours) == sorted(theirs) == list(range(1, STEPS + 1))
    for step in theirs:
        assert abs(ours[step] - theirs[step]) <= tol, (step, ours[step], theirs[step])
    final, expected = eval_records(out)[-1], eval_records(reference)[-1]
    assert final["step"] == expected["step"] == STEPS
    assert abs(final["val_loss"] - expected["val_loss"]) <= tol
    assert abs(final["train_loss"] - expected["train_loss"]) <= tol


@pytest.fixture
def reference(reference_run):
    """The uninterrupted runs: one process with dropout 0 and 0.1, and two processes."""
    return {"single": reference_run(1), "dropout": reference_run(1, "--dropout", 0.1), "nproc2": reference_run(2)}


@pytest.mark.parametrize("dropout", [0, 0.1])
def test_sigkill_at_a_random_step_then_resume_equals_the_uninterrupted_run(tmp_path, corpus, reference, dropout):
    save_every = 3
    # After the first checkpoint is on disk (the step after it has been logged), before the end.
    kill_at = random.randint(save_every + 1, STEPS - 2)
    proc = start(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--dropout", dropout,
                             "--save-every", save_every, *RUN))
    wait_for_step(tmp_path, kill_at, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = checkpoint.load(tmp_path / "model.pt").step
    assert save_every <= saved < STEPS, (kill_at, saved)
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--dropout", dropout, "--resume", *RUN))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"resuming at step {saved}" in result.stdout
    assert_same_run(tmp_path, reference["dropout" if dropout else "single"], tol=1e-6)


def test_sigterm_checkpoints_and_exits_within_10s_and_resumes_at_another_world_size(tmp_path, corpus, reference):
    proc = start(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--save-every", 100, *RUN))
    wait_for_step(tmp_path, 3, proc)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=10)
    assert time.monotonic() - sent < 10
    assert proc.returncode in (0, 143)
    last = max(step_losses(tmp_path))
    assert checkpoint.load(tmp_path / "model.pt").step == last < STEPS
    assert f"stopped at step {last}" in stdout
    # The last line is the command that resumes this run, the way it was started.
    words = shlex.split(stdout.strip().splitlines()[-1].removeprefix("resume with: "))
    assert (ROOT / words[0]).resolve() == Path(sys.executable).resolve()
    assert words[1:3] == ["-m", "trainer"] and words[-1] == "--resume"
    assert read_command_line(words[3:]) == read_command_line(["--data", str(corpus), "--out", str(tmp_path),
                                                              "--save-every", "100", *map(str, RUN), "--resume"])
    # The checkpoint was taken by one process; two processes continue it (the global batch is the same).
    result = run(train_cmd(2, "--data", corpus, "--out", tmp_path, "--resume", *RUN))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_run(tmp_path, reference["single"], tol=1e-4)


def worker_pids(make_pid: int) -> list[int]:
    """The workers of the make train started as `make_pid`: its descendants named "rank N" (the
    launcher forks them, and names them so)."""
    parents, names = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            names[int(proc.name)] = (proc / "comm").read_text().strip()
        except (OSError, IndexError):
            continue

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == make_pid:
                return True
        return False

    return [pid for pid, name in names.items() if name.startswith("rank ") and descends(pid)]


def rank_of(pid: int) -> int:
    """The rank of a worker, from its name."""
    return int((Path("/proc") / str(pid) / "comm").read_text().split()[1])


def test_sigkill_of_one_worker_under_max_restarts_completes_the_same_run(tmp_path, corpus, reference):
    flags = " ".join(str(a) for a in ["--save-every", 3, *RUN])
    proc = start(["make", "--no-print-directory", "train", "NPROC=2", "MAX_RESTARTS=3", f"DATA={corpus}",
                  f"OUT={tmp_path}", f"ARGS={flags}"])
    wait_for_step(tmp_path, random.randint(4, STEPS - 3), proc)
    victims = worker_pids(proc.pid)
    assert len(victims) == 2
    os.kill(random.choice(victims), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert "resuming at step" in stdout  # the restarted workers found the checkpoint by themselves
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE" not in stderr  # make train gave each attempt its own store
    assert "Traceback" not in stderr and "Connection" not in stderr  # the survivor said nothing of gloo's error
    assert_same_run(tmp_path, reference["nproc2"], tol=1e-6)


def test_a_restart_before_the_first_checkpoint_trains_from_scratch_beside_an_earlier_runs_checkpoint(
        tmp_path, corpus, reference):
    """The model.pt an earlier run of another shape left in --out is not this run's: a restarted
    worker neither resumes it nor refuses its shape; it starts again from scratch."""
    earlier = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 1, "--n-layer", 1, *QUICK))
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    flags = " ".join(str(a) for a in ["--save-every", 100, *RUN])  # the first checkpoint: the last step
    proc = start(["make", "--no-print-directory", "train", "NPROC=2", "MAX_RESTARTS=1", f"DATA={corpus}",
                  f"OUT={tmp_path}", f"ARGS={flags}"])
    wait_for_step(tmp_path, 3, proc)
    assert checkpoint.load(tmp_path / "model.pt").model_config["n_layer"] == 1  # still the earlier run's
    os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert stdout.count("from scratch") == 2 and "resuming" not in stdout, stdout
    assert checkpoint.load(tmp_path / "model.pt").model_config["n_layer"] == 4
    assert_same_run(tmp_path, reference["nproc2"], tol=1e-6)


def test_truncated_checkpoint_is_a_clear_error_and_is_left_alone(tmp_path, corpus, trained_run):
    damaged = tmp_path / "model.pt"
    whole = (trained_run / "model.pt").read_bytes()
    damaged.write_bytes(whole[: len(whole) // 2])
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--resume", *RUN))
    assert_one_line_error(result, str(damaged), "corrupt or truncated")
    assert damaged.read_bytes() == whole[: len(whole) // 2]


def test_checkpoint_of_another_model_shape_is_a_clear_error(tmp_path, corpus, trained_run):
    result = run(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--n-layer", 2,
                             "--resume", trained_run / "model.pt", *RUN))
    assert_one_line_error(result, "n_layer=4", "n_layer=2", "--n-layer 4")
    assert not (tmp_path / "model.pt").exists()


def test_a_failed_write_leaves_the_previous_checkpoint_loadable(tmp_path, trained_run):
    path = tmp_path / "model.pt"
    shutil.copy(trained_run / "model.pt", path)
    before = path.read_bytes()

    def disk_full(f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(path, disk_full)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left behind
    assert checkpoint.load(path).step == 60
    assert isinstance(torch.load(path, weights_only=True)["model"], dict)


def test_two_torchrun_nodes_on_loopback_equal_one_node_with_two_processes(tmp_path, corpus, reference):
    port = free_port()
    flags = " ".join(str(a) for a in RUN)
    nodes = [start(["make", "--no-print-directory", "train", "NNODES=2", f"NODE_RANK={rank}", "NPROC=1",
                    "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={port}", f"DATA={corpus}", f"OUT={tmp_path}",
                    f"ARGS={flags}"]) for rank in (0, 1)]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr[-3000:]
    assert eval_records(tmp_path)[-1]["world_size"] == 2
    assert_same_run(tmp_path, reference["nproc2"], tol=1e-6)


def test_a_stop_signal_while_the_exports_are_written_is_one_line_naming_make_export(tmp_path, corpus):
    # On a busy machine the signal's exception is now and then caught inside the writes, which then
    # finish, and the line says so: then try again.
    for attempt in range(3):
        shutil.rmtree(tmp_path)
        proc = start(trainer_cmd(None, "--data", corpus, "--out", tmp_path, "--steps", 2, "--eval-iters", 1,
                                 "--sample-tokens", 0, "--progress", "lines"))
        for line in proc.stdout:
            if line.startswith("writing loss.png and the exports (model.ts, model.pt2, model.onnx, hf/, model.json)"):
                break
        proc.send_signal(signal.SIGINT)  # Ctrl-C after the last step: once a traceback, and SIGTERM silent
        _, stderr = proc.communicate(timeout=120)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 128 + signal.SIGINT and len(lines) == 1, stderr[-3000:]
        if "too late to stop the writes" not in lines[0]:
            break
        assert (tmp_path / "model.json").is_file() and not list(tmp_path.glob(".export-*"))
    assert lines[0].startswith("stopped by SIGINT after the last step") and "the exports were not written" in lines[0]
    assert f"make export CKPT={tmp_path / 'model.pt'}" in lines[0]
    assert checkpoint.load(tmp_path / "model.pt").step == 2
    assert not (tmp_path / "model.json").exists() and not list(tmp_path.rglob(".*.tmp"))
    assert not list(tmp_path.glob(".export-*"))  # the staging directory went with the signal
