"""The one timing rule every training benchmark follows: untimed warm-up steps, then timed steps."""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

from common import defaults
from common.cli import OneLineParser, UsageError
from common.files import check_writable


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


def warn_if_busy(cores: int, seconds: float = 0.5) -> float:
    """How many cores other processes keep busy now; a warning when it is more than half of them.

    Busy cores make every figure low and noisy, and MFU can even pass 100%: four ranks win
    more CPU time from the other processes than the two-thread peak measurement did. Measured
    over `seconds` from /proc/stat, so a job that has just ended does not count; where there is
    no /proc/stat (macOS), the 1-minute load average stands in, which still counts it.
    """
    before = cpu_jiffies()
    if before is None:
        busy = os.getloadavg()[0]
        what = f"load average {busy:.1f} on {cores} cores"
    else:
        time.sleep(seconds)
        busy = busy_cores(before, cpu_jiffies(), cores)
        what = f"{busy:.1f} of {cores} cores busy"
    if busy > cores / 2:
        print(f"warning: {what} before the bench: other processes are running, so these figures will be low "
              "and noisy; run it on an idle machine", file=sys.stderr, flush=True)
    return busy


def cpu_jiffies(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(busy, all) clock ticks of every CPU since boot, from the first line of /proc/stat."""
    try:
        ticks = [int(field) for field in stat.read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    if len(ticks) < 5:
        return None
    # user nice system idle iowait irq softirq steal: idle and iowait are the idle ones
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def busy_cores(before: tuple[int, int], after: tuple[int, int], cores: int) -> float:
    """The mean number of busy cores between two cpu_jiffies readings."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return cores * busy / total if total > 0 else 0.0


def fastest_round(rounds: list[dict]) -> dict:
    """The fastest of a row's rounds, with every round's steps/s beside it.

    Shared and virtual machines have slow spells that last minutes (the 2-core EPYC of the README
    does): a run only ever loses speed to them, never gains it, so the fastest round is the closest
    to what the code can do, as timeit takes the fastest repeat. Every row, the textbook loop's
    included, gets the same number of rounds, taken in turn, so that a spell does not fall on one
    row alone.
    """
    fastest = max(rounds, key=lambda r: r["steps_per_s"])
    return {**fastest, "steps_per_s_by_round": [r["steps_per_s"] for r in rounds]}


def add_step_flags(parser: argparse.ArgumentParser, warmup: int, steps: int, what: str,
                   rounds: int | None = None) -> None:
    """--data, --warmup and --steps, as every bench command takes them; `what` names the timed unit.
    With `rounds`, also --rounds, for the commands that time several rows (see fastest_round)."""
    parser.add_argument("--data", help=defaults.CORPUS_HELP)
    parser.add_argument("--warmup", type=int, default=warmup, help=f"untimed steps first (default {warmup})")
    parser.add_argument("--steps", type=int, default=steps, help=f"timed steps per {what} (default {steps})")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds, help="times every row this many times, in turn, "
                            f"and keeps each row's fastest (default {rounds})")


def check_step_flags(args: argparse.Namespace) -> None:
    if args.warmup < 0 or args.steps < 1:
        raise UsageError("--warmup must not be negative and --steps must be at least 1")
    if getattr(args, "rounds", 1) < 1:
        raise UsageError(f"--rounds {args.rounds}: at least 1 round is needed: write e.g. --rounds 3 "
                         "(ROUNDS= for make)")


def check_out_file(out: Path, make_variable: str) -> None:
    """Fail now, not after minutes of measuring, when the results file `out` cannot be written."""
    if out.is_dir():
        raise UsageError(f"--out {out} is a directory: name a file, e.g. --out {out / 'results.json'} "
                         f"({make_variable}= for make)")
    try:
        check_writable(out.parent)
    except OSError as exc:
        raise UsageError(f"cannot write {out} ({exc.strerror}): choose a writable path with --out "
                         f"({make_variable}= for make)") from None


def parse_step_flags(doc: str, argv: list[str], warmup: int, steps: int, what: str,
                     rounds: int | None = None) -> argparse.Namespace:
    """The command line of a bench command that takes the step flags only. `doc` is its module
    docstring, whose first line reads "python -m bench.x: what it measures"."""
    prog, description = doc.splitlines()[0].split(": ", 1)
    parser = OneLineParser(prog=prog, description=description)
    add_step_flags(parser, warmup, steps, what, rounds)
    args = parser.parse_args(argv)
    check_step_flags(args)
    return args
