"""One timed training run under torchrun: the trainer's own step, W warm-up steps, then S timed.

    python -m torch.distributed.run --standalone --nproc-per-node=N -m bench.ddp_worker \\
        --data PATH --warmup W --steps S --result FILE [--ddp-options JSON] [--dtype auto|fp32|bf16] \\
        [--recipe muon|adamw|course]

Each step is Trainer.train_step, the real thing: batch gathering, forward and backward with the
gloo gradient all-reduce, clipping, the recipe's optimisers, the weights' moving average and the
loss all-reduce. Rank 0 writes {nproc, threads_per_rank, recipe, steps_per_s, ms_per_step} as JSON
to FILE. --ddp-options overrides some of the trainer's DistributedDataParallel arguments
(TrainerOptions.ddp; python -m bench.levers compares them).
"""

import json
import sys
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist

from bench.timing import time_steps
from common.cli import OneLineParser, command
from common.dist_env import DistEnv
from common.files import atomic_write
from trainer import distributed
from trainer.config import RECIPES, RunOptions, TrainConfig, resolve
from trainer.precision import DTYPES
from trainer.setup import prepare
from trainer.train import Trainer, TrainerOptions


def measure(env: DistEnv, data: str | None, warmup: int, steps: int, ddp_options: dict, dtype: str,
            recipe: str = TrainConfig.recipe) -> dict:
    distributed.init(env)  # gloo, and the trainer's threads per rank (OMP_NUM_THREADS if set)
    trainer = None
    try:
        # The configuration `--recipe` gives the trainer. Nothing is written to `out`: the bench
        # calls the step directly, so there is no evaluation and no checkpoint.
        with tempfile.TemporaryDirectory(prefix="bench-ddp-") as out:
            run = prepare(*resolve(dict(recipe=recipe, data=data, out=out, sample_tokens=0, export=False,
                                        dtype=dtype)), env)
            options = TrainerOptions(ddp={**distributed.DDP_OPTIONS, **ddp_options})
            trainer = Trainer(run.cfg, env, run.corpus, options=options, run_options=run.options, folder=run.folder)
            speed = time_steps(trainer.train_step, warmup, steps, sync=dist.barrier)
        return {"nproc": env.world_size, "threads_per_rank": torch.get_num_threads(), "dtype": trainer.dtype,
                "recipe": recipe, **speed}
    finally:
        # DDP holds the process group: dropped after the group, it is the last holder, and the
        # group's destructor then joins gloo's threads while holding the GIL that one of them
        # may need to free a tensor: a hang seen once in `make bench-levers`. Dropped first, the
        # group goes in destroy_process_group, as in trainer.train.run.
        del trainer
        distributed.shutdown()


@command
def main(argv: list[str]) -> int:
    p = OneLineParser(prog="python -m bench.ddp_worker", description=__doc__.splitlines()[0])
    p.add_argument("--data", help="the corpus (default data/tinyshakespeare.txt)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--result", required=True, help="the JSON file rank 0 writes")
    p.add_argument("--ddp-options", type=json.loads, default={}, help="DDP keyword arguments as JSON")
    p.add_argument("--dtype", choices=DTYPES, default=RunOptions.dtype, help="the trainer's --dtype")
    p.add_argument("--recipe", choices=tuple(RECIPES), default=TrainConfig.recipe, help="the trainer's --recipe")
    args = p.parse_args(argv)
    env = DistEnv.from_environ()
    result = measure(env, args.data, args.warmup, args.steps, args.ddp_options, args.dtype, args.recipe)
    if env.is_main:
        atomic_write(Path(args.result), lambda f: f.write(json.dumps(result).encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
