"""Every value a run depends on, as plain fields, each overridable from the command line.

Two recipes set the optimiser defaults: `tuned` (the default, which reaches the course's
promised losses at step 3000) and `course` (the chapter's Adam at a constant 3e-4).
Any flag given explicitly wins over the recipe.
"""

import argparse
import math
import sys
from dataclasses import asdict, dataclass, field, fields

from common.cli import OneLineParser, UsageError
from trainer.precision import DTYPES

@dataclass
class TrainConfig:
    # data and files
    data: str | None = None
    out: str = "checkpoints"
    resume: str | None = None
    extend: bool = False  # with --resume: allow a --steps other than the snapshot's
    # run length and batch
    steps: int = 3000
    batch_size: int = 32  # global: split evenly across the ranks
    eval_every: int = 300
    eval_iters: int = 20
    save_every: int = 0  # 0: at every evaluation
    seed: int = 1337
    timeout: int = 300  # seconds a rank waits in a collective for the others
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
    # The fields set on the command line (not defaults): on --resume, the others come from the snapshot.
    given: frozenset = field(default=frozenset(), repr=False, compare=False)

    def to_dict(self) -> dict:
        values = asdict(self)
        values.pop("given")
        return values

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
                   help="continue from a snapshot (default <out>/model.pt) with its settings, to its final step")
    g.add_argument("--extend", action="store_true",
                   help="with --resume: train to a new --steps total (the schedule is recomputed for it)")
    g = p.add_argument_group("run")
    g.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total (on --resume: the snapshot's)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch in windows, split across ranks")
    g.add_argument("--eval-every", type=int, default=d.eval_every, help="evaluate every N steps (and at step 1 and the last)")
    g.add_argument("--eval-iters", type=int, default=d.eval_iters, help="batches per split in each evaluation")
    g.add_argument("--save-every", type=int, default=d.save_every, help="snapshot every N steps; 0 = at every evaluation")
    g.add_argument("--seed", type=int, default=d.seed, help="seeds weights, batches and dropout")
    g.add_argument("--timeout", type=int, default=d.timeout,
                   help="seconds a process waits for the others at a synchronisation point before it stops "
                   "and names the one that stopped answering")
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
    g.add_argument("--min-lr", type=float, help=by_recipe("learning rate at the end of the cosine decay, at most --lr", "min_lr"))
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
    g.add_argument("--sample-prompt", default=d.sample_prompt,
                   help="start of each sample; its characters must occur in the corpus")
    g.add_argument("--no-export", dest="export", action="store_false",
                   help="skip writing model.ts, model.pt2, model.onnx and model.json at the end")
    g.add_argument("--tensorboard", action="store_true", help="also log scalars to <out>/tensorboard")
    g.add_argument("--progress", choices=["auto", "bar", "lines"], default=d.progress,
                   help="auto: a progress bar on a terminal, plain lines otherwise")
    g.add_argument("--dry-run", action="store_true",
                   help="check flags, corpus, world size and --out, then exit (make train runs this first)")
    return p


class _Unset:
    """Marks a flag the command line did not give (argparse keeps a value already in the namespace)."""


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    unset = _Unset()
    names = [f.name for f in fields(TrainConfig) if f.name != "given"]
    args = vars(parser.parse_args(sys.argv[1:] if argv is None else argv,
                                  argparse.Namespace(**{name: unset for name in names})))
    given = frozenset(name for name in names if args[name] is not unset)
    recipe = RECIPES[parser.get_default("recipe") if args["recipe"] is unset else args["recipe"]]
    for name in names:
        if args[name] is unset:
            args[name] = parser.get_default(name)
        if args[name] is None and name in recipe:
            args[name] = recipe[name]
    if "min_lr" not in given:
        args["min_lr"] = min(args["min_lr"], args["lr"])  # a low --lr alone: the decay ends at it
    cfg = TrainConfig(**{name: args[name] for name in names}, given=given)
    _check(cfg)
    return cfg


# Every float flag: (lowest, highest, is the lowest itself allowed, is the highest), and why.
FLOAT_RANGES = {
    "lr": (0.0, 1.0, False, True),  # Adam moves each weight by about lr a step: above 1, nothing is learnt
    "min_lr": (0.0, 1.0, True, True),
    "beta1": (0.0, 1.0, True, False),  # Adam's moving averages need a factor below 1
    "beta2": (0.0, 1.0, True, False),
    "weight_decay": (0.0, 1.0, True, True),  # AdamW scales weights by 1 - lr * weight_decay each step
    "grad_clip": (0.0, math.inf, True, False),  # 0 = off
    "dropout": (0.0, 1.0, True, False),
}


def _check_float(name: str, value: float) -> None:
    low, high, low_ok, high_ok = FLOAT_RANGES[name]
    inside = math.isfinite(value) and (low < value or (low_ok and value == low)) and (
        value < high or (high_ok and value == high))
    if not inside:
        interval = f"{'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}"
        flag = "--" + name.replace("_", "-")
        default = RECIPES["tuned"].get(name, getattr(TrainConfig, name))
        raise UsageError(f"{flag} must be a finite number in {interval}, got {value}: e.g. {flag} {default:g}")


def _check(cfg: TrainConfig) -> None:
    positive = ["steps", "batch_size", "eval_every", "eval_iters", "block_size", "n_layer", "n_head", "n_embd", "timeout"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
    if cfg.block_size < 2:
        # The exports give the time axis a torch.export Dim(min=1, max=block_size), which needs max > min.
        raise UsageError("--block-size must be at least 2 (a 1-character context cannot be exported): e.g. --block-size 128")
    if cfg.n_embd % cfg.n_head:
        raise UsageError(f"--n-embd {cfg.n_embd} is not a multiple of --n-head {cfg.n_head}: choose values that divide")
    for name in FLOAT_RANGES:
        _check_float(name, getattr(cfg, name))
    if cfg.schedule == "cosine" and cfg.min_lr > cfg.lr:
        raise UsageError(f"--min-lr {cfg.min_lr:g} is above --lr {cfg.lr:g}: the cosine decays from --lr to "
                         "--min-lr, so pass a --min-lr no larger than --lr")
    for name in ("warmup_steps", "save_every", "sample_tokens"):
        if getattr(cfg, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must not be negative")
    if cfg.sample_prompt == "":
        raise UsageError("--sample-prompt is empty: give at least one character, or --sample-tokens 0 for no samples")
    if cfg.extend and (cfg.resume is None or "steps" not in cfg.given):
        raise UsageError("--extend changes the length of a resumed run: use it with --resume and --steps N")


# What a resumed run takes from its snapshot's train_config unless given on this command line:
# its length, schedule, batches, model and samples. Files, logging and the dtype are this
# invocation's own.
RESUMED_FIELDS = ("steps", "batch_size", "eval_every", "eval_iters", "save_every", "seed", "block_size",
                  "n_layer", "n_head", "n_embd", "dropout", "recipe", "lr", "min_lr", "schedule",
                  "warmup_steps", "beta1", "beta2", "weight_decay", "grad_clip", "sample_tokens", "sample_prompt")


def continue_snapshot(cfg: TrainConfig, saved: dict) -> None:
    """Give cfg the settings of the snapshot it resumes (`saved`, its train_config)."""
    for name in RESUMED_FIELDS:
        recipe_given = "recipe" in cfg.given and name in COURSE_RECIPE  # --recipe now sets these
        if name in saved and name not in cfg.given and not recipe_given:
            setattr(cfg, name, saved[name])
    _check(cfg)


def check_run_length(cfg: TrainConfig, saved: dict, step: int, path) -> None:
    """A resumed run trains on to the snapshot's own total, which it has not reached yet.

    A --steps other than the snapshot's would change the learning-rate schedule under a
    half-trained model, so it needs --extend.
    """
    total = saved.get("steps", cfg.steps)
    if cfg.steps != total and not cfg.extend:
        raise UsageError(f"{path} is a run of {total} steps and --steps {cfg.steps} would change its schedule: "
                         f"leave --steps out to finish it, or add --extend to train to {cfg.steps}")
    if step >= cfg.steps:
        raise UsageError(f"{path} has finished its {cfg.steps} steps, nothing to resume: train further with "
                         "--steps N --extend, or write the exports with make export")


def choose_sample_prompt(cfg: TrainConfig, vocab: str, corpus_start: str) -> str | None:
    """Check --sample-prompt against the corpus's characters before training, not at the first sample.

    A corpus without the default prompt's characters samples from its own first characters
    instead; returns the note that says so (None when nothing changed).
    """
    missing = "".join(sorted(set(cfg.sample_prompt) - set(vocab)))
    if not cfg.sample_tokens or not missing:
        return None
    if "sample_prompt" in cfg.given:
        raise UsageError(f"--sample-prompt {cfg.sample_prompt!r} has characters the corpus lacks ({missing!r}): "
                         "use characters of the corpus, or --sample-tokens 0 for no samples")
    default, cfg.sample_prompt = cfg.sample_prompt, corpus_start[:len(cfg.sample_prompt)]
    return (f"note: the corpus lacks characters of the default --sample-prompt {default!r}; "
            f"samples start from the corpus's first characters, {cfg.sample_prompt!r}")
