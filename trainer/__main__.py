"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import gc
import sys

from common.cli import command
from common.dist_env import DistEnv
from trainer.config import parse


@command
def main(argv: list[str]) -> int:
    cfg, options = parse(argv)  # before torch is imported: --help and bad flags answer at once
    if options.dry_run:
        from trainer.setup import check_run

        check_run(cfg, options, DistEnv.from_environ())
        return 0
    from trainer.train import run

    # torch's objects live until exit: frozen, the collector's full passes skip them (0.2 s of the
    # imports still to come, torch._dynamo's and matplotlib's).
    gc.freeze()
    return run(cfg, options)


if __name__ == "__main__":
    sys.exit(main())
