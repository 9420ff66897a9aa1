"""make train's launcher: checks the make variables and the run (setup.check_run), then runs torchrun in-process.

    python -m trainer.launch [--nproc N] [--nnodes N] [--node-rank R] [--master-addr A] [--local-addr A]
                             [--master-port P] [--max-restarts K] [--rdzv-timeout S] -- TRAINER FLAGS

What it adds to a bare `torchrun -m trainer` (which keeps working):
- NPROC, NNODES and the rest checked first: one line and exit status 2, nothing started;
- with NNODES > 1, this node's address and interface towards MASTER_ADDR given to torchrun
  (--local-addr, is_host) and gloo (GLOO_SOCKET_IFNAME), trainer.network has why; one line at
  once that says which node this is, its address and the rendezvous it waits for; a MASTER_ADDR
  that no interface routes to, NODE_RANK=0 away from MASTER_ADDR and a MASTER_PORT taken by
  another program refused at once; a rendezvous that times out one line that says what to check
  (exit status 1);
- with NNODES=1, a loopback network that does not work refused at once (the ranks meet on it);
- Ctrl-C, SIGTERM and SIGHUP: torchrun passes the signal on to the workers, which finish their step,
  save a checkpoint and print the command that resumes the run; torchrun's SignalException traceback is
  not shown, and the exit status is 128 + the signal number;
- a worker that fails has printed its own line; its exit status is passed on without torchrun's
  ChildFailedError report;
- the workers are forked from this process once it has imported torch and the trainer (torchrun's
  function entrypoint, start method fork), where a worker that `torchrun -m trainer` starts
  imports them first; each then starts as torchrun's own would (`trainer.forked`);
- no torchrun log folder (/tmp/torchelastic_*, one per run, never removed).
"""

import importlib
import logging
import os
import signal
import sys
import uuid
from contextlib import contextmanager

from common.cli import EXIT_FAILED, EXIT_PEER_GONE, OneLineParser, UsageError, command, lasting_imports
from common.dist_env import DistEnv
from trainer.config import parse
from trainer.network import check_loopback, check_port, gloo_interface, node_network
from trainer.resume import NODE_ENV, RESUME_ENV, STOP_SIGNALS, resume_command

DEFAULT_RDZV_TIMEOUT = 300


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m trainer.launch", description=__doc__.splitlines()[0])
    # Strings, checked below, so that a bad value is named by its make variable.
    p.add_argument("--nproc", default="1", help="processes on this machine (NPROC)")
    p.add_argument("--nnodes", default="1", help="machines in the run (NNODES)")
    p.add_argument("--node-rank", default="0", help="this machine's index (NODE_RANK)")
    p.add_argument("--master-addr", default="127.0.0.1", help="address of node 0 (MASTER_ADDR)")
    p.add_argument("--local-addr", default="",
                   help="this machine's address for the other nodes (LOCAL_ADDR; empty: the route to MASTER_ADDR's)")
    p.add_argument("--master-port", default="29500", help="rendezvous port on node 0 (MASTER_PORT)")
    p.add_argument("--max-restarts", default="0", help="times torchrun restarts failed workers (MAX_RESTARTS)")
    p.add_argument("--rdzv-timeout", default=str(DEFAULT_RDZV_TIMEOUT),
                   help="seconds to wait for every node to join (RDZV_TIMEOUT)")
    p.add_argument("--make-pid", type=int, help="the make that runs this (make train passes it)")
    p.add_argument("trainer_flags", nargs="*", help="flags for python -m trainer, after --")
    return p


def whole_number(value: str, variable: str, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high], or a UsageError naming the make variable."""
    number = int(value) if value.strip().lstrip("-").isdigit() else None
    if number is None or number < low or (high is not None and number > high):
        bound = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise UsageError(f"{variable} must be a whole number {bound}, got {value!r}: "
                         f"e.g. make train {variable}={max(low, 1) if high is None else low}")
    return number


class Launch:
    def __init__(self, opts):
        self.nproc = whole_number(opts.nproc, "NPROC", 1)
        self.nnodes = whole_number(opts.nnodes, "NNODES", 1)
        self.node_rank = whole_number(opts.node_rank, "NODE_RANK", 0, self.nnodes - 1)
        self.master_port = whole_number(opts.master_port, "MASTER_PORT", 1, 65535)
        self.max_restarts = whole_number(opts.max_restarts, "MAX_RESTARTS", 0)
        self.rdzv_timeout = whole_number(opts.rdzv_timeout, "RDZV_TIMEOUT", 1)
        if os.environ.get("OMP_NUM_THREADS"):  # libgomp would warn about 0 or "abc" and run one thread
            whole_number(os.environ["OMP_NUM_THREADS"], "OMP_NUM_THREADS", 1)
        self.master_addr, self.local_addr = opts.master_addr, opts.local_addr
        self.network = node_network(self.master_addr, self.local_addr, self.node_rank) if self.nnodes > 1 else None
        if self.nnodes == 1:
            check_loopback()
        self.make_pid = opts.make_pid
        self.flags = opts.trainer_flags
        self.endpoint = f"{self.master_addr}:{self.master_port}"
        # The trainer's flags, parsed once here (bad ones are one line now, before anything starts):
        # the run's checks read them, and the workers get them as they are. The resume command is
        # built here, where the make variables are known.
        self.cfg, self.options = parse(self.flags)
        self.resume_command = resume_command(self.options.command_line, None, self.started_as())

    def started_as(self) -> dict:
        """How this launcher was started, for the resume command: its make variables under make
        train, else its own options."""
        if self.make_pid is None:
            return {"launch": self.launcher_options()}
        words = [f"NPROC={self.nproc}"]
        if self.nnodes > 1:
            words += [f"NNODES={self.nnodes}", f"NODE_RANK={self.node_rank}", f"MASTER_ADDR={self.master_addr}",
                      f"MASTER_PORT={self.master_port}"]
            if self.local_addr:
                words.append(f"LOCAL_ADDR={self.local_addr}")
        if self.max_restarts:
            words.append(f"MAX_RESTARTS={self.max_restarts}")
        return {"make": words}

    def launcher_options(self) -> list[str]:
        local = [f"--local-addr={self.local_addr}"] if self.local_addr else []
        return [f"--nproc={self.nproc}", f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
                f"--master-addr={self.master_addr}", *local, f"--master-port={self.master_port}",
                f"--max-restarts={self.max_restarts}", f"--rdzv-timeout={self.rdzv_timeout}"]

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1:  # what torchrun --standalone sets
            rendezvous = ["--rdzv-backend=c10d", "--rdzv-endpoint=localhost:0", f"--rdzv-id={uuid.uuid4()}"]
        else:
            # read_timeout bounds each store operation, join_timeout the wait for all nodes. Node 0
            # hosts the store (is_host): torchrun's own guess compares MASTER_ADDR with the host
            # name's addresses, which are loopback ones on many machines, and then nobody hosts it.
            # --local-addr is where the other nodes reach this one (else the host name again).
            # NODE_RANK is passed on, but the c10d rendezvous numbers the nodes itself.
            rendezvous = [f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}", "--rdzv-backend=c10d",
                          f"--rdzv-endpoint={self.endpoint}", "--rdzv-id=shakespeare-gpt",
                          f"--rdzv-conf=join_timeout={self.rdzv_timeout},read_timeout={self.rdzv_timeout},"
                          f"is_host={int(self.node_rank == 0)}", f"--local-addr={self.network.address}"]
        # torchrun's parser wants a program: the workers run trainer.forked with the flags instead.
        # No log folder: torchrun would make a /tmp/torchelastic_* one for every run and never remove
        # it, and the workers' output goes to the terminal, their errors in their own lines.
        return [*rendezvous, f"--nproc-per-node={self.nproc}", f"--max-restarts={self.max_restarts}",
                f"--log-dir={os.devnull}", "-m", "trainer"]

    # -- the steps ------------------------------------------------------------------------------

    def run(self) -> int:
        with lasting_imports():
            quiet_agent_warnings()  # before anything loads torch
            import torch

        # The launcher's torch work (the checks of a checkpoint to resume) runs on one thread, so
        # that OpenMP starts no thread pool here for the forked workers to inherit broken: libgomp's
        # pool does not survive a fork.
        torch.set_num_threads(1)
        from trainer.distributed import machine_cores

        # torchrun would force 1 thread per worker: share this machine's cores among them instead.
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, machine_cores() // self.nproc)))
        os.environ[RESUME_ENV] = self.resume_command
        if self.network:
            os.environ[NODE_ENV] = f"node {self.node_rank} at {self.network.address}"
        self.check_run()
        if self.nnodes > 1:
            if self.node_rank == 0:
                check_port(self.master_port)
            print(self.start_line(gloo_interface(self.network)), flush=True)
        return self.torchrun()

    def start_line(self, interface: str) -> str:
        """Which node this is, where the others reach it, and the rendezvous it waits for."""
        hosting = ", hosting the rendezvous" if self.node_rank == 0 else ""
        return (f"node {self.node_rank} of {self.nnodes} at {self.network.address} on {interface}{hosting}: "
                f"waiting for {self.nnodes} nodes at {self.endpoint}, up to {self.rdzv_timeout} s (RDZV_TIMEOUT=)")

    def check_run(self) -> None:
        """Every check of the trainer's flags, corpus and --out, once, before any worker starts, as
        this node's first rank: the first process of every node checks its --out, which it writes
        (or its node's first does, for nodes on one machine that share one --out)."""
        from trainer.setup import check_run  # after quiet_agent_warnings: it loads torch

        check_run(self.cfg, self.options, DistEnv(rank=self.node_rank * self.nproc,
                                                  world_size=self.nproc * self.nnodes, local_world_size=self.nproc))

    def torchrun(self) -> int:
        with lasting_imports():  # the agent's and the workers' code, imported once for every fork
            from torch.distributed.elastic.multiprocessing import SignalException
            from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
            from torch.distributed.elastic.rendezvous import RendezvousConnectionError, RendezvousTimeoutError
            from torch.distributed.launcher.api import elastic_launch
            from torch.distributed.run import config_from_args, parse_args

            from trainer import forked

            forked.preload()

        # torchrun's warnings on a signal ("Received 2 death signal, shutting down workers") would
        # come after the workers' resume line; the workers say what happened themselves. Each of
        # its loggers has its own level, so the parent's level does not reach them.
        for name in list(logging.root.manager.loggerDict):
            if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
                logging.getLogger(name).setLevel(logging.ERROR)
        # ... and its error on a failed worker ("failed (exitcode: -9) local_rank: 1") would come
        # before worker_failed's line, which says the same.
        logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
        logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)  # "Terminating process ..."
        config, _, _ = config_from_args(parse_args(self.torchrun_args()))
        config.start_method = "fork"
        try:
            elastic_launch(config, entrypoint=forked.run)(self.flags)
        except SignalException as exc:
            return self.stopped_by(exc.sigval)
        except ChildFailedError as exc:
            return self.worker_failed(exc)
        except RendezvousTimeoutError:
            return fail(f"not all {self.nnodes} nodes joined at {self.endpoint} within {self.rdzv_timeout} s: "
                        f"start make train on every node with NNODES={self.nnodes}, the same MASTER_ADDR and "
                        "MASTER_PORT and its own NODE_RANK; check that node 0 is reachable at that address and "
                        "port (firewall); or wait longer with RDZV_TIMEOUT=")
        except RendezvousConnectionError as exc:
            if raised_in(exc, "num_nodes_waiting"):
                # The node that hosts the store went away while the workers trained: they have said
                # so, and printed the resume command; torchrun has stopped them.
                return EXIT_FAILED
            return fail(f"no rendezvous answered at {self.endpoint} within {self.rdzv_timeout} s: check that "
                        "node 0 runs make train with the same MASTER_ADDR and MASTER_PORT, that the port is "
                        "reachable from here (firewall), and that no other program holds MASTER_PORT on node 0")
        return 0

    def stopped_by(self, signum: int) -> int:
        """The workers got the signal from torchrun, saved a checkpoint and printed the resume command."""
        if self.make_pid is not None and self.make_pid == os.getppid():
            # make prints "make: *** [Makefile: train] Error 130" after a failed recipe, which
            # would bury the resume command. Ended by the signal itself (the terminal's Ctrl-C
            # already reached it; a SIGTERM may not have), make exits 128 + N and prints nothing.
            for handled in STOP_SIGNALS:
                signal.signal(handled, signal.SIG_IGN)  # make passes a SIGTERM on to us
            os.kill(self.make_pid, signum)
            return 0
        return 128 + signum

    def worker_failed(self, exc) -> int:
        """One line for the failure that caused the others. The agent reports the first failed
        worker it finds and stops the rest; the survivors of a rank that died end after it has
        seen that rank (trainer.forked), so the dead rank is the one named."""
        rank, failure = exc.get_first_failure()
        if failure.exitcode < 0:
            name = signal.Signals(-failure.exitcode).name
            return fail(f"rank {rank} (pid {failure.pid}) was killed by {name} (out of memory? see dmesg); "
                        f"the last checkpoint is intact; resume with: {self.resume_command}")
        if failure.exitcode - 128 in STOP_SIGNALS:
            return self.stopped_by(failure.exitcode - 128)  # the workers were signalled, not torchrun
        if failure.exitcode == EXIT_PEER_GONE:  # the rank that died was not seen to end
            return fail(f"rank {rank} lost its connection to another rank, which died; the last checkpoint is "
                        f"intact; resume with: {self.resume_command}")
        return failure.exitcode  # the worker has printed its own line


def quiet_agent_warnings() -> None:
    """torchrun's agent runs in this process, and its C++ warnings (a broken connection to a store
    that has gone, with a 30-line stack) repeat what the launcher and the workers say in a line:
    torch is loaded here with TORCH_CPP_LOG_LEVEL=ERROR, which c10 reads once as it loads; the
    workers, forked from here, share it. A level the user set wins."""
    if "TORCH_CPP_LOG_LEVEL" in os.environ:
        return
    with environment(TORCH_CPP_LOG_LEVEL="ERROR"):
        importlib.import_module("torch")


def raised_in(exc: BaseException, function: str) -> bool:
    """Whether `function` is on the traceback of `exc`."""
    frame = exc.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == function:
            return True
        frame = frame.tb_next
    return False


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return EXIT_FAILED


@contextmanager
def environment(**values: str):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@command
def main(argv: list[str]) -> int:
    launch = Launch(build_parser().parse_args(argv))
    try:
        return launch.run()
    except KeyboardInterrupt:  # Ctrl-C before torchrun took over the signals: no worker ran yet
        print("interrupted before training started", file=sys.stderr, flush=True)
        return launch.stopped_by(signal.SIGINT)


if __name__ == "__main__":
    sys.exit(main())
