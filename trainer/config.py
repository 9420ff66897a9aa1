"""A run's values, each overridable from the command line, in two types resolved once.

TrainConfig is what the run depends on: a checkpoint saves it and a resumed run restores it.
RunOptions is how this invocation runs it (its files, its dtype, its output), never restored.
Each field is declared once, with `option`: its default, its --help text and group, and its
limits. The parser, `resolve` and the checks are built from those declarations.

Three recipes set the optimiser defaults: `muon` (the default: Muon for the blocks' matrices,
AdamW for the rest), `adamw` (AdamW alone, warm-up and cosine) and `course` (the chapter's Adam
at a constant 3e-4). Any flag given explicitly wins over the recipe.
"""

import argparse
import math
from dataclasses import Field, asdict, dataclass, field, fields

from common import defaults
from common.cli import OneLineParser, UsageError
from trainer.precision import DTYPES

# The --help groups; --help shows them in the order of their first field below.
FILES, RUN, SHAPE, OUTPUT = "data and files", "run", "model shape", "output"
OPTIMISER = "optimiser (defaults from --recipe)"
# A year. gloo adds the timeout to the clock in nanoseconds and overflows far above it (from about
# 9e9 s; a Python timedelta from 8.6e13 s).
MAX_TIMEOUT = 365 * 24 * 3600
# How the gradients travel DDP's all-reduce (trainer.distributed.GRAD_COMPRESSION_HOOKS maps each to its hook).
GRAD_COMPRESSIONS = ("none", "bf16")


def option(default, help: str | None = None, *, group: str, at_least: int | None = None, at_most: int | None = None,
           within: str | None = None, recipes: dict | None = None, choices=None, flag: str | None = None,
           **argparse_kwargs):
    """A field of TrainConfig with its flag: `--name-with-dashes` unless `flag` says otherwise.

    at_least: the lowest allowed int (0 reads "must not be negative"); at_most: the highest, where a
    larger value would overflow what takes it (with at_least, the error names the range). within: the allowed
    interval of a float, written as the errors show it, e.g. "(0, 1]"; values must also be finite.
    recipes: the other recipes' values ({"adamw": ..., "course": ...}); the default is the
    `muon` recipe's, and the flag's own default is None so the recipe fills it in. The flag's
    type is the field's (int, float, str; a bool is a switch). argparse_kwargs go to
    add_argument as they are (nargs, metavar).
    """
    return field(default=default, metadata=dict(group=group, help=help, at_least=at_least, at_most=at_most,
                                                 within=within, recipes=recipes, choices=choices, flag=flag,
                                                 argparse=argparse_kwargs))


@dataclass
class TrainConfig:
    """What a run depends on: saved in its checkpoint, restored on --resume unless given again."""

    # run length and batch
    steps: int = option(3000, "optimiser steps in total (on --resume: the checkpoint's)", group=RUN, at_least=1)
    batch_size: int = option(32, "global batch in windows, split across ranks", group=RUN, at_least=1)
    eval_every: int = option(300, "evaluate every N steps (and at step 1 and the last)", group=RUN, at_least=1)
    eval_iters: int = option(20, "batches per split in each evaluation", group=RUN, at_least=1)
    save_every: int = option(0, "a checkpoint every N steps; 0 = at every evaluation", group=RUN, at_least=0)
    seed: int = option(1337, "seeds weights, batches and dropout", group=RUN, at_least=0, at_most=defaults.MAX_SEED)
    # model shape
    block_size: int = option(128, "context length in characters", group=SHAPE, at_least=1)
    n_layer: int = option(4, group=SHAPE, at_least=1)
    n_head: int = option(4, group=SHAPE, at_least=1)
    n_embd: int = option(128, group=SHAPE, at_least=1)
    dropout: float = option(0.0, "dropout on residual branches and embeddings", group=SHAPE,
                            recipes=dict(adamw=0.0, course=0.0), within="[0, 1)")
    # optimiser and schedule (defaults come from the recipe)
    recipe: str = option("muon", "muon: Muon for the blocks' matrices + AdamW, cosine from step 1; adamw: AdamW "
                         "alone, warm-up + cosine; course: the chapter's Adam at constant 3e-4",
                         group=OPTIMISER, choices=("muon", "adamw", "course"))  # the names of RECIPES below
    # Adam moves each weight by about lr a step: above 1, nothing is learnt.
    lr: float = option(2e-3, "peak learning rate of AdamW", group=OPTIMISER, recipes=dict(adamw=2e-3, course=3e-4),
                       within="(0, 1]")
    min_lr: float = option(1e-4, "AdamW's learning rate at the end of the cosine decay, at most --lr (the other "
                           "rates end at the same fraction of theirs)", group=OPTIMISER,
                           recipes=dict(adamw=1e-4, course=3e-4), within="[0, 1]")
    schedule: str = option("cosine", "learning-rate schedule", group=OPTIMISER,
                           recipes=dict(adamw="cosine", course="constant"), choices=("cosine", "wsd", "constant"))
    warmup_steps: int = option(0, "linear warm-up steps", group=OPTIMISER, recipes=dict(adamw=100, course=0),
                               at_least=0)
    beta1: float = option(0.9, group=OPTIMISER, within="[0, 1)")  # Adam's moving averages need a factor below 1
    beta2: float = option(0.99, "Adam beta2", group=OPTIMISER, recipes=dict(adamw=0.99, course=0.999),
                          within="[0, 1)")
    # AdamW scales weights by 1 - lr * weight_decay each step.
    weight_decay: float = option(0.1, "AdamW's decoupled weight decay, on matrices only", group=OPTIMISER,
                                 recipes=dict(adamw=0.1, course=0.0), within="[0, 1]")
    grad_clip: float = option(1.0, "clip the gradient norm; 0 = off", group=OPTIMISER,
                              recipes=dict(adamw=1.0, course=0.0), within="[0, inf)")
    # A character's embedding row learns only from the windows it occurs in, so a higher rate pays;
    # a lower one on the head's weight makes the last steps quieter (docs/training.md).
    embed_lr: float = option(6e-3, "peak learning rate of AdamW for the token and position embeddings; 0 = --lr",
                             group=OPTIMISER, recipes=dict(adamw=0.0, course=0.0), within="[0, 1]")
    head_lr: float = option(1e-3, "peak learning rate of AdamW for the output head's weight; 0 = --lr",
                            group=OPTIMISER, recipes=dict(adamw=0.0, course=0.0), within="[0, 1]")
    # Muon's update has a spectral norm near 1, so its rate is a step size per matrix: 0.02 is the usual one.
    muon_lr: float = option(0.02, "peak learning rate of Muon for the blocks' matrices; 0 = AdamW for them too",
                            group=OPTIMISER, recipes=dict(adamw=0.0, course=0.0), within="[0, 1]")
    muon_momentum: float = option(0.95, "Muon's Nesterov momentum", group=OPTIMISER, within="[0, 1)")
    muon_weight_decay: float = option(0.2, "Muon's decoupled weight decay", group=OPTIMISER,
                                      recipes=dict(adamw=0.0, course=0.0), within="[0, 1]")
    # The average spans about 1 / (1 - decay) steps: 100 at 0.99.
    ema_decay: float = option(0.99, "decay per step of the moving average of the weights that evaluations, samples "
                              "and exports use; 0 = the weights themselves", group=OPTIMISER,
                              recipes=dict(adamw=0.0, course=0.0), within="[0, 1)")
    # what the samples show
    sample_tokens: int = option(120, "characters sampled at each evaluation; 0 = no sample", group=OUTPUT, at_least=0)
    sample_prompt: str = option(defaults.PROMPT, "start of each sample; its characters must occur in the corpus",
                                group=OUTPUT)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunOptions:
    """How this invocation runs the run: its files, the link and the dtype it runs on now, what it
    shows and leaves behind. Never restored from a checkpoint."""

    # data and files
    data: str | None = option(None, defaults.CORPUS_HELP, group=FILES)
    out: str = option("checkpoints", "directory for model.pt, metrics.jsonl, loss.png and exports", group=FILES)
    resume: str | None = option(None, "continue from a checkpoint (default <out>/model.pt) with its settings, to its "
                                "final step", group=FILES, nargs="?", const="", metavar="CKPT")
    extend: bool = option(False, "with --resume: train to a new --steps total (the schedule is recomputed for it)",
                          group=FILES)
    start_over: bool = option(False, "without --resume: start from scratch in an --out whose run stopped before its "
                              "last step, replacing its checkpoint and metrics", group=FILES)
    # how the ranks meet
    timeout: int = option(300, "seconds a process waits for the others at a synchronisation point before it stops "
                          "and names the one that stopped answering", group=RUN, at_least=1, at_most=MAX_TIMEOUT)
    # DDP's bf16 hook halves the bytes of the gradient all-reduce; only worth it where the link,
    # not the CPU, bounds the step (docs/scaling.md has the figures).
    grad_compression: str = option("none", "gradients travel the all-reduce as: none = fp32, bf16 = rounded to "
                                   "bf16 (half the bytes, for slow links between machines)", group=RUN,
                                   choices=GRAD_COMPRESSIONS)
    # bf16 autocast where the CPU has native bf16 (trainer/precision.py), else fp32
    dtype: str = option("auto", "matmuls of the training step: auto = bf16 where the CPU has AVX512_BF16 or AMX, "
                        "else fp32; weights, Adam, evaluation and exports stay fp32", group=OPTIMISER, choices=DTYPES)
    # what a run leaves behind and shows
    export: bool = option(True, "skip writing model.ts, model.pt2, model.onnx, hf/ and model.json at the end",
                          group=OUTPUT, flag="--no-export")
    plot: bool = option(True, "skip drawing loss.png at the end (make plot draws it from metrics.jsonl)",
                        group=OUTPUT, flag="--no-plot")
    tensorboard: bool = option(False, "also log scalars to <out>/tensorboard", group=OUTPUT)
    progress: str = option("auto", "auto: a progress bar on a terminal, plain lines otherwise", group=OUTPUT,
                           choices=("auto", "bar", "lines"))
    dry_run: bool = option(False, "check flags, corpus, world size and --out, then exit (make train runs this first)",
                           group=OUTPUT)
    # The values the command line gave ({field name: value}, both types'): the flags of the resume command.
    command_line: dict = field(default_factory=dict, repr=False, compare=False)


# --help shows the groups in this order, and in each group TrainConfig's flags before RunOptions'.
GROUPS = (FILES, RUN, SHAPE, OPTIMISER, OUTPUT)


def option_fields() -> list[Field]:
    """The fields that are flags, both types', in --help's order (which is also the flags' order)."""
    both = [f for cls in (TrainConfig, RunOptions) for f in fields(cls) if "group" in f.metadata]
    return sorted(both, key=lambda f: GROUPS.index(f.metadata["group"]))


def flag_of(f: Field) -> str:
    """The command-line flag of a field of option_fields()."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")

TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig))


# The values each recipe sets: `muon` is the defaults above, the others say their own.
RECIPE_FIELDS = tuple(f.name for f in option_fields() if f.metadata["recipes"] is not None)
RECIPES = {"muon": {f.name: f.default for f in option_fields() if f.name in RECIPE_FIELDS}} | {
    recipe: {f.name: f.metadata["recipes"][recipe] for f in option_fields() if f.metadata["recipes"] is not None}
    for recipe in ("adamw", "course")}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (recipe values say their own defaults)."""

    def _get_help_string(self, action):
        if action.default is None or isinstance(action.default, bool):  # a switch: its text says what it does
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m trainer",
        description="Train the character-level Shakespeare GPT, on one process or under "
        "torchrun (torchrun --standalone --nproc-per-node=N -m trainer ...).",
        formatter_class=_HelpFormatter,
    )
    groups = {}
    for f in option_fields():
        meta = f.metadata
        if meta["group"] not in groups:
            groups[meta["group"]] = p.add_argument_group(meta["group"])
        kwargs = dict(meta["argparse"], dest=f.name, default=f.default, help=meta["help"])
        if f.type is bool:
            kwargs["action"] = "store_false" if f.default else "store_true"
        else:
            kwargs.update(type={int: int, float: float_flag}.get(f.type), choices=meta["choices"])
        if meta["recipes"] is not None:
            # None: resolve fills in the recipe's value, and --help names every recipe's value.
            values = ", ".join(f"{recipe}: {RECIPES[recipe][f.name]}" for recipe in RECIPES)
            kwargs.update(default=None, help=f"{meta['help'] or f.name} ({values})")
        groups[meta["group"]].add_argument(flag_of(f), **kwargs)
    return p


def float_flag(text: str) -> float:
    """A float flag's value; one too small for a float (1e-400 reads as 0, which would turn Muon off
    for --muon-lr) is refused rather than taken as 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if value == 0 and any(digit in "123456789" for digit in text.lower().split("e")[0]):
        raise argparse.ArgumentTypeError(f"{text} is too small for a float (it would be 0): give 0 or a larger value")
    return value


class _Unset:
    """Marks a flag the command line did not give (argparse keeps a value already in the namespace)."""


def parse(argv: list[str]) -> tuple[TrainConfig, RunOptions]:
    """The run `argv` asks for, before a checkpoint or a corpus is seen, checked: each process's one
    parse of its command line (RunOptions.command_line keeps what it gave, for the final resolve)."""
    return resolve(read_command_line(argv))


def read_command_line(argv: list[str]) -> dict:
    """The flags `argv` gives, as {field name: value}; the fields it leaves out are not in it."""
    unset = _Unset()
    names = [f.name for f in option_fields()]
    args = vars(build_parser().parse_args(argv, argparse.Namespace(**{name: unset for name in names})))
    return {name: value for name, value in args.items() if value is not unset}


def saved_config_problem(saved: dict) -> str | None:
    """What is wrong with a checkpoint's train_config, or None: a TrainConfig field that is missing,
    of another type, or outside its flag's limits (a hand-edited or foreign checkpoint). Other keys
    (older checkpoints saved this invocation's files and dtype too) are not read."""
    missing = [name for name in TRAIN_FIELDS if name not in saved]
    if missing:
        return f"it lacks {', '.join(map(repr, missing[:3]))}{' and more' * (len(missing) > 3)}"
    options = {f.name: f for f in option_fields()}
    for name in TRAIN_FIELDS:
        if name in saved and not _fits(options[name], saved[name]):
            return f"{name!r} is {saved[name]!r}, not a value --{name.replace('_', '-')} takes"
    return None


def _fits(f: Field, value) -> bool:
    """Whether `value` has the field's type and lies within its declared limits and choices."""
    meta = f.metadata
    if isinstance(value, bool) or not isinstance(value, {int: int, float: (int, float)}.get(f.type, str)):
        return False
    if meta["choices"] is not None:
        return value in meta["choices"]
    if meta["within"] is not None:
        return _inside(value, meta["within"])
    low, high = meta["at_least"], meta["at_most"]
    return (low is None or value >= low) and (high is None or value <= high)


def resolve(command_line: dict, saved: dict | None = None, corpus=None) -> tuple[TrainConfig, RunOptions]:
    """The run's two types, checked: the command line (read_command_line's) over the checkpoint's
    train_config (`saved`, on --resume) over the recipe over the defaults.

    A --recipe on the command line sets the recipe's fields itself, so the checkpoint's values of
    those fields do not apply. Without --min-lr, the recipe's --min-lr is lowered to a given --lr
    below it (a low --lr alone: the decay ends at it). Of `saved`, TrainConfig's fields are read,
    any other key is not. With the `corpus` (its vocab and start(n)), the sample prompt is settled:
    one it cannot start is refused when given, replaced by the corpus's first characters when not.
    """
    values = {f.name: f.default for f in option_fields()}
    values.update(RECIPES[command_line.get("recipe", TrainConfig.recipe)])
    values["min_lr"] = min(values["min_lr"], command_line.get("lr", values["lr"]))
    if saved is not None:
        values.update({name: saved[name] for name in TRAIN_FIELDS if name in saved
                       and not ("recipe" in command_line and name in RECIPE_FIELDS)})
    values.update(command_line)
    options = RunOptions(**{name: values[name] for name in values if name not in TRAIN_FIELDS},
                         command_line=dict(command_line))
    cfg = TrainConfig(**{name: values[name] for name in TRAIN_FIELDS})
    _check(cfg, options)
    if corpus is not None:
        cfg.sample_prompt = sample_prompt(cfg, "sample_prompt" in command_line, corpus)
    return cfg, options


def _inside(value: float, interval: str) -> bool:
    """Whether value is a finite number in an interval written like "[0, 1)" ("[" and "]" include the end)."""
    low, high = (float(end) for end in interval[1:-1].split(","))
    return math.isfinite(value) and (low < value or (interval[0] == "[" and value == low)) and (
        value < high or (interval[-1] == "]" and value == high))


def _check_limits(f: Field, value) -> None:
    """A field's own limits, declared with it."""
    flag, at_least, at_most, within = flag_of(f), f.metadata["at_least"], f.metadata["at_most"], f.metadata["within"]
    if at_most is not None and not at_least <= value <= at_most:
        raise UsageError(f"{flag} must be a whole number from {at_least} to {at_most}, got {value}: "
                         f"e.g. {flag} {f.default}")
    if at_least is not None and value < at_least:
        raise UsageError(f"{flag} must not be negative" if at_least == 0 else
                         f"{flag} must be at least {at_least}, got {value}")
    if within is not None and not _inside(value, within):
        raise UsageError(f"{flag} must be a finite number in {within}, got {value}: e.g. {flag} {f.default:g}")


def _check(cfg: TrainConfig, options: RunOptions) -> None:
    for f in option_fields():
        _check_limits(f, getattr(cfg if f.name in TRAIN_FIELDS else options, f.name))
    if cfg.block_size < 2:
        # The exports give the time axis a torch.export Dim(min=1, max=block_size), which needs max > min.
        raise UsageError("--block-size must be at least 2 (a 1-character context cannot be exported): "
                         "e.g. --block-size 128")
    if cfg.n_embd % cfg.n_head:
        raise UsageError(f"--n-embd {cfg.n_embd} is not a multiple of --n-head {cfg.n_head}: choose values that divide")
    if cfg.schedule != "constant" and cfg.min_lr > cfg.lr:
        raise UsageError(f"--min-lr {cfg.min_lr:g} is above --lr {cfg.lr:g}: the {cfg.schedule} schedule decays from "
                         "--lr to --min-lr, so pass a --min-lr no larger than --lr")
    if options.out == "":
        raise UsageError("--out is empty: name the directory for the run's files, e.g. --out checkpoints")
    if cfg.sample_prompt == "":
        raise UsageError("--sample-prompt is empty: give at least one character, or --sample-tokens 0 for no samples")
    if options.extend and (options.resume is None or "steps" not in options.command_line):
        raise UsageError("--extend changes the length of a resumed run: use it with --resume and --steps N")


def check_run_length(cfg: TrainConfig, extend: bool, saved: dict, step: int, path) -> None:
    """A resumed run trains on to the checkpoint's own total, which it has not reached yet.

    A --steps other than the checkpoint's (`saved`: its train_config) would change the
    learning-rate schedule under a half-trained model, so it needs --extend.
    """
    total = saved.get("steps", cfg.steps)
    if cfg.steps != total and not extend:
        raise UsageError(f"{path} is a run of {total} steps and --steps {cfg.steps} would change its schedule: "
                         f"leave --steps out to finish it, or add --extend to train to {cfg.steps}")
    if step > cfg.steps:
        raise UsageError(f"{path} is at step {step}, past --steps {cfg.steps}: --extend trains on to a larger total, "
                         f"so give --steps above {step}")
    if step == cfg.steps:
        raise UsageError(f"{path} has finished its {cfg.steps} steps, nothing to resume: train further with "
                         "--steps N --extend, or write the exports with make export")


def check_split(batch_size: int, processes: int, fix: str) -> None:
    """The global batch is split evenly across the processes (ranks), or the run is refused;
    `fix` says how to choose a count that divides it, in the words of the command that asked."""
    if batch_size % processes:
        raise UsageError(f"the global batch of {batch_size} windows does not split evenly over {processes} "
                         f"processes: {fix}")


def sample_prompt(cfg: TrainConfig, given: bool, corpus) -> str:
    """The prompt of the evaluation samples, checked against the corpus's characters before
    training, not at the first sample. `given`: --sample-prompt is on the command line.

    A corpus without the default prompt's characters samples from its own first characters.
    """
    missing = "".join(sorted(set(cfg.sample_prompt) - set(corpus.vocab)))
    if not cfg.sample_tokens or not missing:
        return cfg.sample_prompt
    if given:
        raise UsageError(f"--sample-prompt {cfg.sample_prompt!r} has characters the corpus lacks ({missing!r}): "
                         "use characters of the corpus, or --sample-tokens 0 for no samples")
    return corpus.start(len(cfg.sample_prompt))
