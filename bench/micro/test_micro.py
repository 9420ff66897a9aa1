"""Micro-benchmarks: forward+backward, the gradient all-reduce, batch sampling, one AdamW step.

Each one times a single piece of Trainer.train_step at the default shape and checks that the
piece did its job, so a fast but wrong result cannot pass.
"""

import math
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from bench.micro.conftest import CFG, parameter_count
from model import next_token_loss, uniform_loss
from tests.ports import free_port
from trainer.data import Batches
from trainer.optim import make_optimizer

N_PARAMS = parameter_count()  # 824,897: one fp32 value per parameter is what DDP all-reduces


def test_forward_backward(benchmark, model, batch, corpus):
    x, y = batch

    def forward_backward() -> float:
        model.zero_grad(set_to_none=True)
        loss = next_token_loss(model(x), y)
        loss.backward()
        return loss.item()

    loss = benchmark(forward_backward)
    benchmark.extra_info.update(threads=torch.get_num_threads(), tokens=x.numel())
    assert abs(loss - uniform_loss(len(corpus.vocab))) < 0.15  # a fresh model knows nothing yet
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_batch_sampling(benchmark, corpus):
    x, y = benchmark(Batches(corpus.train, CFG.seed, CFG.batch_size, CFG.block_size).draw, "train", 1)
    assert x.shape == y.shape == (CFG.batch_size, CFG.block_size)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one character


def test_adamw_step(benchmark, model, batch):
    x, y = batch
    optimizer = make_optimizer(model, CFG)
    next_token_loss(model(x), y).backward()
    before = [p.detach().clone() for p in model.parameters()]
    benchmark(optimizer.step)
    assert all(not torch.equal(old, new) for old, new in zip(before, model.parameters()))


# -- the gloo all-reduce at world size 2: this process is rank 0, a spawned peer rank 1 ---------

STOP = float("-inf")  # rank 0 sends this in element 0 to end the peer's loop


def _all_reduce_peer(port: int, numel: int) -> None:
    """Rank 1: adds 1.0 to every element of each all-reduce until rank 0 sends STOP."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=1, world_size=2,
                            timeout=timedelta(seconds=60))
    buffer = torch.empty(numel)
    while True:
        buffer.fill_(1.0)
        dist.all_reduce(buffer)
        if math.isinf(buffer[0]):
            break
    dist.destroy_process_group()


@pytest.fixture
def gloo_pair():
    port = free_port()
    peer = mp.get_context("spawn").Process(target=_all_reduce_peer, args=(port, N_PARAMS), daemon=True)
    peer.start()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2,
                            timeout=timedelta(seconds=60))
    try:
        yield
    finally:
        dist.all_reduce(torch.full((N_PARAMS,), STOP))
        dist.destroy_process_group()
        peer.join(timeout=30)


def test_gloo_all_reduce(benchmark, gloo_pair):
    start = torch.arange(N_PARAMS, dtype=torch.float32)  # integers: every sum below is exact in fp32
    grads = start.clone()
    calls = 0

    def all_reduce() -> None:  # one call = one all-reduce of the model's gradient size, nothing else
        nonlocal calls
        dist.all_reduce(grads)
        calls += 1

    benchmark(all_reduce)
    benchmark.extra_info.update(world_size=2, values=N_PARAMS, megabytes=4 * N_PARAMS / 1e6)
    assert N_PARAMS == 824_897
    assert torch.equal(grads, start + calls)  # each call added the peer's 1.0 to every element
