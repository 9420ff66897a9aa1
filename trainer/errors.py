"""Bad input ends in one line on stderr and exit status 2, never a traceback."""

import argparse
import sys
from typing import Callable


class UsageError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""


EXIT_USAGE = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one UsageError line instead of usage text plus a message."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def report_usage_errors(body: Callable[[], int], show: bool = True) -> int:
    """Run a command's body; a UsageError becomes `error: ...` on stderr and exit status 2."""
    try:
        return body()
    except UsageError as exc:
        if show:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_USAGE
