"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import gc
import sys

from common.cli import command
from trainer.config import parse_config


@command
def main(argv: list[str]) -> int:
    cfg = parse_config(argv)
    from trainer.train import run  # after parsing, so --help answers without importing torch

    # torch's objects live until exit: frozen, the collector's full passes skip them (0.2 s of the
    # imports still to come, torch._dynamo's and matplotlib's).
    gc.freeze()
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
