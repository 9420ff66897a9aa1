"""The one timing rule every training benchmark follows: untimed warm-up steps, then timed steps."""

import argparse
import time
from typing import Callable

from trainer.errors import UsageError


def time_steps(step: Callable[[int], object], warmup: int, steps: int,
               sync: Callable[[], None] = lambda: None) -> dict:
    """Run step(1..warmup) untimed, then time step(warmup+1..warmup+steps).

    `sync` runs before the clock starts and before it stops: under DDP a barrier, so the
    time covers every rank's steps and not only the fastest rank's.
    """
    for i in range(1, warmup + 1):
        step(i)
    sync()
    start = time.perf_counter()
    for i in range(warmup + 1, warmup + steps + 1):
        step(i)
    sync()
    seconds = time.perf_counter() - start
    return {"steps_per_s": steps / seconds, "ms_per_step": 1000 * seconds / steps}


def add_step_flags(parser: argparse.ArgumentParser, warmup: int, steps: int, what: str) -> None:
    """--data, --warmup and --steps, as every bench command takes them; `what` names the timed unit."""
    parser.add_argument("--data", help="UTF-8 corpus; default data/tinyshakespeare.txt, downloaded if missing")
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps per {what} (default {steps})")


def check_step_flags(args: argparse.Namespace) -> None:
    if args.warmup < 0 or args.steps < 1:
        raise UsageError("--warmup must not be negative and --steps must be at least 1")
