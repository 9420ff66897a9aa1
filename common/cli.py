"""The one way to write a command's main: bad input ends in one line on stderr and exit status 2,
a failure of the work itself in one line and exit status 1, never a traceback.

    @command
    def main(argv: list[str]) -> int:
        args = build_parser().parse_args(argv)
        ...
        return 0

    if __name__ == "__main__":
        sys.exit(main())
"""

import argparse
import atexit
import contextlib
import functools
import gc
import re
import sys
from typing import Callable

from common.dist_env import DistEnv

EXIT_FAILED = 1
EXIT_USAGE = 2
# A worker whose peer died, under make train's launcher on one node: the launcher names the peer.
EXIT_PEER_GONE = 3

# At exit Python's garbage collector walks every object still alive, and with torch loaded (and
# torch._dynamo, which torch.optim imports) that takes 0.5-1 s of every command, the trainer's ranks
# included, to free memory the OS frees anyway. Frozen, they are skipped; atexit handlers (before
# or after this one), flushes and finalizers all still run: freezing only spares the collections.
atexit.register(gc.freeze)


@contextlib.contextmanager
def lasting_imports():
    """For imports whose objects live until exit (torch, torch._dynamo, the trainer): no
    collection walks them while they are made, and frozen at the end of the block, no later full
    collection walks them either (nor, in a forked worker, copies their pages)."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class UsageError(Exception):
    """A problem the user can fix. The message names the problem and the fix."""


class CommandFailed(Exception):
    """The command's own work failed (a benchmark run that crashed): one line, exit status 1."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one UsageError line instead of usage text plus a message.

    A value that reads as a negative number is a value, not an option: argparse knows only -3 and
    -0.5, and called --lr -1e-3 or --ema-decay -Infinity "expected one argument" instead of
    letting the flag's own check name the value."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def command(run: Callable[[list[str]], int]) -> Callable[[list[str] | None], int]:
    """main(argv=None) -> exit status, from run(argv) -> exit status.

    argv defaults to the command line. Under torchrun every rank runs the command, and only the
    first process of each node prints the error: one line on each machine, not one per rank.
    """

    @functools.wraps(run)
    def main(argv: list[str] | None = None) -> int:
        try:
            return run(sys.argv[1:] if argv is None else list(argv))
        except (UsageError, CommandFailed) as exc:
            if DistEnv.from_environ().first_on_node:
                print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_USAGE if isinstance(exc, UsageError) else EXIT_FAILED

    return main
