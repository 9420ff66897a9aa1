"""The process group: how many threads a rank gets, where it runs, and the few collectives the trainer uses.

Who a rank is (common.dist_env.DistEnv) comes from torchrun's environment; a plain
`python -m trainer` runs as a world of one without a process group.
"""

import importlib
import os
import sys
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel as DDP

from common.cli import UsageError
from common.dist_env import DistEnv
from trainer.config import RunOptions


def machine_cores() -> int:
    """The cores this process may run on (its affinity mask, which containers narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_per_rank(env: DistEnv) -> int:
    """OMP_NUM_THREADS if the user set it, else this machine's cores shared among its local ranks."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    return max(1, machine_cores() // env.local_world_size)


# Set to 0 to leave the ranks where the OS puts them.
PIN_ENV = "TRAINER_PIN_CORES"


def core_of_rank(env: DistEnv, cores: list[int]) -> int:
    """The core a local rank is pinned to when there are more local ranks than cores: each
    core gets as few ranks as can be (NPROC=4 on cores 0 and 1: 0, 1, 0, 1)."""
    return cores[env.local_rank % len(cores)]


def pin_to_cores(env: DistEnv, threads: int) -> None:
    """With more local ranks than cores (NPROC=4 on 2), keep each single-threaded rank on one core.

    Left to the OS, the ranks, which meet at every all-reduce, migrate between the cores, which
    is slower. With a core or more per rank, pinning is slower instead (gloo's threads then wait
    for their rank's core instead of using an idle one), so such ranks are left to the OS
    (docs/speed.md has the figures). TRAINER_PIN_CORES=0: never pin.
    """
    if os.environ.get(PIN_ENV) == "0" or threads > 1 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    if env.local_world_size > len(cores):
        os.sched_setaffinity(0, {core_of_rank(env, cores)})


def init(env: DistEnv, timeout_s: int = RunOptions.timeout) -> None:
    """Join the gloo process group when launched by torchrun (a world of one included).

    Every collective of the group gives up after `timeout_s` seconds without the other ranks."""
    threads = threads_per_rank(env)
    torch.set_num_threads(threads)
    pin_to_cores(env, threads)
    if "WORLD_SIZE" in os.environ and not dist.is_initialized():
        # DDP imports torch._dynamo on first use; imported after the group exists, it keeps the
        # group alive past destroy_process_group (torch 2.13), and the gloo threads left running
        # abort the process at exit ("terminate called without an active exception").
        # Imported first, destroy_process_group joins them.
        importlib.import_module("torch._dynamo")

        dist.init_process_group("gloo", timeout=timedelta(seconds=timeout_s))
        warn_about_shared_store(env)


def warn_about_shared_store(env: DistEnv) -> None:
    """torchrun --max-restarts with its store shared across attempts can hang a restart
    (pytorch/pytorch#135712); `make train` turns the sharing off, a bare torchrun does not."""
    restarts = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    if env.is_main and restarts > 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        print("warning: torchrun shares one store across restarts, and a restarted group can hang "
              "(pytorch/pytorch#135712): launch with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 "
              "(make train does)", file=sys.stderr, flush=True)


# The graph is the same every step, so static_graph lets DDP skip re-checking which parameters
# were used; gradient_as_bucket_view makes the gradients views into the all-reduce buckets (no copy).
DDP_OPTIONS = {"gradient_as_bucket_view": True, "static_graph": True}


def bf16_compress_on_gloo(process_group: dist.ProcessGroup,
                          bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP's own bf16_compress_hook: each bucket rounded to bf16 and divided by the world size,
    all-reduced (half the bytes of fp32), and written back into the fp32 gradients.

    Called through this function because DDP refuses that hook by its name unless CUDA's NCCL
    2.10+ is there (NCCL's bf16 all-reduce); gloo all-reduces bf16 too (torch 2.13).
    """
    return default_hooks.bf16_compress_hook(process_group, bucket)


# What each --grad-compression registers on DDP: worth it only where the link, not the CPU,
# bounds the step (docs/scaling.md).
GRAD_COMPRESSION_HOOKS = {"none": None, "bf16": bf16_compress_on_gloo}


def wrap(model: torch.nn.Module, env: DistEnv, options: dict,
         grad_compression: str = RunOptions.grad_compression) -> torch.nn.Module:
    """The model under DDP with these keyword arguments when there is more than one rank, its
    gradients all-reduced as `grad_compression` says (a name of GRAD_COMPRESSION_HOOKS)."""
    if env.world_size == 1:
        return model
    ddp = DDP(model, **options)
    hook = GRAD_COMPRESSION_HOOKS[grad_compression]
    if hook is not None:
        ddp.register_comm_hook(None, hook)  # state None: the hook all-reduces over the whole group
    return ddp


def silent_rank(exc: BaseException, env: DistEnv) -> str | None:
    """Which rank stopped answering, when `exc` is a collective that timed out; else None.

    gloo's message ("Timed out waiting 5000ms for recv operation") names no peer: in a world
    of two it can only be the other rank."""
    if not (dist.is_initialized() and isinstance(exc, RuntimeError) and "Timed out" in str(exc)):
        return None
    if env.world_size == 2:
        return f"rank {1 - env.rank}"
    return f"a rank other than {env.rank}"


# gloo's words when the other end of a connection is gone: its process died, or its machine went away.
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe")


def lost_peer(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another rank's connection closed."""
    return dist.is_initialized() and isinstance(exc, RuntimeError) and any(words in str(exc) for words in PEER_GONE)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float]) -> list[float]:
    """Sum a few scalars over all ranks in one collective (identity without a process group)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@contextmanager
def refused_together():
    """The block runs on every rank; when it raises a UsageError on any rank, every rank raises the
    first rank's, so that all stop together with exit status 2 (and each node's first process prints
    it). Every rank leaves the block through one collective: no rank goes on while another refuses."""
    error = None
    try:
        yield
    except UsageError as exc:
        error = str(exc)
    first = next((e for e in gathered(error) if e), None)
    if first:
        raise UsageError(first)


def gathered(obj) -> list:
    """obj from every rank, in rank order ([obj] without a process group)."""
    if not dist.is_initialized():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def broadcast_from_main(env: DistEnv, obj):
    """Rank 0's obj on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj if env.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]

