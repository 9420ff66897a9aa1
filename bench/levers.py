"""python -m bench.levers: what each speed lever is worth, changed one at a time, in steps/s.

Every row times the trainer's own step (Trainer.train_step) on the same 32 x 128 batches as
`python -m bench`, with one thing changed from the default: one process at all cores, the
default dtype (--dtype auto: bf16 matmuls where the CPU has native bf16), dropout 0, freed memory
kept (trainer/memory.py). Each change goes through the trainer's public parameters: a
TrainConfig field, TrainerOptions (torch.compile, DistributedDataParallel's arguments), or a
switch of docs/usage.md (TRAINER_KEEP_MEMORY, TRAINER_PIN_CORES). The last rows run
bench.ddp_worker under torchrun: NPROC=1, and NPROC=4 (one thread per rank) with one DDP
argument, or the pinning of ranks to cores, changed. --rounds (default 3) times every row that
many times, in turn, and keeps each row's fastest round, as `python -m bench` does.
torch.compile's first step takes a minute or more when inductor's cache is cold.
"""

import shutil
import sys
import tempfile
import time

import torch

from bench.report import format_table, rounds_cell
from bench.run import run_ddp
from bench.timing import fastest_round, parse_step_flags, time_steps, warn_if_busy
from common.cli import command
from common.dist_env import DistEnv
from trainer.config import TrainConfig, resolve
from trainer.data import load_corpus, resolve_corpus
from trainer.distributed import PIN_ENV, machine_cores
from trainer.memory import KEEP_MEMORY_ENV
from trainer.train import Trainer, TrainerOptions

COMPILED = TrainerOptions(compile=True)

# name, changes of the trainer's flags' values, threads (None: all cores), TrainerOptions
SINGLE_PROCESS = [
    ("default: 1 process, --dtype auto", {}, None, TrainerOptions()),
    ("--dtype fp32", {"dtype": "fp32"}, None, TrainerOptions()),
    ("1 thread instead of all cores", {}, 1, TrainerOptions()),
    ("dropout 0.1 on the residual branches", {"dropout": 0.1}, None, TrainerOptions()),
    ("torch.compile (inductor)", {}, None, COMPILED),
    ("--dtype fp32, torch.compile (inductor)", {"dtype": "fp32"}, None, COMPILED),
]
UNDER_TORCHRUN = [  # (name, NPROC, DDP options, the workers' extra environment)
    ("NPROC=1 under torchrun: the trainer's", 1, {}, {}),
    ("NPROC=1 under torchrun: glibc's malloc thresholds (TRAINER_KEEP_MEMORY=0)", 1, {}, {KEEP_MEMORY_ENV: "0"}),
    ("DDP NPROC=4: trainer's (bucket view, static graph, pinned)", 4, {}, {}),
    ("DDP NPROC=4: plain DDP()", 4, {"gradient_as_bucket_view": False, "static_graph": False}, {}),
    ("DDP NPROC=4: without static_graph", 4, {"static_graph": False}, {}),
    ("DDP NPROC=4: 1 MB buckets (4 all-reduces per step)", 4, {"bucket_cap_mb": 1}, {}),
    ("DDP NPROC=4: ranks not pinned to cores (TRAINER_PIN_CORES=0)", 4, {}, {PIN_ENV: "0"}),
]


def measure_single(data: str, warmup: int, steps: int) -> list[dict]:
    corpus = load_corpus(data, TrainConfig.block_size)
    rows = []
    for name, changes, threads, options in SINGLE_PROCESS:
        if options.compile and not (shutil.which("c++") or shutil.which("g++")):
            rows.append({"lever": name, "skipped": "no C++ compiler for inductor"})
            continue
        torch.set_num_threads(threads or machine_cores())
        with tempfile.TemporaryDirectory(prefix="bench-levers-") as out:
            cfg, run_options = resolve(dict(data=data, out=out, sample_tokens=0, export=False, **changes))
            trainer = Trainer(cfg, DistEnv(), corpus, options=options, run_options=run_options)
            start = time.perf_counter()
            trainer.train_step(1)  # the first step pays for compilation, where there is any
            first_step_s = time.perf_counter() - start
            speed = time_steps(lambda i: trainer.train_step(i + 1), warmup, steps)
        rows.append({"lever": name, "threads": torch.get_num_threads(), "first_step_s": first_step_s, **speed})
        report_row(rows[-1])
    return rows


def measure_under_torchrun(data: str, warmup: int, steps: int) -> list[dict]:
    rows = []
    for name, nproc, options, environment in UNDER_TORCHRUN:
        result = run_ddp(nproc, data, warmup, steps, options, **environment)
        rows.append({"lever": name, "threads": result["threads_per_rank"], "first_step_s": None, **result})
        report_row(rows[-1])
    return rows


def fastest_lever_round(rounds: list[dict]) -> dict:
    """A lever's fastest round; its first step is the first round's, the one that paid for any
    compilation (later rounds find inductor's cache warm)."""
    if "skipped" in rounds[0]:
        return rounds[0]
    return {**fastest_round(rounds), "first_step_s": rounds[0]["first_step_s"]}


def report_row(row: dict) -> None:
    print(f"  {row['lever']}: {row['steps_per_s']:.2f} steps/s", file=sys.stderr, flush=True)


def table(rows: list[dict]) -> str:
    base = rows[0]["steps_per_s"]
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append([r["lever"], "", "skipped", "", "", r["skipped"]])
            continue
        first = f"{r['first_step_s']:.1f} s" if r["first_step_s"] is not None else ""
        lines.append([r["lever"], r["threads"], f"{r['steps_per_s']:.2f}", rounds_cell(r),
                      f"{r['steps_per_s'] / base:.2f}x", first])
    return format_table(["lever", "threads", "steps/s", "rounds", "vs default", "first step"], lines)


@command
def main(argv: list[str]) -> int:
    args = parse_step_flags(__doc__, argv, warmup=3, steps=20, what="row", rounds=3)
    data = str(resolve_corpus(args.data, download=True))
    warn_if_busy(machine_cores())
    by_lever = {}
    for r in range(1, args.rounds + 1):
        print(f"round {r}/{args.rounds}", file=sys.stderr, flush=True)
        rows = measure_single(data, args.warmup, args.steps) + measure_under_torchrun(data, args.warmup, args.steps)
        for row in rows:
            by_lever.setdefault(row["lever"], []).append(row)
    print(table([fastest_lever_round(rounds) for rounds in by_lever.values()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
