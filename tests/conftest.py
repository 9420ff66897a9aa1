"""Shared fixtures: the corpus, subprocess helpers, and one short trained run reused by many tests."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
CORPUS_CANDIDATES = [ROOT / "data" / "tinyshakespeare.txt", ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]

# A session started in the background of a script (`cmd &`) or under nohup inherits SIGINT or
# SIGHUP ignored, and so would every program it starts: the tests that send them would wait in
# vain. Each gets the handler a Python started from a terminal has.
for _signum, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGHUP, signal.SIG_DFL)):
    if signal.getsignal(_signum) == signal.SIG_IGN:
        signal.signal(_signum, _handler)


def corpus_file() -> Path:
    for path in [Path(os.environ["DATA"])] if os.environ.get("DATA") else CORPUS_CANDIDATES:
        if path.is_file():
            return path
    raise FileNotFoundError("tests need Tiny Shakespeare: put it at data/tinyshakespeare.txt or set DATA=PATH")


@pytest.fixture(scope="session")
def corpus() -> Path:
    return corpus_file()


def child_env(**extra) -> dict:
    # Without PYTHONDONTWRITEBYTECODE, which some environments set: the tests start some 300
    # programs, and each would compile the project's modules again.
    left_out = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in left_out}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list, timeout: float = 300, cwd: Path = ROOT, **env) -> subprocess.CompletedProcess:
    return subprocess.run([str(arg) for arg in cmd], cwd=cwd, env=child_env(**env), capture_output=True, text=True,
                          timeout=timeout)


# Small and quick, but the real model: 4 eval batches, no samples, no loss.png and no exports unless asked.
QUICK = ["--eval-iters", "2", "--sample-tokens", "0", "--no-export", "--no-plot"]


def trainer_cmd(nproc: int | None, *args) -> list[str]:
    """python -m trainer, or torchrun --standalone --nproc-per-node=N -m trainer."""
    if nproc is None:
        return [sys.executable, "-m", "trainer", *map(str, args)]
    return [*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "trainer", *map(str, args)]


def launcher_cmd(nproc: int, *args) -> list[str]:
    """make train's launcher without make: python -m trainer.launch --nproc=N -- FLAGS."""
    return [sys.executable, "-m", "trainer.launch", f"--nproc={nproc}", "--", *map(str, args)]


def train_cmd(nproc: int, *args) -> list[str]:
    """A run of `nproc` processes: python -m trainer for one, make train's launcher for more (it
    forks its workers after importing torch once, where a bare torchrun starts each afresh)."""
    return trainer_cmd(None, *args) if nproc == 1 else launcher_cmd(nproc, *args)


def session_folder(tmp_path_factory, worker_id) -> Path:
    """This test session's temporary folder, the same for every pytest-xdist worker."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


def trained_once(out: Path, command: list) -> Path:
    """`out`, the --out of the training `command`, run once per test session (`out` is in the
    session's temporary folder). pytest-xdist's workers share it through a lock beside it: the
    first to take the lock trains, the others wait and reuse. Its output goes to train.log,
    written last: a run with a train.log is whole. Tests only read it, and copy what they change."""
    with FileLock(out.with_name(f"{out.name}.lock")):
        if not (out / "train.log").is_file():
            shutil.rmtree(out, ignore_errors=True)  # what a failed attempt left
            result = run(command, timeout=600)
            assert result.returncode == 0, result.stderr[-3000:]
            (out / "train.log").write_text(result.stdout + result.stderr)
    return out


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, worker_id, corpus) -> Path:
    """One 60-step single-process run of 8 windows a step (the tests that use it need a trained
    model and its exports, not a good one), with exports: its --out directory, its output in train.log."""
    out = session_folder(tmp_path_factory, worker_id) / "trained"
    return trained_once(out, trainer_cmd(None, "--data", corpus, "--out", out, "--steps", 60, "--eval-every", 30,
                                         "--batch-size", 8, "--eval-iters", 2, "--sample-tokens", 40))


EMOJI = "\N{PERFORMING ARTS}"  # U+1F3AD: one character, outside the Basic Multilingual Plane
EMOJI_CORPUS = f"To be {EMOJI} or not to be, {EMOJI} that is the question.\n" * 300


@pytest.fixture(scope="session")
def emoji_run(tmp_path_factory, worker_id) -> Path:
    """A tiny model (block size 16) trained on EMOJI_CORPUS until its greedy text repeats the
    emoji, with its exports: its --out."""
    corpus = tmp_path_factory.mktemp("emoji-corpus") / "emoji.txt"  # each worker's own copy
    corpus.write_text(EMOJI_CORPUS, encoding="utf-8")
    out = session_folder(tmp_path_factory, worker_id) / "emoji"
    return trained_once(out, trainer_cmd(
        None, "--data", corpus, "--out", out, "--steps", 120, "--block-size", 16, "--n-layer", 1, "--n-head", 2,
        "--n-embd", 32, "--lr", 0.01, "--eval-iters", 1, "--sample-tokens", 0))


# The uninterrupted run that the fault, node and process-count tests compare with: fp32 whatever
# the CPU (a run resumed at another world size sums in another order, which moves fp32 losses by
# float rounding but bf16 ones by more: tests/test_trainer.py), evaluations at steps 1, 6 and 12,
# and a global batch of 8 windows, which 1, 2 and 4 processes split and which halves the CPU time.
STEPS = 12
RUN = ["--steps", STEPS, "--eval-every", 6, "--batch-size", 8, "--dtype", "fp32", *QUICK]


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, worker_id, corpus):
    """reference_run(nproc, *flags): the --out of an uninterrupted RUN with these flags (make
    train's launcher above one process), trained once per session (trained_once), so the modules
    that compare with the same run share it."""
    shared = session_folder(tmp_path_factory, worker_id)

    def reference(nproc: int, *flags) -> Path:
        name = "-".join(["reference", str(nproc), *(str(flag).strip("-") for flag in flags)])
        out = shared / name
        args = ["--data", corpus, "--out", out, *RUN, *flags]
        trained_once(out, train_cmd(nproc, *args))
        assert eval_records(out)[-1]["world_size"] == nproc
        return out

    return reference


@pytest.fixture(scope="session")
def cpp_program(tmp_path_factory, worker_id) -> Path:
    """The C++ generator, built once per session into build/, where make cpp-generate finds it
    (a build takes a minute on a slow CPU; workers that need it wait for the first)."""
    with FileLock(session_folder(tmp_path_factory, worker_id) / "cpp.lock"):
        result = run([sys.executable, "-c", "from export.cpp import build; print(build())"], timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
    return ROOT / result.stdout.strip()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def step_losses(out: Path) -> dict[int, float]:
    """step -> global batch loss, from a run's metrics.jsonl."""
    return {r["step"]: r["loss"] for r in read_jsonl(Path(out) / "metrics.jsonl") if "loss" in r}


def eval_records(out: Path) -> list[dict]:
    return [r for r in read_jsonl(Path(out) / "metrics.jsonl") if "val_loss" in r]


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit status 2, one line on stderr starting 'error:', no traceback, naming the problem."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]
