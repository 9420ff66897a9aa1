"""The command that resumes a run, in the form that started it: make train, python -m trainer.launch,
torchrun or python -m trainer.

It is built from the run's parsed configuration: the flags the command line gave (all but
--resume), then --resume. make train's launcher says how it was started in LAUNCHER_ENV, as JSON,
for its workers: {"make": [make variables]} or {"launch": [launcher options]}.
"""

import json
import os
import shlex
import signal
import sys
from pathlib import Path

from trainer.config import TrainConfig

LAUNCHER_ENV = "TRAINER_LAUNCHER"

# The signals that stop a run at the end of its step, with a checkpoint and the resume command:
# Ctrl-C, kill, and the terminal closing (SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def resume_command(cfg: TrainConfig, env, launcher: dict | None) -> str:
    """The command that resumes this run. `env`: the rank's DistEnv (what torchrun started);
    `launcher`: how trainer.launch was started (launched_by()), None without it."""
    flags = cfg.flags(cfg.given - {"resume", "dry_run", "start_over"})
    if launcher and "make" in launcher:
        words = ["make", "train", *launcher["make"]]
        if "out" in cfg.given:
            words.append(f"OUT={shlex.quote(cfg.out)}")
        args = shlex.join([*cfg.flags(cfg.given - {"resume", "dry_run", "start_over", "out"}), "--resume"])
        return " ".join([*words, f"ARGS={shlex.quote(args)}"])
    if launcher:
        return shlex.join([python(), "-m", "trainer.launch", *launcher["launch"], "--", *flags, "--resume"])
    if not env.run_id:
        return shlex.join([python(), "-m", "trainer", *flags, "--resume"])
    nodes = env.world_size // env.local_world_size
    if nodes == 1:
        torchrun = str(Path(python()).parent / "torchrun")
        return shlex.join([torchrun, "--standalone", f"--nproc-per-node={env.local_world_size}", "-m", "trainer",
                           *flags, "--resume"])
    return (f"on each of the {nodes} nodes, your torchrun command with these trainer flags: "
            + shlex.join(["-m", "trainer", *flags, "--resume"]))


def launched_by() -> dict | None:
    """How trainer.launch was started, as it told its workers; None when it did not start them."""
    value = os.environ.get(LAUNCHER_ENV)
    return json.loads(value) if value else None


def python() -> str:
    """This Python, relative to the working directory when it is inside it (.venv/bin/python)."""
    inside = Path(sys.executable).is_relative_to(Path.cwd())
    return os.path.relpath(sys.executable) if inside else sys.executable
