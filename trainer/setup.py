"""A run's setup, as one straight line: every check that can fail on bad input, before the first step.

Each step runs on every rank, or where the run folder is concerned on the processes that keep
the run's files (the first of each node: trainer.nodes), and a UsageError on any rank stops all
of them together (distributed.agreed), so bad input is one line and exit status 2, never a rank
left waiting for the others.
"""

import dataclasses

from common.cli import UsageError
from common.dist_env import DistEnv
from model import GPTConfig
from trainer import checkpoint, distributed, memory, nodes
from trainer.config import TrainConfig, check_run_length, check_split, notes, resolve, sample_prompt
from trainer.data import Corpus, load_corpus, resolve_corpus
from trainer.run_folder import RunFolder


def prepare(cfg: TrainConfig, env: DistEnv) -> tuple[TrainConfig, Corpus, dict | None, bool]:
    """The run's final configuration, its corpus, the checkpoint it continues (None: from scratch),
    and whether this process keeps the run's files (nodes.keeps_files).

    `cfg` is the command line's configuration; on --resume the checkpoint's settings fill in
    what the command line leaves out. The dry run (cfg.dry_run) checks the lock without holding it.
    """
    distributed.agreed(env, check_processes, cfg, env)
    corpus = distributed.agreed(env, read_corpus, cfg)
    folder = RunFolder(cfg.out)
    keeps = nodes.keeps_files(env, cfg.out)
    try:
        saved = distributed.agreed(env, open_folder if keeps else skip, folder, cfg, env)
        saved = nodes.agreed_checkpoint(env, cfg, saved, keeps)
        cfg = distributed.agreed(env, continue_run, cfg, corpus, saved)
        distributed.agreed(env, check_memory, cfg, corpus, env)
    except UsageError:
        if keeps:
            folder.abandon()  # refused before anything was written: --out is left as it was
        raise
    return choose_sample_prompt(cfg, corpus, saved, env), corpus, saved, keeps


def check_processes(cfg: TrainConfig, env: DistEnv) -> None:
    """The world size must split the batch; the corpus is fetched and tokenized by one process per
    machine (the other ranks then find it in the token cache)."""
    counts = ", ".join([str(n) for n in range(1, cfg.batch_size + 1) if cfg.batch_size % n == 0][:6])
    multiple = -(-cfg.batch_size // env.world_size) * env.world_size  # the next one up
    check_split(cfg.batch_size, env.world_size, f"use a process count that divides {cfg.batch_size} "
                f"(NPROC={counts}) or a --batch-size that {env.world_size} processes split (e.g. {multiple})")
    if env.local_rank == 0:
        load_corpus(resolve_corpus(cfg.data, download=True), cfg.block_size)


def read_corpus(cfg: TrainConfig) -> Corpus:
    corpus = load_corpus(resolve_corpus(cfg.data, download=False), cfg.block_size)
    sample_prompt(cfg, corpus.vocab, corpus_start(corpus, cfg))  # a --sample-prompt it cannot start, before --out
    return corpus


def open_folder(folder: RunFolder, cfg: TrainConfig, env: DistEnv) -> dict | None:
    """Claim --out (writable, not in use by another run) and load the checkpoint to continue.

    On a run over several machines, a checkpoint to resume missing here is for
    nodes.agreed_checkpoint to report, with the node that has it."""
    folder.claim(check_only=cfg.dry_run)
    if cfg.resume is None and env.restart == 0 and not cfg.start_over:
        check_no_stopped_run(folder)
    several_machines = env.world_size > env.local_world_size
    if cfg.resume is not None and several_machines and not folder.resume_path(cfg.resume).exists():
        return None
    return folder.checkpoint_to_resume(cfg.resume, env.run_id, env.restart)


def skip(*args) -> None:
    return None


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


def continue_run(cfg: TrainConfig, corpus: Corpus, saved: dict | None) -> TrainConfig:
    """On --resume, the checkpoint's settings under the command line's; a checkpoint to continue
    must fit this run's model shape and corpus, and on --resume have steps left to train."""
    if saved is None:
        return cfg
    path = RunFolder(cfg.out).resume_path(cfg.resume)
    if cfg.resume is not None:  # else a worker torchrun restarted: its command line is the run's own
        cfg = resolve(cfg.command_line(), saved.train_config)
    checkpoint.check_compatible(saved, path, model_config(cfg, corpus), corpus.vocab)
    if cfg.resume is not None:
        check_run_length(cfg, saved.train_config, saved.step, path)
    return cfg


def check_memory(cfg: TrainConfig, corpus: Corpus, env: DistEnv) -> None:
    """A step this machine's memory cannot hold is refused before the model is built."""
    memory.check_fits(model_config(cfg, corpus), cfg.batch_size // env.world_size, env.local_world_size,
                      memory.machine_bytes())


def choose_sample_prompt(cfg: TrainConfig, corpus: Corpus, saved: dict | None, env: DistEnv) -> TrainConfig:
    """The configuration with the prompt the samples start from, saying so when it is not the default."""
    prompt, note = sample_prompt(cfg, corpus.vocab, corpus_start(corpus, cfg))
    if note and saved is None and env.first_on_node and not cfg.dry_run:
        print(note, flush=True)
    if env.is_main and not cfg.dry_run:
        for line in notes(cfg):
            print(line, flush=True)
    return dataclasses.replace(cfg, sample_prompt=prompt)


def corpus_start(corpus: Corpus, cfg: TrainConfig) -> str:
    return corpus.decode(corpus.train[:len(cfg.sample_prompt)].tolist())


def model_config(cfg: TrainConfig, corpus: Corpus) -> GPTConfig:
    return GPTConfig(vocab_size=len(corpus.vocab), block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)
