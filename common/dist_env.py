"""Who this process is in a torchrun job, read once from the environment torchrun gives its workers.

torchrun supplies RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and its TORCHELASTIC_ variables;
a plain `python -m trainer` has none of them and is rank 0 of a world of one.
"""

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    run_id: str = ""  # torchrun's, the same in every attempt of one run
    restart: int = 0  # how many times torchrun has restarted the workers

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def first_on_node(self) -> bool:
        """The node's first process: it speaks for its node (on a run over several machines,
        every machine's console shows the run) and keeps the node's copy of the run's files."""
        return self.local_rank == 0

    @classmethod
    def from_environ(cls) -> "DistEnv":
        env = os.environ
        world = int(env.get("WORLD_SIZE", 1))
        return cls(
            rank=int(env.get("RANK", 0)),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", 0)),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", world)),
            run_id=env.get("TORCHELASTIC_RUN_ID", ""),
            restart=int(env.get("TORCHELASTIC_RESTART_COUNT", "0")),
        )
