"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import gc
import importlib
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
    # The imports make objects that live until exit: no collection walks them while they are
    # made, and frozen, the collector's later full passes skip them. torch._dynamo is one of them:
    # DDP and torch.optim import it in any case.
    gc.disable()
    from trainer.train import run

    importlib.import_module("torch._dynamo")
    gc.freeze()
    gc.enable()
    return run(cfg, options)


if __name__ == "__main__":
    sys.exit(main())
