"""One job of python -m bench.link: the collectives and the trainer's step, timed on whatever links the ranks.

    torchrun ... -m bench.link_worker --data PATH --result FILE [--compressions none,bf16]
    python -m bench.link_worker --data PATH --result FILE --compute   (one process: the step's compute)

Under torchrun, every rank first times the collectives a training step makes, alone: DDP's
gradient all-reduce (every parameter, in fp32, and in bf16 as --grad-compression bf16 sends
it), Muon's all-gather of its orthogonalised updates (this world size's share), and a
two-number all-reduce (the loss; its time is the link's latency). Then, for each compression in
turn, a Trainer with that --grad-compression runs W untimed and S timed steps (Trainer.train_step,
the real step). Rank 0 writes the times and every step's loss as JSON to FILE.

With --compute, one process without a process group times the step at global batches of 32, 16
and 8 windows (what a rank of 1, 2 and 4 nodes computes) and Newton-Schulz on one stack of each
of Muon's matrix shapes: the compute constants of the scaling model (bench/scaling.py).
"""

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

from bench.timing import time_steps
from common.cli import OneLineParser, command
from common.dist_env import DistEnv
from common.files import atomic_write
from model import count_parameters
from trainer import distributed, precision
from trainer.config import GRAD_COMPRESSIONS, resolve
from trainer.optim import orthogonalize, pieces
from trainer.setup import prepare
from trainer.train import Trainer

COLLECTIVE_REPEATS = 5
COMPUTE_BATCHES = (32, 16, 8)


def trainer_for(env: DistEnv, data: str, out: str, **settings) -> Trainer:
    """A Trainer of the default configuration with these settings; nothing is written to `out`
    (the steps are called directly: no evaluation, no checkpoint)."""
    run = prepare(*resolve(dict(data=data, out=out, sample_tokens=0, export=False, **settings)), env)
    return Trainer(run.cfg, env, run.corpus, run_options=run.options, folder=run.folder)


def muon_stacks(trainer: Trainer) -> list[tuple[int, int, int]]:
    """(count, rows, cols) of each matrix shape Muon orthogonalises, as Muon.step stacks them."""
    shapes: dict[tuple[int, int], int] = {}
    for group in trainer.optimizer.optimizers["muon"].param_groups:
        for p in group["params"]:
            for m in pieces(p, group["split"]):
                shapes[tuple(m.shape)] = shapes.get(tuple(m.shape), 0) + 1
    return [(count, rows, cols) for (rows, cols), count in shapes.items()]


def median_ms(work, sync=lambda: None, repeats: int = COLLECTIVE_REPEATS) -> float:
    """The median time of work() over `repeats` calls after one untimed call; `sync` before each
    (under a process group a barrier, so that every rank starts the collective together)."""
    work()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        work()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def time_collectives(parameters: int, stacks: list[tuple[int, int, int]], update_bytes: int) -> dict:
    """Each collective of a training step alone, in ms, with the bytes it carries."""
    world = dist.get_world_size()
    gradients = {dtype: torch.ones(parameters, dtype=dtype) for dtype in (torch.float32, torch.bfloat16)}
    share = sum(-(-count // world) * rows * cols for count, rows, cols in stacks)  # ceil: padded as Muon pads
    updates = torch.ones(share * update_bytes // 4)  # an all-gather copies bits: fp32 of the same bytes
    gathered = [torch.empty_like(updates) for _ in range(world)]
    loss = torch.ones(2, dtype=torch.float64)
    return {
        "allreduce_fp32_ms": median_ms(lambda: dist.all_reduce(gradients[torch.float32]), dist.barrier),
        "allreduce_bf16_ms": median_ms(lambda: dist.all_reduce(gradients[torch.bfloat16]), dist.barrier),
        "allgather_updates_ms": median_ms(lambda: dist.all_gather(gathered, updates), dist.barrier),
        "allreduce_loss_ms": median_ms(lambda: dist.all_reduce(loss), dist.barrier),
        "gradient_bytes_fp32": 4 * parameters, "update_bytes_per_rank": share * update_bytes,
    }


def timed_steps(trainer: Trainer, warmup: int, steps: int) -> dict:
    """time_steps of the trainer's step, with the global loss of every step, warm-up included."""
    losses = []
    speed = time_steps(lambda step: losses.append(trainer.train_step(step)[0]), warmup, steps, sync=dist.barrier)
    return {**speed, "losses": losses}


def measure_link(env: DistEnv, data: str, warmup: int, steps: int, compressions: list[str]) -> dict:
    distributed.init(env)  # gloo, and the trainer's threads per rank (OMP_NUM_THREADS if set)
    try:
        training = {}
        with tempfile.TemporaryDirectory(prefix="bench-link-") as out:
            for compression in compressions:
                trainer = trainer_for(env, data, out, grad_compression=compression)
                if not training:  # the shapes and dtype are the trainer's: known once one exists
                    update_bytes = 2 if trainer.dtype == "bf16" else 4
                    stacks = muon_stacks(trainer)
                    collectives = time_collectives(count_parameters(trainer.raw_model), stacks, update_bytes)
                training[compression] = timed_steps(trainer, warmup, steps)
                del trainer  # DDP goes before the group (bench.ddp_worker says why)
        return {"world_size": env.world_size, "threads_per_rank": torch.get_num_threads(),
                "muon_stacks": stacks, "collectives": collectives, "training": training}
    finally:
        distributed.shutdown()


def measure_compute(data: str, warmup: int, steps: int) -> dict:
    """One process, no process group: the step at each of COMPUTE_BATCHES, and Newton-Schulz alone."""
    env = DistEnv()
    distributed.init(env)
    step_ms = {}
    with tempfile.TemporaryDirectory(prefix="bench-link-") as out:
        for batch in COMPUTE_BATCHES:
            trainer = trainer_for(env, data, out, batch_size=batch)
            step_ms[str(batch)] = time_steps(trainer.train_step, warmup, steps)["ms_per_step"]
    stacks = muon_stacks(trainer)
    dtype = precision.torch_dtype(trainer.dtype)
    ns_ms = {}
    for count, rows, cols in stacks:
        stack = torch.randn(count, rows, cols)
        ns_ms[f"{rows}x{cols}"] = median_ms(lambda: orthogonalize(stack, dtype)) / count
    return {"threads": torch.get_num_threads(), "dtype": trainer.dtype, "step_ms_by_batch": step_ms,
            "muon_stacks": stacks, "newton_schulz_ms_per_matrix": ns_ms}


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m bench.link_worker", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the corpus")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=8, help="timed steps")
    p.add_argument("--result", required=True, help="the JSON file rank 0 writes")
    p.add_argument("--compressions", default="none,bf16", help="the --grad-compression of each run, in turn")
    p.add_argument("--compute", action="store_true", help="time the compute of one process instead")
    args = p.parse_args(argv)
    env = DistEnv.from_environ()
    if args.compute:
        result = measure_compute(args.data, args.warmup, args.steps)
    else:
        compressions = args.compressions.split(",")
        unknown = set(compressions) - set(GRAD_COMPRESSIONS)
        if unknown:
            p.error(f"--compressions: unknown {', '.join(sorted(unknown))} "
                    f"(choose from {', '.join(GRAD_COMPRESSIONS)})")
        result = measure_link(env, args.data, args.warmup, args.steps, compressions)
    if env.is_main:
        atomic_write(Path(args.result), lambda f: f.write(json.dumps(result).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
