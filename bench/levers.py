"""python -m bench.levers: what each speed lever is worth, changed one at a time, in steps/s.

Every row times the trainer's own step (Trainer._run_batch) on the same 32 x 128 batches as
`python -m bench`, with one thing changed from the default: one process at all cores, fp32,
fused q/k/v through SDPA's fused causal kernel, dropout 0, fused AdamW. The DDP rows run
bench.ddp_worker under torchrun at NPROC=4 (one thread per rank) with one DDP argument changed.
The README's speed table is this command's output; it takes about three minutes.
"""

import shutil
import sys
import tempfile
import time

import torch

from bench.report import format_table
from bench.run import run_ddp, warn_if_busy
from bench.timing import time_steps
from trainer.config import TrainConfig
from trainer.data import load_corpus, resolve_corpus
from trainer.distributed import DistEnv, machine_cores
from trainer.errors import OneLineParser, UsageError, report_usage_errors
from trainer.train import Trainer, make_optimizer


def adamw(trainer: Trainer, **implementation) -> None:
    """The trainer's AdamW (same groups and hyperparameters), with another implementation."""
    trainer.optimizer = make_optimizer(trainer.raw_model, trainer.cfg, **implementation)


def attention_dropout(trainer: Trainer) -> None:
    for block in trainer.raw_model.blocks:
        block.attn.attn_dropout = 0.1


def compiled(trainer: Trainer) -> None:
    trainer.model = torch.compile(trainer.raw_model)


# name, TrainConfig changes, threads (None: all cores), change to the built trainer
SINGLE_PROCESS = [
    ("default: 1 process, fp32, SDPA fused, AdamW fused", {}, None, None),
    ("1 thread instead of all cores", {}, 1, None),
    ("dropout 0.1 on the residual branches", {"dropout": 0.1}, None, None),
    ("dropout 0.1 on attention probabilities too (SDPA unfused)", {"dropout": 0.1}, None, attention_dropout),
    ("AdamW foreach=True", {}, None, lambda t: adamw(t, foreach=True)),
    ("AdamW for-loop (foreach=False)", {}, None, lambda t: adamw(t, foreach=False)),
    ("bf16 autocast (--dtype bf16)", {"dtype": "bf16"}, None, None),
    ("torch.compile (inductor)", {}, None, compiled),
]
DDP_AT_NPROC_4 = [
    ("DDP NPROC=4: trainer's (bucket view, static graph)", {}),
    ("DDP NPROC=4: plain DDP()", {"gradient_as_bucket_view": False, "static_graph": False}),
    ("DDP NPROC=4: without static_graph", {"static_graph": False}),
    ("DDP NPROC=4: 1 MB buckets (4 all-reduces per step)", {"bucket_cap_mb": 1}),
]


def measure_single(data: str, warmup: int, steps: int) -> list[dict]:
    corpus = load_corpus(data, TrainConfig.block_size)
    rows = []
    for name, changes, threads, change in SINGLE_PROCESS:
        if change is compiled and not (shutil.which("c++") or shutil.which("g++")):
            rows.append({"lever": name, "skipped": "no C++ compiler for inductor"})
            continue
        torch.set_num_threads(threads or machine_cores())
        with tempfile.TemporaryDirectory(prefix="bench-levers-") as out:
            cfg = TrainConfig(data=data, out=out, sample_tokens=0, export=False, **changes)
            trainer = Trainer(cfg, DistEnv(), corpus, snapshot=None)
            if change:
                change(trainer)
            start = time.perf_counter()
            trainer._run_batch(1)  # the first step pays for compilation, where there is any
            first_step_s = time.perf_counter() - start
            speed = time_steps(lambda i: trainer._run_batch(i + 1), warmup, steps)
        rows.append({"lever": name, "threads": torch.get_num_threads(), "first_step_s": first_step_s, **speed})
        progress(rows[-1])
    return rows


def measure_ddp(data: str, warmup: int, steps: int) -> list[dict]:
    rows = []
    for name, options in DDP_AT_NPROC_4:
        result = run_ddp(4, data, warmup, steps, options)
        rows.append({"lever": name, "threads": result["threads_per_rank"], "first_step_s": None, **result})
        progress(rows[-1])
    return rows


def progress(row: dict) -> None:
    print(f"  {row['lever']}: {row['steps_per_s']:.2f} steps/s", file=sys.stderr, flush=True)


def table(rows: list[dict]) -> str:
    base = rows[0]["steps_per_s"]
    lines = []
    for r in rows:
        if "skipped" in r:
            lines.append([r["lever"], "", "skipped", "", r["skipped"]])
            continue
        first = f"{r['first_step_s']:.1f} s" if r["first_step_s"] is not None else ""
        lines.append([r["lever"], r["threads"], f"{r['steps_per_s']:.2f}", f"{r['steps_per_s'] / base:.2f}x", first])
    return format_table(["lever", "threads", "steps/s", "vs default", "first step"], lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m bench.levers", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--data", help="UTF-8 corpus; default data/tinyshakespeare.txt, downloaded if missing")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps after the first (default 3)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per row (default 20)")

    def body() -> int:
        args = p.parse_args(argv)
        if args.warmup < 0 or args.steps < 1:
            raise UsageError("--warmup must not be negative and --steps must be at least 1")
        data = str(resolve_corpus(args.data, download=True))
        warn_if_busy(machine_cores())
        rows = measure_single(data, args.warmup, args.steps) + measure_ddp(data, args.warmup, args.steps)
        print(table(rows))
        return 0

    return report_usage_errors(body)


if __name__ == "__main__":
    sys.exit(main())
