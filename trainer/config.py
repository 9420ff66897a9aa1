"""Every value a run depends on, as plain fields, each overridable from the command line.

Two recipes set the optimiser defaults: `tuned` (the default, which reaches the course's
promised losses at step 3000) and `course` (the chapter's Adam at a constant 3e-4).
Any flag given explicitly wins over the recipe.
"""

import argparse
import sys
from dataclasses import asdict, dataclass, fields

from trainer.errors import OneLineParser, UsageError
from trainer.precision import DTYPES

@dataclass
class TrainConfig:
    # data and files
    data: str | None = None
    out: str = "checkpoints"
    resume: str | None = None
    # run length and batch
    steps: int = 3000
    batch_size: int = 32  # global: split evenly across the ranks
    eval_every: int = 300
    eval_iters: int = 20
    save_every: int = 0  # 0: at every evaluation
    seed: int = 1337
    # model shape
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    # optimiser and schedule (defaults come from the recipe)
    recipe: str = "tuned"
    lr: float = 2e-3
    min_lr: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 100
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dtype: str = "auto"  # bf16 autocast where the CPU has native bf16 (trainer/precision.py), else fp32
    # what a run shows and leaves behind
    sample_tokens: int = 120
    sample_prompt: str = "ROMEO:"
    export: bool = True
    tensorboard: bool = False
    progress: str = "auto"
    dry_run: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def snapshot_every(self) -> int:
        return self.save_every or self.eval_every


# The values a recipe sets: `tuned` is the defaults above, `course` the chapter's plain Adam.
COURSE_RECIPE = dict(lr=3e-4, min_lr=3e-4, schedule="constant", warmup_steps=0,
                     beta2=0.999, weight_decay=0.0, grad_clip=0.0, dropout=0.0)
RECIPES = {
    "tuned": {key: getattr(TrainConfig, key) for key in COURSE_RECIPE},
    "course": COURSE_RECIPE,
}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (recipe values say their own defaults)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()

    def by_recipe(text: str, key: str) -> str:
        return f"{text} (tuned: {RECIPES['tuned'][key]}, course: {RECIPES['course'][key]})"

    p = OneLineParser(
        prog="python -m trainer",
        description="Train the character-level Shakespeare GPT, on one process or under "
        "torchrun (torchrun --standalone --nproc-per-node=N -m trainer ...).",
        formatter_class=_HelpFormatter,
    )
    g = p.add_argument_group("data and files")
    g.add_argument("--data", help="UTF-8 corpus; default data/tinyshakespeare.txt, downloaded if missing")
    g.add_argument("--out", default=d.out, help="directory for model.pt, metrics.jsonl, loss.png and exports")
    g.add_argument("--resume", nargs="?", const="", default=None, metavar="CKPT",
                   help="continue from a snapshot (default <out>/model.pt) to the same final step")
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch in windows, split across ranks")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N steps (and at step 1 and the last)")
    g.add_argument("--eval-iters", type=int, default=d.eval_iters, help="batches per split in each evaluation")
    g.add_argument("--save-every", type=int, default=d.save_every, help="snapshot every N steps; 0 = at every evaluation")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds weights, batches and dropout")
    g = p.add_argument_group("model shape")
    g.add_argument("--block-size", type=int, default=d.block_size, help="context length in characters")
    g.add_argument("--n-layer", type=int, default=d.n_layer)
    g.add_argument("--n-head", type=int, default=d.n_head)
    g.add_argument("--n-embd", type=int, default=d.n_embd)
    g.add_argument("--dropout", type=float, help=by_recipe("dropout on residual branches and embeddings", "dropout"))
    g = p.add_argument_group("optimiser (defaults from --recipe)")
    g.add_argument("--recipe", choices=sorted(RECIPES), default=d.recipe,
                   help="tuned: warm-up + cosine AdamW; course: the chapter's Adam at constant 3e-4")
    g.add_argument("--lr", type=float, help=by_recipe("peak learning rate", "lr"))
    g.add_argument("--min-lr", type=float, help=by_recipe("learning rate at the end of the cosine decay", "min_lr"))
    g.add_argument("--schedule", choices=["cosine", "constant"], help=by_recipe("learning-rate schedule", "schedule"))
    g.add_argument("--warmup-steps", type=int, help=by_recipe("linear warm-up steps", "warmup_steps"))
    g.add_argument("--beta1", type=float, default=d.beta1)
    g.add_argument("--beta2", type=float, help=by_recipe("Adam beta2", "beta2"))
    g.add_argument("--weight-decay", type=float, help=by_recipe("decoupled weight decay on matrices only", "weight_decay"))
    g.add_argument("--grad-clip", type=float, help=by_recipe("clip the gradient norm; 0 = off", "grad_clip"))
    g.add_argument("--dtype", choices=DTYPES, default=d.dtype,
                   help="matmuls of the training step: auto = bf16 where the CPU has AVX512_BF16 or AMX, "
                   "else fp32; weights, Adam, evaluation and exports stay fp32")
    g = p.add_argument_group("output")
    g.add_argument("--sample-tokens", type=int, default=d.sample_tokens,
                   help="characters sampled at each evaluation; 0 = no sample")
    g.add_argument("--sample-prompt", default=d.sample_prompt)
    g.add_argument("--no-export", dest="export", action="store_false",
                   help="skip writing model.ts, model.pt2, model.onnx and model.json at the end")
    g.add_argument("--tensorboard", action="store_true", help="also log scalars to <out>/tensorboard")
    g.add_argument("--progress", choices=["auto", "bar", "lines"], default=d.progress,
                   help="auto: a progress bar on a terminal, plain lines otherwise")
    g.add_argument("--dry-run", action="store_true",
                   help="check flags, corpus, world size and --out, then exit (make train runs this first)")
    return p


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    args = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    recipe = RECIPES[args["recipe"]]
    for key, value in recipe.items():
        if args.get(key) is None:
            args[key] = value
    cfg = TrainConfig(**{f.name: args[f.name] for f in fields(TrainConfig)})
    _check(cfg)
    return cfg


def _check(cfg: TrainConfig) -> None:
    positive = ["steps", "batch_size", "eval_every", "eval_iters", "block_size", "n_layer", "n_head", "n_embd"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.n_embd % cfg.n_head:
        raise UsageError(f"--n-embd {cfg.n_embd} is not a multiple of --n-head {cfg.n_head}: choose values that divide")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UsageError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.lr <= 0 or cfg.min_lr < 0:
        raise UsageError("--lr must be positive and --min-lr not negative")
    for name in ("warmup_steps", "save_every", "sample_tokens"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative")
