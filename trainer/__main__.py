"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import sys

from common.cli import command
from trainer.config import parse_config


@command
def main(argv: list[str]) -> int:
    cfg = parse_config(argv)
    from trainer.train import run  # after parsing, so --help answers without importing torch

    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
