"""Run under torchrun --nproc-per-node=2: the trainer's DDP gradient vs one process's gradient of the same batch.

Rank 0 prints `max_abs_diff <value>` for each rank (one writer, so the lines cannot interleave);
the test reads both; then `compressed_in_bf16` and `compressed_rel_diff` for the same step with
--grad-compression bf16. Then `shared_ns_diff <value>` for fp32 and bf16: Newton-Schulz shared out
across the ranks against one rank doing it all, on stacks of odd sizes (padded to share). Then,
after the trainer is dropped and the group destroyed, rank 0 prints `gloo_threads_left <n>`:
threads still running at interpreter exit can abort the process.
"""

import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from common.dist_env import DistEnv
from model import GPT, next_token_loss
from trainer import distributed
from trainer.config import RunOptions, TrainConfig, resolve
from trainer.data import Batches, load_corpus
from trainer.optim import orthogonalize, orthogonalize_shared
from trainer.train import Trainer


def main(corpus_path: str) -> None:
    env = DistEnv.from_environ()
    distributed.init(env)
    cfg, options = resolve(dict(data=corpus_path, grad_clip=0.0, dropout=0.0, dtype="fp32"))
    corpus = load_corpus(corpus_path, cfg.block_size)
    trainer = Trainer(cfg, env, corpus, run_options=options)
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
    compressed_gradient_check(cfg, replace(options, grad_compression="bf16"), env, corpus, reference)
    for dtype in (torch.float32, torch.bfloat16):
        diff = shared_newton_schulz_diff(dtype)
        if env.is_main:
            print(f"shared_ns_diff {diff:.3e}", flush=True)
    distributed.shutdown()
    if env.is_main:
        print(f"gloo_threads_left {len(gloo_threads())}", flush=True)


def compressed_gradient_check(cfg: TrainConfig, options: RunOptions, env: DistEnv, corpus, reference: GPT) -> None:
    """The same step with --grad-compression bf16: rank 0 prints `compressed_in_bf16 1` when every
    gradient element is a bf16 value (the hook ran: an fp32 average almost never is), and
    `compressed_rel_diff` the norm of its difference from the one-process gradient over that
    gradient's norm (all tensors as one vector)."""
    trainer = Trainer(cfg, env, corpus, run_options=options)
    trainer.train_step(step=1)
    grads = [(p.grad, q.grad) for p, q in zip(trainer.raw_model.parameters(), reference.parameters())]
    in_bf16 = all(torch.equal(g, g.bfloat16().float()) for g, _ in grads)
    rel_diff = (torch.cat([(g - r).flatten() for g, r in grads]).norm()
                / torch.cat([r.flatten() for _, r in grads]).norm()).item()
    if env.is_main:
        print(f"compressed_in_bf16 {int(in_bf16)}\ncompressed_rel_diff {rel_diff:.3e}", flush=True)


def shared_newton_schulz_diff(dtype: torch.dtype) -> float:
    """The largest difference between orthogonalize_shared and orthogonalize, over two stacks."""
    torch.manual_seed(0)  # every rank draws the same stacks, as every rank holds the same gradients
    stacks = [torch.randn(5, 8, 16), torch.randn(7, 16, 32)]
    shared = orthogonalize_shared(stacks, dtype)
    return max((s - orthogonalize(g, dtype)).abs().max().item() for s, g in zip(shared, stacks, strict=True))


def gloo_threads() -> list[str]:
    names = [(Path("/proc/self/task") / tid / "comm").read_text().strip() for tid in os.listdir("/proc/self/task")]
    return [name for name in names if "gloo" in name]


if __name__ == "__main__":
    main(sys.argv[1])
