"""Run under torchrun --nproc-per-node=2: the trainer's DDP gradient vs one process's gradient of the same batch.

Rank 0 prints `max_abs_diff <value>` for each rank (one writer, so the lines cannot interleave);
the test reads both. Then, after the trainer is dropped and the group destroyed, rank 0 prints
`gloo_threads_left <n>`: threads still running at interpreter exit can abort the process.
"""

import os
import sys
from pathlib import Path

import torch

from common.dist_env import DistEnv
from model import GPT, next_token_loss
from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import Batches, load_corpus
from trainer.train import Trainer


def main(corpus_path: str) -> None:
    env = DistEnv.from_environ()
    distributed.init(env)
    cfg = TrainConfig(data=corpus_path, grad_clip=0.0, dropout=0.0, dtype="fp32")
    corpus = load_corpus(corpus_path, cfg.block_size)
    trainer = Trainer(cfg, env, corpus)
    reference = GPT(trainer.model_config)
    reference.load_state_dict(trainer.raw_model.state_dict())  # the weights before the step
    trainer.train_step(step=1)  # this rank's slice, DDP all-reduce, Adam step; .grad keeps the average

    x, y = Batches(corpus.train, cfg.seed, cfg.batch_size, cfg.block_size).draw("train", 1)
    next_token_loss(reference(x), y).backward()  # the whole global batch in one process
    diff = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(trainer.raw_model.parameters(), reference.parameters()))
    diffs = [None] * env.world_size
    torch.distributed.all_gather_object(diffs, diff)
    if env.is_main:
        print("\n".join(f"max_abs_diff {d:.3e}" for d in diffs), flush=True)
    del trainer
    distributed.shutdown()
    if env.is_main:
        print(f"gloo_threads_left {len(gloo_threads())}", flush=True)


def gloo_threads() -> list[str]:
    names = [(Path("/proc/self/task") / tid / "comm").read_text().strip() for tid in os.listdir("/proc/self/task")]
    return [name for name in names if "gloo" in name]


if __name__ == "__main__":
    main(sys.argv[1])
