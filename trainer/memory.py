"""The memory a training step needs, checked before the first step; and keeping what a step frees,
so that the next step does not fault it back in.

A step allocates and frees the same activation buffers every time. glibc's malloc serves blocks
above its mmap threshold with fresh mmaps and hands the freed top of its heap back to the OS, so
every step would touch its buffers' pages anew, paying page faults and kernel time. Raising both
thresholds keeps the blocks in the heap and the heap whole (docs/speed.md has the measurements).

Both thresholds must be set: setting either one turns off glibc's adjusting of the other, and
the trim threshold alone leaves the mmap threshold at 128 KB, which is far worse. The cost is
memory the process keeps after its peak: the peak of a step.
TRAINER_KEEP_MEMORY=0 keeps glibc's own thresholds (docs/usage.md).
"""

import ctypes
import math
import os
import platform
from pathlib import Path

from common.cli import UsageError
from model import GPTConfig, weight_shapes

# Set to 0 to keep glibc's own thresholds.
KEEP_MEMORY_ENV = "TRAINER_KEEP_MEMORY"

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's ceiling for it on 64-bit machines
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Raise glibc's thresholds for this process; False where the C library is not glibc (macOS,
    musl) or TRAINER_KEEP_MEMORY=0 says not to."""
    if os.environ.get(KEEP_MEMORY_ENV) == "0" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def step_bytes(config: GPTConfig, rank_batch: int) -> int:
    """About what one rank's training step holds at its peak: per parameter its weight, the
    weights' average, gradient, optimiser state and DDP bucket (4 + 4 + 4 + 8 + 4 bytes), and the
    fp32 activations autograd keeps for the backward pass (per layer: the LayerNorms, q, k, v, the
    attention scores and their softmax, the MLP; then the logits). It errs on the high side,
    so that a step it lets through fits."""
    C, T, H, L, V = config.n_embd, config.block_size, config.n_head, config.n_layer, config.vocab_size
    params = sum(math.prod(shape) for shape in weight_shapes(config).values())
    activations = rank_batch * T * (L * (16 * C + 2 * H * T) + 2 * C + 3 * V)
    return 24 * params + 4 * activations


def machine_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """The machine's memory (MemTotal), or None where /proc/meminfo does not say (not Linux)."""
    try:
        line = next(line for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None
    return int(line.split()[1]) * 1024


def check_fits(config: GPTConfig, rank_batch: int, local_ranks: int, total: int | None) -> None:
    """Refuse, in one line naming the estimate, a step that cannot fit in the machine's memory."""
    need = step_bytes(config, rank_batch) * local_ranks
    if total is not None and need > total:
        raise UsageError(f"a training step needs about {need / 2 ** 30:,.1f} GB here ({local_ranks} process(es) "
                         f"x {rank_batch} windows of {config.block_size}), more than this machine's "
                         f"{total / 2 ** 30:,.1f} GB: use a smaller --batch-size, --block-size or model "
                         "(--n-embd, --n-layer), or spread the batch over more machines")
