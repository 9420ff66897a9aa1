"""Run under torchrun --nproc-per-node=2: the trainer's DDP gradient vs one process's gradient of the same batch.

Each rank prints `max_abs_diff <value>`; the test reads both lines.
"""

import sys

import torch

from model import GPT, next_token_loss
from trainer import distributed
from trainer.config import TrainConfig
from trainer.data import get_batch, load_corpus
from trainer.distributed import DistEnv
from trainer.train import Trainer


def main(corpus_path: str) -> None:
    env = DistEnv.from_environ()
    distributed.init(env)
    cfg = TrainConfig(data=corpus_path, grad_clip=0.0, dropout=0.0)
    corpus = load_corpus(corpus_path, cfg.block_size)
    trainer = Trainer(cfg, env, corpus, snapshot=None)
    reference = GPT(trainer.model_config)
    reference.load_state_dict(trainer.raw_model.state_dict())  # the weights before the step
    trainer._run_batch(step=1)  # this rank's slice, DDP all-reduce, Adam step; .grad keeps the average

    x, y = get_batch(corpus.train, cfg.seed, "train", 1, cfg.batch_size, cfg.block_size, rank=0, world_size=1)
    next_token_loss(reference(x), y).backward()  # the whole global batch in one process
    diff = max((p.grad - q.grad).abs().max().item()
               for p, q in zip(trainer.raw_model.parameters(), reference.parameters()))
    print(f"max_abs_diff {diff:.3e}", flush=True)
    distributed.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
