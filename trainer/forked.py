"""A rank forked by make train's launcher: `python -u -m trainer FLAGS` without its imports.

torchrun's agent runs in the launcher's process and forks each worker from it (a function
entrypoint, start method fork) once `preload` has imported the trainer there: a worker that
`torchrun -m trainer` starts imports torch and the trainer before anything else, and a forked
one starts with them. `run` then starts the worker as torchrun's own workers start.
"""

import ctypes
import os
import signal
import sys
import time
import traceback

from common.cli import EXIT_PEER_GONE
from trainer.__main__ import main

# The signal handlers a Python process starts with: a forked worker drops the agent's, which
# raise torchrun's SignalException, for these.
FRESH_HANDLERS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL,
                  signal.SIGHUP: signal.SIG_DFL, signal.SIGQUIT: signal.SIG_DFL}
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1
PEER_GONE_LINGER_S = 1.0


def preload() -> None:
    """Import the trainer in the launcher, so that each forked worker starts with it, and
    torch._dynamo, which each worker would import as it wraps its model in DDP: imported once
    here, the workers share its pages, and at more workers than cores they no longer import it in
    turn."""
    import torch._dynamo  # noqa: F401

    import trainer.train  # noqa: F401


def run(flags: list[str]) -> None:
    """One rank, forked by torchrun's agent, with the trainer's exit status as its own.

    It starts as torchrun's own workers do: in a session of its own (a Ctrl-C reaches it once,
    passed on by the agent), with Python's signal handlers, and without torch.multiprocessing's
    SIGINT on the launcher's death (the trainer watches for that itself). Its name in ps and
    top, and in /proc/PID/comm, is "rank N": its command line is the launcher's."""
    os.setsid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, 0)
    libc.prctl(PR_SET_NAME, f"rank {os.environ['RANK']}".encode())
    for signum, handler in FRESH_HANDLERS.items():
        signal.signal(signum, handler)
    sys.stdout.reconfigure(line_buffering=True)  # python -u: each line as it is printed
    try:
        status = main(flags)
    except KeyboardInterrupt:
        status = 128 + signal.SIGINT
    except Exception:  # torch.multiprocessing would put the traceback in a file, unseen
        traceback.print_exc()
        status = 1
    if status == EXIT_PEER_GONE:
        # The agent reports one failed worker, the first it finds in rank order, and the launcher
        # names the rank that died: this survivor ends after the agent has seen it (it looks every
        # 0.1 s, and then ends this process).
        time.sleep(PEER_GONE_LINGER_S)
    if status:
        sys.exit(status)
