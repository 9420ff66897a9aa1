"""What rank 0 shows while training: a tqdm bar on a terminal, plain lines anywhere else.

Plain mode writes no carriage returns or escape codes, so logs in CI and files stay clean.
"""

import sys

from tqdm import tqdm

from common.dist_env import DistEnv
from trainer.config import TrainConfig


class Progress:
    def __init__(self, enabled: bool, mode: str, total: int, initial: int):
        use_bar = mode == "bar" or (mode == "auto" and sys.stdout.isatty())
        self.enabled = enabled
        self.bar = None
        if enabled and use_bar:
            # The bar's rate is wall time, evaluations included; the eval lines give training steps only.
            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stdout,
                            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
                                       "{rate_fmt} with evaluation{postfix}]")

    def update(self, loss: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(1)

    def print(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        """Close the bar; later lines print plainly below it. Closing twice does nothing."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def banner(cfg: TrainConfig, env: DistEnv, step: int, parameters: int, threads: int, corpus: str, matmuls: str) -> str:
    """The run's first line: the model, where it starts, the batch over the ranks and threads, the
    corpus, the recipe and the matmuls' dtype (and why that one)."""
    where = f"resuming at step {step}" if step else "from scratch"
    muon = f"Muon lr {cfg.muon_lr:g}, " if cfg.muon_lr else ""
    own = [f"{what} {lr:g}" for what, lr in (("embeddings", cfg.embed_lr), ("head", cfg.head_lr)) if lr]
    own = f" ({', '.join(own)})" if own else ""
    return (f"training {parameters:,} parameters, {where}: {cfg.steps} steps, "
            f"global batch {cfg.batch_size} x {cfg.block_size} over {env.world_size} process(es){nodes_part(env)} "
            f"x {threads} thread(s), {corpus}, recipe {cfg.recipe} ({muon}lr {cfg.lr:g}{own}, {cfg.schedule}), "
            f"{matmuls}")


def nodes_part(env: DistEnv) -> str:
    """" on 2 nodes (rank 1 here)": which global ranks this machine holds, which the rendezvous decides."""
    if env.world_size == env.local_world_size:
        return ""
    first = env.rank - env.local_rank
    here = f"rank {first}" if env.local_world_size == 1 else f"ranks {first}-{first + env.local_world_size - 1}"
    return f" on {env.world_size // env.local_world_size} nodes ({here} here)"
