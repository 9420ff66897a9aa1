"""python -m bench.profile: where one training step's time goes, grouped, for the default dtype and fp32.

Profiles the trainer's own step (batch, forward, backward, clipping, AdamW, loss all-reduce) in
one process at all cores with torch.profiler, then sums each operator's self time (time inside
the operator, not its children, so nothing is counted twice) into a few groups. What no operator
accounts for (Python, autograd bookkeeping, the profiler itself) is the overhead row.
"""

import contextlib
import os
import sys
import tempfile
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.report import format_table
from bench.timing import parse_step_flags, warn_if_busy
from common.cli import command
from common.dist_env import DistEnv
from trainer.config import RunOptions, TrainConfig, resolve
from trainer.data import load_corpus, resolve_corpus
from trainer.distributed import machine_cores
from trainer.precision import resolve_dtype
from trainer.train import Trainer

# Operator name fragments, tried in this order; the first group that matches takes the operator.
GROUPS = [
    ("GEMMs (mm, addmm, bmm, baddbmm)", ("::mm", "addmm", "bmm", "baddbmm", "matmul", "linear")),
    ("attention softmax", ("softmax_backward", "::_softmax", "::softmax", "scaled_dot_product", "flash_attention")),
    ("loss (log-softmax, nll)", ("log_softmax", "nll_loss", "cross_entropy")),
    ("norms (LayerNorm)", ("layer_norm",)),
    ("ReLU", ("relu", "clamp_min", "threshold_backward")),
    ("optimizer and clipping", ("adam", "_foreach", "clip_grad", "norm", "zero_")),
    ("all-reduce", ("allreduce", "all_reduce", "c10d", "gloo")),
    ("embedding", ("embedding",)),
    ("copies and dtype casts", ("copy_", "_to_copy", "clone", "contiguous", "::to", "reshape", "cat", "permute")),
    ("elementwise (add, mul, ...)", ("::add", "::mul", "::div", "::sum", "::sub", "fill_", "where", "masked")),
]


def group_of(name: str) -> str:
    lowered = name.lower()
    for group, fragments in GROUPS:
        if any(fragment in lowered for fragment in fragments):
            return group
    return "other operators"


def profile_steps(cfg: TrainConfig, run_options: RunOptions, corpus, warmup: int, steps: int) -> dict:
    """ms/step by group, and the step's wall time, for `steps` profiled steps after `warmup`."""
    trainer = Trainer(cfg, DistEnv(), corpus, run_options=run_options)
    for step in range(1, warmup + 1):
        trainer.train_step(step)
    with stderr_silenced(), profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        for step in range(warmup + 1, warmup + steps + 1):
            trainer.train_step(step)
        wall_ms = 1000 * (time.perf_counter() - start) / steps
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        if event.self_cpu_time_total > 0 and not event.key.startswith(("ProfilerStep", "autograd::engine")):
            group = group_of(event.key)
            groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1000 / steps
    return {"dtype": trainer.dtype, "why": trainer.dtype_reason, "wall_ms": wall_ms, "groups": groups}


@contextlib.contextmanager
def stderr_silenced():
    """The profiler's C++ side prints a line to file descriptor 2 at every start and stop."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def table(result: dict) -> str:
    wall = result["wall_ms"]
    rows = sorted(result["groups"].items(), key=lambda item: -item[1])
    accounted = sum(ms for _, ms in rows)
    lines = [[name, f"{ms:.1f}", f"{100 * ms / wall:.0f}%"] for name, ms in rows]
    lines.append(["Python, autograd and profiler overhead", f"{max(wall - accounted, 0):.1f}",
                  f"{100 * max(wall - accounted, 0) / wall:.0f}%"])
    lines.append(["step (wall time, profiled)", f"{wall:.1f}", "100%"])
    return format_table(["part", "ms/step", "share"], lines)


@command
def main(argv: list[str]) -> int:
    args = parse_step_flags(__doc__, argv, warmup=5, steps=10, what="dtype")
    data = str(resolve_corpus(args.data, download=True))
    corpus = load_corpus(data, TrainConfig.block_size)
    cores = machine_cores()
    warn_if_busy(cores)
    torch.set_num_threads(cores)
    # The default (auto) first, then fp32 when the default resolved to bf16 on this CPU.
    dtypes = [RunOptions.dtype] + (["fp32"] if resolve_dtype(RunOptions.dtype)[0] != "fp32" else [])
    for dtype in dtypes:
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as out:
            cfg, run_options = resolve(dict(data=data, out=out, sample_tokens=0, export=False, dtype=dtype))
            result = profile_steps(cfg, run_options, corpus, args.warmup, args.steps)
        print(f"\none process, {result['dtype']} ({result['why']}), {cores} threads, "
              f"batch {cfg.batch_size} x {cfg.block_size}, mean of {args.steps} profiled steps:\n")
        print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
