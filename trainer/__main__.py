"""python -m trainer [flags]: see --help. Bad input: one line on stderr, exit status 2."""

import os
import sys

from trainer.config import parse_config
from trainer.errors import report_usage_errors


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        cfg = parse_config(argv)
        from trainer.train import run  # after parsing, so --help answers without importing torch

        return run(cfg)

    # One line from the whole job, not one per rank.
    return report_usage_errors(body, show=os.environ.get("RANK", "0") == "0")


if __name__ == "__main__":
    sys.exit(main())
