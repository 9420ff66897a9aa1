"""What the machine could do: the fp32 and bf16 matmul peaks, and the work one training step asks of it.

MFU (model FLOPs utilisation) = model FLOPs per step x steps/s / peak FLOP/s of the dtype the
run multiplies in. Each peak is measured at all of the machine's cores whatever the run used,
so every MFU row of one dtype divides by the same number and the rows compare.
"""

import contextlib
import time

import torch

from model import GPT, count_parameters


@contextlib.contextmanager
def torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


PEAK_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_peak_gflops(threads: int, dtype: str = "fp32", size: int = 1024, budget_s: float = 2.0) -> float:
    """Best GFLOP/s of size x size matmuls in `dtype` at `threads` threads, over about budget_s seconds
    (smaller matrices where one product would take more than a twentieth of it).

    The best round, not the mean: the peak is what the hardware can do, and a shared machine
    only ever makes a round slower. bf16 products accumulate in fp32 inside oneDNN, as under
    autocast; on a CPU without native bf16 this measures the emulation.
    """
    with torch_threads(threads):
        # A 256 x 256 product warms the thread pool up and sizes the matrices: emulated bf16 runs
        # near 1 GFLOP/s, where one 1024 x 1024 product would take seconds.
        start = time.perf_counter()
        torch.mm(*(torch.randn(256, 256).to(PEAK_DTYPES[dtype]) for _ in range(2)))
        rate = 2 * 256 ** 3 / (time.perf_counter() - start)
        while size > 128 and 2 * size ** 3 / rate > budget_s / 20:
            size //= 2
        a, b = (torch.randn(size, size).to(PEAK_DTYPES[dtype]) for _ in range(2))
        out = torch.empty(size, size, dtype=PEAK_DTYPES[dtype])
        torch.mm(a, b, out=out)  # caches
        flops, best = 2 * size ** 3, 0.0
        deadline = time.perf_counter() + budget_s
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            for _ in range(5):
                torch.mm(a, b, out=out)
            best = max(best, 5 * flops / (time.perf_counter() - start))
    return best / 1e9


def model_flops_per_step(model: GPT, tokens_per_step: int) -> int:
    """Training FLOPs per step: 6 per weight per token, plus attention (the PaLM paper's count).

    Forward and backward cost 2 + 4 FLOPs per multiply-add weight per token. The position table
    is left out (it is added, not multiplied). Attention's scores and weighted sum cost
    12 x n_layer x n_embd x block_size per token (forward and backward, no causal discount).
    """
    cfg = model.config
    weights = count_parameters(model) - model.pos_emb.weight.numel()
    attention = 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
    return (6 * weights + attention) * tokens_per_step


def mfu(flops_per_step: int, steps_per_s: float, peak_gflops: float) -> float:
    return flops_per_step * steps_per_s / (peak_gflops * 1e9)
