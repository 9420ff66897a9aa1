"""The one timing rule every training benchmark follows: untimed warm-up steps, then timed steps."""

import time
from typing import Callable


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
