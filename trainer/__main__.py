"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import os
import sys

from trainer.config import parse_config
from trainer.errors import EXIT_USAGE, UsageError


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_config(argv)
        from trainer.train import run  # after parsing, so --help answers without importing torch

        return run(cfg)
    except UsageError as exc:
        if os.environ.get("RANK", "0") == "0":  # one line from the whole job, not one per rank
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
