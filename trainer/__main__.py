"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import gc
import sys

from common.cli import command
from common.dist_env import DistEnv
from trainer.config import read_command_line


@command
def main(argv: list[str]) -> int:
    command_line = read_command_line(argv)
    if command_line.get("dry_run"):
        from trainer.setup import check_run  # after parsing, so --help answers without importing torch

        check_run(command_line, DistEnv.from_environ())
        return 0
    from trainer.train import run

    # torch's objects live until exit: frozen, the collector's full passes skip them (0.2 s of the
    # imports still to come, torch._dynamo's and matplotlib's).
    gc.freeze()
    return run(command_line)


if __name__ == "__main__":
    sys.exit(main())
