"""A run's setup, as one straight line: every check that can fail on bad input, before the first step.

Each step runs on every rank, or where the run folder is concerned on the processes that keep
the run's files (the first of each node: trainer.nodes), and a UsageError on any rank stops all
of them together (distributed.refused_together), so bad input is one line and exit status 2, never a rank
left waiting for the others. `check_run` is the same line for a world that has not started yet:
make train's launcher and `python -m trainer --dry-run` call it, without a process group.
"""

from dataclasses import dataclass

from common.cli import UsageError
from common.dist_env import DistEnv
from model import GPTConfig
from trainer import checkpoint, distributed, memory, nodes
from trainer.config import RunOptions, TrainConfig, check_run_length, check_split, resolve
from trainer.data import Corpus, load_corpus, resolve_corpus
from trainer.run_folder import RunFolder


@dataclass
class PreparedRun:
    """What the setup hands the trainer: the run's two types, its corpus, the checkpoint it
    continues (None: from scratch), its folder, and whether this process keeps the run's files
    (nodes.keeps_files)."""

    cfg: TrainConfig
    options: RunOptions
    corpus: Corpus
    saved: checkpoint.Checkpoint | None
    folder: RunFolder
    keeps_files: bool


def prepare(cfg: TrainConfig, options: RunOptions, env: DistEnv, check_only: bool = False) -> PreparedRun:
    """The run the command line asks for (config.parse's `cfg` and `options`, checked before any
    file is read or fetched), set up: on --resume the checkpoint's settings fill in what the
    command line leaves out, and the corpus settles the sample prompt (final_config). `check_only`
    (the dry run): the lock on --out is checked, not held, and nothing is printed but errors.
    """
    with distributed.refused_together():
        check_processes(cfg, options, env)
    with distributed.refused_together():  # after check_processes, where each machine's first tokenizes
        corpus = read_corpus(options, cfg)
    folder = RunFolder(options.out)
    keeps = nodes.keeps_files(env, options.out)
    try:
        with distributed.refused_together():
            saved = open_folder(folder, options, env, check_only) if keeps else None
        saved = nodes.agreed_checkpoint(env, folder.resume_path(options.resume), options.resume, saved, keeps,
                                        check_only)
        with distributed.refused_together():
            cfg, options = final_config(options, folder, corpus, saved)
        with distributed.refused_together():
            check_memory(cfg, corpus, env)
    except UsageError:
        if keeps:
            folder.abandon()  # refused before anything was written: --out is left as it was
        raise
    if not check_only:
        print_notes(cfg, options, saved, env)
    return PreparedRun(cfg, options, corpus, saved, folder, keeps)


def check_run(cfg: TrainConfig, options: RunOptions, env: DistEnv) -> None:
    """Every check of the setup, for a world of env.world_size processes that has not started:
    the flags, the corpus (fetched once here, not by every worker), --out and the checkpoint.

    `env` is the first process of a node (make train's launcher: this node's first rank), which
    checks the --out it writes."""
    prepare(cfg, options, env, check_only=True)


def check_processes(cfg: TrainConfig, options: RunOptions, env: DistEnv) -> None:
    """The world size must split the batch; the corpus is fetched and tokenized by one process per
    machine (the other ranks then find it in the token cache)."""
    # The first few process counts that divide the batch, found among the first 1024: a batch of
    # 10**8 windows is no reason to try 10**8 divisors (seconds) before every run.
    counts = ", ".join([str(n) for n in range(1, min(cfg.batch_size, 1024) + 1) if cfg.batch_size % n == 0][:6])
    multiple = -(-cfg.batch_size // env.world_size) * env.world_size  # the next one up
    check_split(cfg.batch_size, env.world_size, f"use a process count that divides {cfg.batch_size} "
                f"(NPROC={counts}) or a --batch-size that {env.world_size} processes split (e.g. {multiple})")
    if env.local_rank == 0:
        load_corpus(resolve_corpus(options.data, download=True), cfg.block_size)


def read_corpus(options: RunOptions, cfg: TrainConfig) -> Corpus:
    return load_corpus(resolve_corpus(options.data, download=False), cfg.block_size)


def open_folder(folder: RunFolder, options: RunOptions, env: DistEnv, check_only: bool) -> checkpoint.Checkpoint | None:
    """Claim --out (writable, not in use by another run) and load the checkpoint to continue.

    On a run over several machines, a checkpoint to resume missing here is for
    nodes.agreed_checkpoint to report, with the node that has it."""
    folder.claim(check_only=check_only)
    if options.resume is None and env.restart == 0 and not options.start_over:
        check_no_stopped_run(folder)
    several_machines = env.world_size > env.local_world_size
    if options.resume is not None and several_machines and not folder.resume_path(options.resume).exists():
        return None
    return folder.checkpoint_to_resume(options.resume, env.run_id, env.restart)


def check_no_stopped_run(folder: RunFolder) -> None:
    """A new run would overwrite the checkpoint and metrics of a run stopped in --out, and with them
    the only way to finish it: refused unless --start-over says so. A finished run's checkpoint (its
    exports stand beside it) and a file that is no checkpoint of ours are replaced as before."""
    try:
        saved = checkpoint.load(folder.checkpoint) if folder.checkpoint.is_file() else None
    except UsageError:
        return
    if saved is not None and saved.step < saved.train_config["steps"]:
        raise UsageError(f"{folder.checkpoint} holds a run stopped at step {saved.step} of "
                         f"{saved.train_config['steps']}: finish it with --resume (ARGS=\"--resume\" for make), "
                         "train in another --out (OUT= for make), or pass --start-over to replace it")


def final_config(options: RunOptions, folder: RunFolder, corpus: Corpus,
                 saved: checkpoint.Checkpoint | None) -> tuple[TrainConfig, RunOptions]:
    """The run's final two types: on --resume the checkpoint's settings under the command line's,
    the sample prompt settled on the corpus. A checkpoint to continue must fit this run's model
    shape and corpus, and on --resume have steps left to train.

    A worker torchrun restarted continues its own run without --resume: its command line is the
    run's own, so the checkpoint's settings are not needed."""
    resumed = saved is not None and options.resume is not None
    cfg, options = resolve(options.command_line, saved.train_config if resumed else None, corpus)
    if saved is not None:
        path = folder.resume_path(options.resume)
        checkpoint.check_compatible(saved, path, model_config(cfg, corpus), corpus.vocab)
        if resumed:
            check_run_length(cfg, options.extend, saved.train_config, saved.step, path)
    return cfg, options


def check_memory(cfg: TrainConfig, corpus: Corpus, env: DistEnv) -> None:
    """A step this machine's memory cannot hold is refused before the model is built."""
    memory.check_fits(model_config(cfg, corpus), cfg.batch_size // env.world_size, env.local_world_size,
                      memory.machine_bytes())


def notes(cfg: TrainConfig, options: RunOptions) -> list[str]:
    """What a run given these values should know, though they are allowed: a flag with no effect."""
    lines = []
    if cfg.warmup_steps >= cfg.steps and cfg.schedule != "constant":
        lines.append(f"note: --warmup-steps {cfg.warmup_steps} is not shorter than the run's {cfg.steps} steps: "
                     "the learning rate never reaches --lr")
    idle = [flag for name, flag in (("muon_momentum", "--muon-momentum"), ("muon_weight_decay", "--muon-weight-decay"))
            if name in options.command_line]
    if cfg.muon_lr == 0 and idle:
        lines.append(f"note: {' and '.join(idle)} have no effect without Muon (--muon-lr 0, as --recipe "
                     f"{cfg.recipe} sets it unless --muon-lr is given)")
    return lines


def prompt_note(cfg: TrainConfig, options: RunOptions) -> str | None:
    """The note for a run whose samples do not start from the default --sample-prompt it was left
    at (resolve took the corpus's first characters instead), or None."""
    default = TrainConfig.sample_prompt
    if "sample_prompt" in options.command_line or cfg.sample_prompt == default:
        return None
    return (f"note: the corpus lacks characters of the default --sample-prompt {default!r}; "
            f"samples start from the corpus's first characters, {cfg.sample_prompt!r}")


def print_notes(cfg: TrainConfig, options: RunOptions, saved: checkpoint.Checkpoint | None, env: DistEnv) -> None:
    """The notes of a run about to train: the sample prompt it did not keep (on each machine), and
    flags without effect (once)."""
    note = prompt_note(cfg, options)
    if note and saved is None and env.first_on_node:
        print(note, flush=True)
    if env.is_main:
        for line in notes(cfg, options):
            print(line, flush=True)


def model_config(cfg: TrainConfig, corpus: Corpus) -> GPTConfig:
    return GPTConfig(vocab_size=len(corpus.vocab), block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)
