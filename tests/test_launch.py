"""make train's launcher: bad NPROC/NNODES in one line, Ctrl-C and SIGTERM ending in the resume
command, a missing second node and a taken MASTER_PORT as one line each."""

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import QUICK, ROOT, child_env, step_losses
from tests.ports import free_port
from tests.test_faults import start, wait_for_step
from trainer import checkpoint
from trainer.network import interface_of

STEPS = 12


def make_train(out: Path, corpus: Path, *args, nproc: int = 2, **variables) -> list[str]:
    """make train with these trainer flags as ARGS; `variables` are more make variables."""
    variables = {"NPROC": nproc, "DATA": corpus, "OUT": out, "ARGS": " ".join(str(a) for a in args), **variables}
    return ["make", "--no-print-directory", "train", *(f"{k}={v}" for k, v in variables.items())]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def without_make(stderr: str) -> list[str]:
    """stderr without make's own "make: *** [Makefile:N: train] Error 2" (make[1] when nested)."""
    return [line for line in stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\* ", line)]


@pytest.mark.parametrize("variable, value", [("NPROC", "0"), ("NPROC", "abc"), ("NPROC", "-2"), ("NNODES", "0"),
                                             ("NODE_RANK", "1"), ("OMP_NUM_THREADS", "0"),
                                             ("OMP_NUM_THREADS", "abc")])
def test_bad_process_counts_are_one_line_before_anything_starts(tmp_path, corpus, variable, value):
    out = tmp_path / "out"
    result = subprocess.run(make_train(out, corpus, "--steps", 2, **{variable: value}),
                            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    # make adds its own "make: *** [Makefile:N: train] Error 2" line and exits 2.
    assert result.returncode == 2, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert f"{variable} must be a whole number" in errors[0] and repr(value) in errors[0], result.stderr
    assert without_make(result.stderr) == errors
    assert "Traceback" not in result.stderr + result.stdout
    assert not out.exists()


@pytest.mark.parametrize("signum, whom, nproc", [(signal.SIGINT, "group", 2), (signal.SIGTERM, "make", 1),
                                                 (signal.SIGHUP, "group", 1)])
def test_a_signal_to_make_train_ends_in_the_resume_command_which_resumes(tmp_path, corpus, signum, whom, nproc):
    """Ctrl-C and a closed terminal (SIGHUP) reach the whole foreground process group; `kill` reaches make alone."""
    out = tmp_path / "out"
    proc = start(make_train(out, corpus, "--eval-every", 4, "--batch-size", 8, *QUICK, nproc=nproc, STEPS=STEPS))
    wait_for_step(out, 3, proc)
    if whom == "group":
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    # make ends by the signal itself, which a shell reports as 128 + N (130, 143).
    assert proc.returncode == -signum, (proc.returncode, stderr)
    assert "Traceback" not in stdout + stderr and "SignalException" not in stderr
    assert stderr.strip() == "", stderr
    *_, stopped, resume = stdout.strip().splitlines()
    saved = checkpoint.load(out / "model.pt").step
    assert stopped.startswith(f"stopped at step {saved}: ") and str(out / "model.pt") in stopped, stdout
    assert saved == max(step_losses(out)) < STEPS
    assert resume.startswith(f"resume with: make train NPROC={nproc} ") and resume.endswith("--resume'"), resume
    command = resume.removeprefix("resume with: ")
    assert shlex.split(command)[3] == f"OUT={out}"
    if signum == signal.SIGINT:  # once is enough: the printed command continues the run to its end
        temporary = tmp_path / "tmp"  # and leaves no torchrun log folder (/tmp/torchelastic_*) behind
        temporary.mkdir()
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=child_env(TMPDIR=temporary),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"resuming at step {saved}" in result.stdout
        assert sorted(step_losses(out)) == list(range(1, STEPS + 1))
        assert checkpoint.load(out / "model.pt").step == STEPS
        assert not list(temporary.glob("torchelastic_*"))


def test_a_second_ctrl_c_stops_at_once_with_the_resume_command_and_no_traceback(tmp_path, corpus):
    out = tmp_path / "out"
    proc = start(make_train(out, corpus, "--eval-every", 200, "--save-every", 2, *QUICK, nproc=1, STEPS=400))
    wait_for_step(out, 3, proc)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.05)  # within the step the first one lets finish
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, (proc.returncode, stderr)
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    *_, stopped, resume = stdout.strip().splitlines()
    saved = checkpoint.load(out / "model.pt").step
    assert stopped.startswith("stopped at step ") and f"at step {saved}" in stopped, stdout
    assert resume.startswith("resume with: make train NPROC=1 ") and resume.endswith("--resume'"), resume


def test_a_missing_second_node_is_announced_then_one_line_after_rdzv_timeout(tmp_path, corpus):
    port = free_port()
    began = time.monotonic()
    result = subprocess.run(make_train(tmp_path, corpus, "--steps", 2, nproc=1, NNODES=2, MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=port, RDZV_TIMEOUT=3),
                            cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[0] == (f"node 0 of 2 at 127.0.0.1 on {interface_of('127.0.0.1')}, hosting the "
                                             f"rendezvous: waiting for 2 nodes at 127.0.0.1:{port}, up to 3 s "
                                             "(RDZV_TIMEOUT=)"), result.stdout
    assert result.returncode != 0
    errors = error_lines(result.stderr)
    assert len(errors) == 1 and "not all 2 nodes joined" in errors[0] and "RDZV_TIMEOUT" in errors[0], result.stderr
    assert without_make(result.stderr) == errors
    assert "Traceback" not in result.stderr
    assert time.monotonic() - began < 60  # not torchrun's 600 s default
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_master_port_held_by_another_program_is_one_line_at_once(tmp_path, corpus):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        result = subprocess.run(make_train(tmp_path, corpus, "--steps", 2, nproc=1, NNODES=2, MASTER_PORT=port,
                                           RDZV_TIMEOUT=60),
                                cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=50)
    assert result.returncode == 2
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    assert f"MASTER_PORT {port} is taken" in errors[0] and f"pid {os.getpid()}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
