"""python -m bench.quality: time to quality, the seconds of training each recipe needs to reach a validation loss.

Each recipe trains --steps steps under torchrun at --nproc processes, as `make train` runs it;
the textbook loop trains the same steps in this process at torch's default threads. All
evaluate on the same batches every --eval-every steps. For each run the table gives the first
evaluation at or below --target (its step and the training seconds up to it, evaluation
excluded), or "not within N steps", and the final losses. Written as JSON to --out.
"""

import json
import math
import sys
import tempfile
import time
from pathlib import Path

from common.cli import OneLineParser, UsageError, command

TARGET = 1.50  # the course chapter's promise: a validation loss of about 1.5


def build_parser() -> OneLineParser:
    from trainer.config import TrainConfig  # no torch: --help stays quick

    prog, description = __doc__.splitlines()[0].split(": ", 1)
    p = OneLineParser(prog=prog, description=description)
    p.add_argument("--data", help="UTF-8 corpus (default data/tinyshakespeare.txt)")
    p.add_argument("--steps", type=int, default=3000, help="training steps of every run (default 3000)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (default 100)")
    p.add_argument("--eval-iters", type=int, default=TrainConfig.eval_iters,
                   help=f"batches per split in each evaluation (default {TrainConfig.eval_iters}, the trainer's)")
    p.add_argument("--target", type=float, default=TARGET, help=f"validation loss to reach (default {TARGET})")
    p.add_argument("--nproc", type=int, default=2, help="processes of each recipe's run (default 2)")
    p.add_argument("--recipes", default="muon,adamw", help="comma-separated trainer recipes (default muon,adamw)")
    p.add_argument("--no-textbook", dest="textbook", action="store_false", help="leave the textbook loop out")
    p.add_argument("--out", default="bench/quality.json", help="JSON results file (default bench/quality.json)")
    return p


def first_at_or_below(evaluations: list[dict], target: float) -> dict | None:
    """The first evaluation record whose val_loss is at most target, None if there is none."""
    return next((e for e in evaluations if e["val_loss"] <= target), None)


def quality_row(name: str, evaluations: list[dict], target: float, steps: int, wall_s: float) -> dict:
    """One run's figures from its evaluation records (step, train_loss, val_loss, train_s)."""
    reached, last = first_at_or_below(evaluations, target), evaluations[-1]
    return {"run": name, "steps": steps, "target": target,
            "step_at_target": reached["step"] if reached else None,
            "train_s_at_target": reached["train_s"] if reached else None,
            "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
            "best_val_loss": min(e["val_loss"] for e in evaluations),
            "train_s": last["train_s"], "wall_s": wall_s,
            "evaluations": [{key: e[key] for key in ("step", "train_loss", "val_loss", "train_s")}
                            for e in evaluations]}


def quality_table(rows: list[dict]) -> str:
    lines = ["| run | first val <= target: step | training s to it | val at end | train at end | best val "
             "| training s | wall s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reached = (f"{r['step_at_target']} | {r['train_s_at_target']:.0f}" if r["step_at_target"] is not None
                   else f"not within {r['steps']} steps | -")
        lines.append(f"| {r['run']} | {reached} | {r['final_val_loss']:.4f} | {r['final_train_loss']:.4f} | "
                     f"{r['best_val_loss']:.4f} | {r['train_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join(lines)


def train_recipe(recipe: str, nproc: int, data: str, steps: int, eval_every: int,
                 eval_iters: int) -> tuple[list[dict], float]:
    """The evaluation records of one trainer run under torchrun, and its wall seconds."""
    from bench.processes import TORCHRUN, run_module
    from common.dist_env import DistEnv
    from trainer.distributed import threads_per_rank
    from trainer.metrics import read_metrics

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as out:
        started = time.perf_counter()
        run_module(*TORCHRUN, "--standalone", f"--nproc-per-node={nproc}", "-m", "trainer",
                   "--data", data, "--out", out, "--recipe", recipe, "--steps", steps, "--eval-every", eval_every,
                   "--eval-iters", eval_iters, "--sample-tokens", 0, "--no-export", "--progress", "lines",
                   what=f"the {recipe} run",
                   OMP_NUM_THREADS=threads_per_rank(DistEnv(local_world_size=nproc)))
        wall = time.perf_counter() - started
        return read_metrics(Path(out) / "metrics.jsonl")[1], wall


def train_textbook(data: str, steps: int, eval_every: int, eval_iters: int) -> tuple[list[dict], float]:
    """The textbook loop's evaluation records (the trainer's batches and evaluation), and its wall seconds."""
    from bench.textbook import block_size, train
    from trainer.data import load_corpus

    started = time.perf_counter()
    records = train(load_corpus(data, block_size), steps, eval_every, eval_iters)
    return records, time.perf_counter() - started


# The make variable of each flag make bench-quality passes, for the errors.
MAKE_VARIABLES = {"steps": "QUALITY_STEPS", "target": "TARGET", "nproc": "NPROC"}


def check_values(args) -> None:
    """Each count at least 1 and the target a positive finite loss, one line naming the bad one."""
    for name in ("steps", "eval_every", "eval_iters", "nproc"):
        if getattr(args, name) < 1:
            raise UsageError(f"{flag_of(name)} must be at least 1, got {getattr(args, name)}")
    if not (math.isfinite(args.target) and args.target > 0):
        raise UsageError(f"{flag_of('target')} must be a positive finite validation loss, got {args.target}: "
                         f"e.g. {TARGET}")


def flag_of(name: str) -> str:
    flag = "--" + name.replace("_", "-")
    return f"{flag} ({MAKE_VARIABLES[name]}= for make)" if name in MAKE_VARIABLES else flag


@command
def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    recipes = [r for r in args.recipes.split(",") if r]
    from trainer.config import RECIPES, TrainConfig, check_split

    unknown = [r for r in recipes if r not in RECIPES]
    if unknown or not (recipes or args.textbook):
        raise UsageError(f"--recipes {args.recipes!r}: name recipes of the trainer ({', '.join(RECIPES)}), "
                         "comma-separated")
    check_values(args)
    check_split(TrainConfig.batch_size, args.nproc, f"use an --nproc that divides {TrainConfig.batch_size}")
    from bench.run import cpu_name, progress
    from bench.timing import check_out_file
    from common.files import atomic_write
    from trainer.data import resolve_corpus

    check_out_file(Path(args.out), "QUALITY_OUT")
    data = str(resolve_corpus(args.data, download=True))
    rows = []
    for recipe in recipes:
        progress(f"the {recipe} recipe at NPROC={args.nproc}: {args.steps} steps")
        evaluations, wall = train_recipe(recipe, args.nproc, data, args.steps, args.eval_every, args.eval_iters)
        rows.append(quality_row(f"{recipe} recipe, NPROC={args.nproc}", evaluations, args.target, args.steps, wall))
    if args.textbook:
        progress(f"the textbook loop: {args.steps} steps")
        evaluations, wall = train_textbook(data, args.steps, args.eval_every, args.eval_iters)
        rows.append(quality_row("textbook loop", evaluations, args.target, args.steps, wall))
    results = {"cpu": cpu_name(), "steps": args.steps, "eval_every": args.eval_every, "target": args.target,
               "rows": rows}
    print(f"\n{results['cpu']}: first evaluation (every {args.eval_every} steps) at val <= {args.target}\n")
    print(quality_table(rows))
    atomic_write(Path(args.out), lambda f: f.write((json.dumps(results, indent=2) + "\n").encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
