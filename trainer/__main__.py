"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import sys

from common.cli import command, lasting_imports
from common.dist_env import DistEnv
from trainer.config import parse


@command
def main(argv: list[str]) -> int:
    cfg, options = parse(argv)  # before torch is imported: --help and bad flags answer at once
    if options.dry_run:
        from trainer.setup import check_run

        check_run(cfg, options, DistEnv.from_environ())
        return 0
    with lasting_imports():
        from trainer.train import run
    return run(cfg, options)


if __name__ == "__main__":
    sys.exit(main())
