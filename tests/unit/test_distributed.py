"""trainer.distributed's pure parts: which core a local rank is pinned to, how many threads it gets."""

import pytest

from common.dist_env import DistEnv
from trainer.config import GRAD_COMPRESSIONS
from trainer.distributed import GRAD_COMPRESSION_HOOKS, core_of_rank, threads_per_rank


def local(rank: int, ranks: int) -> DistEnv:
    return DistEnv(rank=rank, world_size=ranks, local_rank=rank, local_world_size=ranks)


@pytest.mark.parametrize("ranks, cores, expected", [
    (4, [0, 1], [0, 1, 0, 1]),  # two to a core, never three
    (3, [0, 1], [0, 1, 0]),
    (8, [4, 5, 6], [4, 5, 6, 4, 5, 6, 4, 5]),  # the cores the process may use, not 0..n-1
])
def test_ranks_share_the_cores_as_evenly_as_they_can(ranks, cores, expected):
    assert [core_of_rank(local(r, ranks), cores) for r in range(ranks)] == expected


def test_threads_share_the_cores_unless_omp_num_threads_says(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("trainer.distributed.machine_cores", lambda: 8)
    assert [threads_per_rank(local(0, n)) for n in (1, 2, 4, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_rank(local(0, 4)) == 3


def test_without_a_process_group_the_collectives_are_this_process_alone():
    from common.cli import UsageError
    from trainer.distributed import broadcast_from_main, gathered, refused_together

    with refused_together():
        total = 2 + 3
    assert total == 5
    assert gathered("mine") == ["mine"]
    assert broadcast_from_main(DistEnv(), "rank 0's") == "rank 0's"
    with pytest.raises(UsageError, match="^the problem: the fix$"):
        with refused_together():
            raise UsageError("the problem: the fix")
    with pytest.raises(KeyError):  # not a refusal: passed on as it is
        with refused_together():
            raise KeyError("bug")


def test_every_gradient_compression_flag_has_its_hook_and_only_none_has_none():
    assert sorted(GRAD_COMPRESSION_HOOKS) == sorted(GRAD_COMPRESSIONS)
    assert [name for name, hook in GRAD_COMPRESSION_HOOKS.items() if hook is None] == ["none"]
