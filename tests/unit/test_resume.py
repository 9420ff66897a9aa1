"""trainer.resume: the command that resumes a run, in the form that started it, from its configuration."""

import shlex
import sys

from common.dist_env import DistEnv
from trainer.config import read_command_line
from trainer.resume import resume_command

COMMAND_LINE = read_command_line(["--out", "my runs", "--steps", "300", "--resume", "old.pt", "--no-export"])


def trainer_flags(words: list[str]) -> list[str]:
    return words[words.index("trainer") + 1:]


def test_make_train_resumes_with_its_variables_and_the_flags_in_args():
    command = resume_command(COMMAND_LINE, None, {"make": ["NPROC=2", "MAX_RESTARTS=1"]})
    words = shlex.split(command)
    assert words[:5] == ["make", "train", "NPROC=2", "MAX_RESTARTS=1", "OUT=my runs"]
    assert shlex.split(words[5].removeprefix("ARGS=")) == ["--steps", "300", "--no-export", "--resume"]


def test_the_launcher_resumes_with_its_options():
    words = shlex.split(resume_command(COMMAND_LINE, None, {"launch": ["--nproc=2"]}))
    assert words[1:5] == ["-m", "trainer.launch", "--nproc=2", "--"]
    assert words[5:] == ["--out", "my runs", "--steps", "300", "--no-export", "--resume"]


def test_python_and_torchrun_resume_with_the_run_own_flags_and_a_plain_resume():
    words = shlex.split(resume_command(COMMAND_LINE, DistEnv(), None))
    assert words[0].endswith("python") or words[0] == sys.executable
    assert words[1:3] == ["-m", "trainer"]
    assert read_command_line(trainer_flags(words))["resume"] == ""  # the run's own checkpoint, not old.pt
    torchrun = DistEnv(world_size=4, local_world_size=4, run_id="x")
    words = shlex.split(resume_command(COMMAND_LINE, torchrun, None))
    assert words[0].endswith("torchrun") and words[1:3] == ["--standalone", "--nproc-per-node=4"]
    assert trainer_flags(words) == ["--out", "my runs", "--steps", "300", "--no-export", "--resume"]


def test_several_nodes_get_the_trainer_flags_to_add_to_their_own_torchrun_command():
    command = resume_command(COMMAND_LINE, DistEnv(world_size=4, local_world_size=2, run_id="x"), None)
    assert command.startswith("on each of the 2 nodes, your torchrun command")
