"""The command that resumes a run, in the form that started it: make train, python -m trainer.launch,
torchrun or python -m trainer.

It is built once, from the flags the command line gave (all but --resume), then --resume: by make
train's launcher, which knows its own variables and hands the command to its workers in
RESUME_ENV, or else by the worker itself, from torchrun's environment.
"""

import os
import shlex
import signal
import sys
from pathlib import Path

from trainer.config import flag_of, option_fields

# What make train's launcher tells its workers: the resume command, and which node they run on.
RESUME_ENV = "TRAINER_RESUME_COMMAND"
NODE_ENV = "TRAINER_NODE"

# The signals that stop a run at the end of its step, with a checkpoint and the resume command:
# Ctrl-C, kill, and the terminal closing (SIGHUP).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def flags(values: dict) -> list[str]:
    """The command-line flags that give these values ({field name: value}), in the fields' order."""
    words = []
    for f in option_fields():
        if f.name not in values:
            continue
        value = values[f.name]
        if f.type is bool or value == f.metadata["argparse"].get("const", ()):  # a switch; a bare --resume
            words += [flag_of(f)] if value != f.default else []
        else:
            words += [flag_of(f), str(value)]
    return words


def resume_command(command_line: dict, env, launcher: dict | None = None) -> str:
    """The command that resumes this run. `command_line`: the values the trainer's command line
    gave (config.read_command_line's); `env`: the rank's DistEnv (what torchrun started);
    `launcher`: how trainer.launch was started, {"make": [make variables]} or {"launch": [its
    options]}, None when the trainer builds it."""
    own = {name: value for name, value in command_line.items() if name not in ("resume", "dry_run", "start_over")}
    given = flags(own)
    if launcher and "make" in launcher:
        words = ["make", "train", *launcher["make"]]
        if "out" in own:
            words.append(f"OUT={shlex.quote(own.pop('out'))}")
        args = shlex.join([*flags(own), "--resume"])
        return " ".join([*words, f"ARGS={shlex.quote(args)}"])
    if launcher:
        return shlex.join([python(), "-m", "trainer.launch", *launcher["launch"], "--", *given, "--resume"])
    if not env.run_id:
        return shlex.join([python(), "-m", "trainer", *given, "--resume"])
    nodes = env.world_size // env.local_world_size
    if nodes == 1:
        torchrun = str(Path(python()).parent / "torchrun")
        return shlex.join([torchrun, "--standalone", f"--nproc-per-node={env.local_world_size}", "-m", "trainer",
                           *given, "--resume"])
    return (f"on each of the {nodes} nodes, your torchrun command with these trainer flags: "
            + shlex.join(["-m", "trainer", *given, "--resume"]))


def launched_by() -> str | None:
    """The resume command make train's launcher built and told its workers; None when it did not
    start this process."""
    return os.environ.get(RESUME_ENV) or None


def python() -> str:
    """This Python, relative to the working directory when it is inside it (.venv/bin/python)."""
    inside = Path(sys.executable).is_relative_to(Path.cwd())
    return os.path.relpath(sys.executable) if inside else sys.executable
