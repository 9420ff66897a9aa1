"""python -m bench.link: steps/s of two machines joined by a 10 Gbit/s, 1 Gbit/s and 100 Mbit/s link, against one.

The two "machines" are network namespaces of this one, joined by a veth pair whose rate tc's
tbf limits in each direction (tests/netns.py; root only). Each runs one rank under its own
torchrun (NNODES=2 x NPROC=1), with what the c10d rendezvous and gloo need where the hostname
resolves to loopback: --local-addr, is_host and GLOO_SOCKET_IFNAME. The reference is NPROC=2 on
one machine. Every rank has one thread (OMP_NUM_THREADS=1): the two machines share this one's cores.

Each job (bench.link_worker) times the collectives of a step alone, then the trainer's step
without and with --grad-compression bf16, in an order that alternates by round. --rounds repeats
every job and each row keeps its fastest round, every round's figure beside it. A one-process job
first times the compute constants of the scaling model (bench.scaling), which this prints too.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from bench import scaling
from bench.link_report import ONE_MACHINE, bits_per_s, link_table, tbf_burst
from bench.processes import REPO_ROOT, TORCHRUN, BenchFailure, run_module
from bench.run import cpu_name, progress
from bench.timing import add_step_flags, check_out_file, check_step_flags, fastest_round, warn_if_busy
from common.cli import OneLineParser, UsageError, command
from common.files import atomic_write
from tests import netns
from trainer.config import GRAD_COMPRESSIONS
from trainer.data import resolve_corpus
from trainer.distributed import machine_cores

RDZV_PORT = 29531
# A job that takes longer has hung (a rendezvous that never completes): stop it and say so.
JOB_TIMEOUT_S = 600


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="python -m bench.link", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--rates", default="10gbit,1gbit,100mbit",
                   help="comma-separated link rates as tc writes them (default 10gbit,1gbit,100mbit)")
    p.add_argument("--out", default="bench/link.json", help="JSON results file (default bench/link.json)")
    add_step_flags(p, warmup=2, steps=8, what="job and compression", rounds=2)
    return p


def parse_rates(text: str) -> list[str]:
    rates = [part.strip() for part in text.split(",")]
    for rate in rates:
        try:
            bits_per_s(rate)
        except ValueError:
            raise UsageError(f"--rates: {rate!r} is not a link rate: write rates as tc does, e.g. "
                             "--rates 10gbit,1gbit,100mbit (RATES= for make)") from None
    return rates


def worker_args(data: str, warmup: int, steps: int, result: Path, round_number: int) -> list:
    # The second compression of a job runs after the first has warmed the process: alternate them.
    order = GRAD_COMPRESSIONS if round_number % 2 else GRAD_COMPRESSIONS[::-1]
    return ["-m", "bench.link_worker", "--data", data, "--warmup", warmup, "--steps", steps, "--result", result,
            "--compressions", ",".join(order)]


def one_machine_job(args: list) -> None:
    run_module(*TORCHRUN, "--standalone", "--nproc-per-node=2", *args,
               what="the NPROC=2 job on one machine", OMP_NUM_THREADS=1)


def node_command(host: netns.Host, master: netns.Host, args: list) -> list[str]:
    """torchrun on `host` as one of two nodes: its own address for the workers' store
    (--local-addr), the store hosted by the master's node (is_host), gloo on the veth."""
    return host.command([sys.executable, "-m", *TORCHRUN, "--nnodes=2", "--nproc-per-node=1",
                         "--rdzv-backend=c10d", f"--rdzv-endpoint={master.address}:{RDZV_PORT}",
                         "--rdzv-id=bench-link", f"--rdzv-conf=is_host={int(host == master)}",
                         f"--local-addr={host.address}", *args])


def two_machine_job(rate: str, args: list, logs: Path) -> None:
    with netns.two_hosts(rate=rate, burst=tbf_burst(rate)) as hosts:
        jobs = []
        for host in hosts:
            log = (logs / f"{host.namespace}.log").open("w")
            env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME=host.interface,
                       PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
            jobs.append((subprocess.Popen(node_command(host, hosts[0], args), env=env, stdout=log,
                                          stderr=subprocess.STDOUT), log))
        failed = [job for job, log in jobs if wait(job) != 0]
        for _, log in jobs:
            log.close()
        if failed:
            for host in hosts:
                sys.stderr.write((logs / f"{host.namespace}.log").read_text()[-3000:])
            raise BenchFailure(f"the two-machine job at {rate} failed (the nodes' output is above)")


def wait(job: subprocess.Popen) -> int:
    try:
        return job.wait(timeout=JOB_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        job.kill()  # two_hosts removes the namespace and everything still in it
        return job.wait()


def run_job(link: str, data: str, warmup: int, steps: int, round_number: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        result = Path(tmp) / "result.json"
        args = worker_args(data, warmup, steps, result, round_number)
        if link == ONE_MACHINE:
            one_machine_job(args)
        else:
            two_machine_job(link, args, Path(tmp))
        return json.loads(result.read_text())


def rows_of(jobs: dict[str, list[dict]]) -> list[dict]:
    """One row per link and compression: the fastest round's step, every round's steps/s, the
    collectives of that link (their fastest round: the link at its best), the losses."""
    rows = []
    for link, rounds in jobs.items():
        collectives = {name: min(r["collectives"][name] for r in rounds) for name in rounds[0]["collectives"]}
        for compression in GRAD_COMPRESSIONS:
            best = fastest_round([r["training"][compression] for r in rounds])
            rows.append({"link": link, "compression": compression, **best, "collectives": collectives})
    return rows


def measure(rates: list[str], data: str, warmup: int, steps: int, rounds: int) -> dict:
    cores = machine_cores()
    busy = warn_if_busy(cores)
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        progress("the compute of one rank (one process, one thread), batches of 32, 16 and 8")
        result = Path(tmp) / "compute.json"
        run_module("bench.link_worker", "--compute", "--data", data, "--warmup", warmup, "--steps", steps,
                   "--result", result, what="the compute job", OMP_NUM_THREADS=1)
        compute = json.loads(result.read_text())
    links = [ONE_MACHINE, *rates]
    jobs: dict[str, list[dict]] = {link: [] for link in links}
    for r in range(1, rounds + 1):
        # Other processes come and go over minutes: the order turns round every round, so that a
        # busy spell does not always fall on the same links.
        for link in links if r % 2 else links[::-1]:
            progress(f"round {r}/{rounds}, {link if link == ONE_MACHINE else 'two machines at ' + link}: "
                     f"the collectives, then {warmup} + {steps} steps without and with bf16 compression")
            jobs[link].append(run_job(link, data, warmup, steps, r))
    return {
        "machine": {"cores": cores, "cpu": cpu_name(), "platform": platform.platform(), "torch": torch.__version__,
                    "busy_cores_at_start": busy},
        "setup": {"warmup_steps": warmup, "timed_steps": steps, "rounds": rounds, "rates": rates,
                  "threads_per_rank": 1, "world_size": 2},
        "compute": compute,
        "rows": rows_of(jobs),
        "muon_stacks": jobs[ONE_MACHINE][0]["muon_stacks"],
    }


@command
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    rates = parse_rates(args.rates)
    check_step_flags(args)
    check_out_file(Path(args.out), "LINK_OUT")
    why = netns.unavailable()
    if why:
        raise UsageError(f"the two machines cannot be made: {why}")
    data = str(resolve_corpus(args.data, download=True))
    results = measure(rates, data, args.warmup, args.steps, args.rounds)
    results["model"] = scaling.fit(results)
    atomic_write(Path(args.out), lambda f: f.write(json.dumps(results, indent=1).encode()))
    print(link_table(results))
    print()
    print(scaling.model_report(results["model"]))
    print(f"\nwritten to {args.out}; python -m bench.scaling {args.out} --plot PNG draws the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
