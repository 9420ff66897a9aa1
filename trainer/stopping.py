"""How a run stops short of its last step, and the one line that says so.

A stop signal (Ctrl-C, kill, the terminal closing) or the launcher's death asks every rank to stop
at the end of the step (`Stopping`); a peer that stops answering or goes away, a loss or weight that
is no longer finite, or a last checkpoint that cannot be written stops the run where it is. Each
cause ends in one line, printed by `Stopping.end`: what happened, what became of the checkpoint
(`Standing`), and what to do next.
"""

import os
import shlex
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common.cli import EXIT_FAILED, EXIT_PEER_GONE
from common.dist_env import DistEnv
from trainer import distributed
from trainer.resume import STOP_SIGNALS, launched_by


class Diverged(Exception):
    """A loss or a weight is no longer finite at `step`: training cannot go on from here."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


@dataclass(frozen=True)
class Standing:
    """Where a run stands when it stops: the step it reached, the step of the last checkpoint it
    wrote (None: none yet), that checkpoint's path, and the command that resumes the run."""

    step: int
    saved_step: int | None
    checkpoint: Path
    resume_command: str

    def checkpoint_state(self) -> str:
        if self.saved_step == self.step:
            return f"checkpoint saved to {self.checkpoint}"
        if self.saved_step is not None:
            return f"the last good checkpoint, {self.checkpoint} at step {self.saved_step}, is kept"
        return f"{self.checkpoint} is left as it was"

    def error(self, what: str, then: str) -> str:
        """The line of a run stopped by a failure: what failed, the checkpoint's state, what to do."""
        return f"error: {what}; {self.checkpoint_state()}; {then}"


# -- the causes: each says its line, its exit status, and which process prints it ----------------


class Cause:
    """Why a run stopped short: its line (`line`), its exit status, the stream and the process that print it."""

    status = EXIT_FAILED
    stream = "stderr"

    def line(self, standing: Standing) -> str:
        raise NotImplementedError

    def speaks(self, env: DistEnv) -> bool:
        """Whether this process prints the line: the node's first process speaks for its node."""
        return env.first_on_node


@dataclass(frozen=True)
class StopSignal(Cause):
    """A stop signal (or the launcher's death, as SIGTERM): the ranks stopped together after a step."""

    signum: int
    stream = "stdout"  # it is no error: the run goes on with the resume command

    @property
    def status(self) -> int:
        return 128 + self.signum

    def line(self, standing: Standing) -> str:
        return (f"stopped at step {standing.step}: {standing.checkpoint_state()}\n"
                f"resume with: {standing.resume_command}")


@dataclass(frozen=True)
class Divergence(Cause):
    """Every rank stops at the same step (all see the same global numbers), without a checkpoint."""

    step: int
    what: str
    lr: float
    grad_clip: float

    def line(self, standing: Standing) -> str:
        return standing.error(f"training diverged at step {self.step} ({self.what}), so it stopped",
                              f"try a lower --lr (now {self.lr:g}) or a gradient clip "
                              f"(--grad-clip 1.0, now {self.grad_clip:g})")


@dataclass(frozen=True)
class SilentPeer(Cause):
    """A collective timed out: `rank` did not answer within --timeout."""

    rank: str
    timeout: float

    def line(self, standing: Standing) -> str:
        return standing.error(f"{self.rank} stopped answering: no reply within --timeout {self.timeout:g} s "
                              f"after step {standing.step} (a frozen, swapped-out or unreachable process)",
                              f"resume with: {standing.resume_command}")

    def speaks(self, env: DistEnv) -> bool:
        return True


@dataclass(frozen=True)
class LostPeer(Cause):
    """A collective failed because another rank's connection closed."""

    def line(self, standing: Standing) -> str:
        return standing.error(f"the connection to another rank closed after step {standing.step} (its process "
                              "died or its machine went away: its own output says why)",
                              f"resume with: {standing.resume_command}")

    def speaks(self, env: DistEnv) -> bool:
        return True


@dataclass(frozen=True)
class PeerNamedElsewhere(Cause):
    """A peer failed, and another process names it: make train's launcher, or this node's first process."""

    status = EXIT_PEER_GONE

    def speaks(self, env: DistEnv) -> bool:
        return False


@dataclass(frozen=True)
class LastCheckpointLost(Cause):
    """The last step's checkpoint could not be written (`error` says why): without it the run's end
    is lost, so there is no "done", and nothing is exported from the stale checkpoint."""

    error: str

    def line(self, standing: Standing) -> str:
        return standing.error(f"could not write the last checkpoint {standing.checkpoint} ({self.error}), so the "
                              "run's last steps are lost and nothing was exported",
                              f"free space or fix the permissions, then resume with: {standing.resume_command}")

    def speaks(self, env: DistEnv) -> bool:
        return env.is_main


@dataclass(frozen=True)
class StoppedAfterLastStep(Cause):
    """A stop signal while loss.png and (`export`) the exports were written: the checkpoint is
    complete. `finished`: the writes went on to the end all the same (see Stopping.finish)."""

    signum: int
    export: bool
    finished: bool = False

    @property
    def status(self) -> int:
        return 128 + self.signum

    def line(self, standing: Standing) -> str:
        stopped = f"stopped by {signal.Signals(self.signum).name} after the last step"
        if self.finished:
            what = "the exports" if self.export else "loss.png"
            return f"{stopped}, too late to stop the writes: the checkpoint {standing.checkpoint} and {what} " \
                "are complete"
        what = "the exports were not written (the previous set, if any, stands)" if self.export else \
            "loss.png was not written"
        return (f"{stopped}: the checkpoint {standing.checkpoint} is complete, but {what}; write them with: "
                f"make export CKPT={shlex.quote(str(standing.checkpoint))} (make plot OUT=... for loss.png)")

    def speaks(self, env: DistEnv) -> bool:
        return True  # only the processes that keep the run's files write them


def peer_failure(exc: RuntimeError, env: DistEnv, timeout: float) -> Cause:
    """The cause of a collective that another rank failed (frozen or gone); anything else is raised."""
    silent = distributed.silent_rank(exc, env)
    if silent is None and not distributed.lost_peer(exc):
        raise exc
    return peer_cause(silent, env, timeout, launched_by() is not None)


def peer_cause(silent: str | None, env: DistEnv, timeout: float, launched: bool) -> Cause:
    """Who says that a peer failed. A rank that died on this node is named by make train's launcher
    (`launched`), which sees each of its ranks end: there the survivors say nothing, so a dead peer
    is one line in all. A dead node is named by the first process of each other node, one line on
    each machine. `silent`: the rank that stopped answering, None when its connection closed."""
    if launched and env.world_size > env.local_world_size and not env.first_on_node:
        return PeerNamedElsewhere()  # the first process of this node says it
    if silent is not None:
        return SilentPeer(silent, timeout)
    if launched and env.world_size == env.local_world_size:
        return PeerNamedElsewhere()
    return LostPeer()


# -- the stop requests ------------------------------------------------------------------------


class Stopping:
    """The stop requests of one rank's run, and the line it ends with.

    SIGINT, SIGTERM and SIGHUP (the terminal closed), and the launcher's death, finish the current
    step, save a checkpoint, and stop every rank together (train_step shares `requested`); a
    second signal stops at once."""

    def __init__(self, env: DistEnv):
        self.env = env
        self.signum = 0  # the signal that asked to stop; 0: none

    @property
    def requested(self) -> bool:
        return self.signum > 0

    def request(self, signum: int, frame=None) -> None:
        """The stop signals' handler while training."""
        if self.signum:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def launcher_gone(self, launcher_pid: int) -> None:
        """Called by the watchdog thread: finish this step, save a checkpoint and stop, as on SIGTERM."""
        if self.env.first_on_node:
            print(f"warning: the launcher (torchrun, pid {launcher_pid}) is gone: stopping after this step",
                  file=sys.stderr, flush=True)
        self.signum = self.signum or signal.SIGTERM

    @contextmanager
    def watching(self):
        """While training: the stop signals request a stop, and so does the launcher's death."""
        previous = {signum: signal.signal(signum, self.request) for signum in STOP_SIGNALS}
        stop_watching = watch_launcher(self.launcher_gone)
        try:
            yield
        finally:
            stop_watching()
            # After a stop, one more signal (Ctrl-C reaches a worker twice) ends the process at once;
            # otherwise the handlers from before the run are back.
            for signum, handler in previous.items():
                signal.signal(signum, exit_at_once if self.signum else handler)

    def stop_signal(self) -> StopSignal:
        """The cause of a stop at the end of a step (SIGTERM when a second Ctrl-C cut the step short)."""
        return StopSignal(self.signum or signal.SIGTERM)

    def end(self, cause: Cause, standing: Standing) -> int:
        """Print the one line that says why the run stopped, from the process that speaks for it;
        returns the exit status."""
        if cause.speaks(self.env):
            print(cause.line(standing), file=getattr(sys, cause.stream), flush=True)
        return cause.status

    def finish(self, write: Callable[[], None], standing: Standing, export: bool) -> int:
        """write() (loss.png and the exports, after the last step), which a stop signal cuts short
        with one line; returns the exit status (128 + the signal when cut short)."""
        stopped = []

        def stop(signum, frame):
            if not stopped:  # Ctrl-C comes twice under torchrun (the terminal's, then torchrun's): once is enough
                stopped.append(signum)
                raise StoppedWhileFinishing(signum)

        previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
        try:
            write()
        except BaseException:
            if not stopped:
                raise
            # The handler's StoppedWhileFinishing, or another exception it became on the way (raised
            # in a C extension's import, it is an ImportError): either way the writes stopped there.
            return self.end(StoppedAfterLastStep(stopped[0], export), standing)
        finally:
            for signum in STOP_SIGNALS:
                signal.signal(signum, exit_at_once if stopped else previous[signum])
        if stopped:
            # The handler ran, but its exception never reached here: code in the middle of the
            # writes caught it and went on. The writes are whole (each file is renamed into place).
            return self.end(StoppedAfterLastStep(stopped[0], export, finished=True), standing)
        return 0


class StoppedWhileFinishing(BaseException):
    """A stop signal while loss.png and the exports are written (raised by its handler, so that the
    writes in progress remove their temporary files on the way out)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def exit_at_once(signum, frame):
    """A signal after a stop by signal: the checkpoint is saved and the resume line printed, so the
    process ends here. Ctrl-C reaches a worker twice, from the terminal and passed on by torchrun;
    the second, late under load, would otherwise raise KeyboardInterrupt in interpreter shutdown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


# How often a worker checks that its launcher is still there: it stops within about this long.
LAUNCHER_CHECK_S = 1.0


def watch_launcher(on_gone):
    """Under torchrun, call on_gone(launcher_pid) from a thread once the launcher has died.

    torchrun starts its workers in sessions of their own, so a kill -9 of torchrun reaches no
    worker: without this they would train on, unsupervised, into the same --out. A process
    whose parent dies gets a new parent (init or a subreaper), so its parent pid changes.
    Returns the function that stops the watching (and joins the thread, so that no thread of
    the run outlives it).
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return lambda: None
    launcher = os.getppid()
    stop = threading.Event()

    def watch():
        while not stop.wait(LAUNCHER_CHECK_S):
            if os.getppid() != launcher:
                on_gone(launcher)
                return

    thread = threading.Thread(target=watch, name="launcher-watch", daemon=True)
    thread.start()

    def stop_watching():
        stop.set()
        thread.join()

    return stop_watching
