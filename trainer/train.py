"""The training loop: DDP over gloo, one global batch split across ranks, Muon and AdamW, periodic evaluation.

Read top to bottom: `run` is the whole run as a list of calls, `Trainer.train` loops over steps,
and each step is `train_step`; `evaluate`, `save_checkpoint` and `load_checkpoint` do the rest.
The setup before the first step is trainer/setup.py.
"""

import importlib
import math
import sys
import time
from dataclasses import dataclass, field
from functools import partial

import torch

from common import defaults
from common.cli import lasting_imports
from common.dist_env import DistEnv
from model import GPT, count_parameters, generate, next_token_loss
from trainer import checkpoint, distributed, memory, precision
from trainer.average import WeightAverage
from trainer.config import RunOptions, TrainConfig
from trainer.data import Batches, Corpus, stream_seed
from trainer.metrics import MetricsLog
from trainer.optim import make_optimizer, state_names
from trainer.outputs import write_outputs
from trainer.progress import Progress, banner
from trainer.resume import launched_by, resume_command
from trainer.run_folder import RunFolder
from trainer.schedule import lr_at
from trainer.setup import PreparedRun, model_config, prepare
from trainer.stopping import Diverged, Divergence, LastCheckpointLost, Standing, Stopping, peer_failure


@dataclass(frozen=True)
class TrainerOptions:
    """How a Trainer runs its step, where python -m bench.levers compares other choices.

    ddp: the keyword arguments of DistributedDataParallel (distributed.DDP_OPTIONS by default).
    compile: run the model through torch.compile (inductor); off by default, since its first
    step waits for the compilation (docs/speed.md has the figures).
    """

    ddp: dict = field(default_factory=lambda: dict(distributed.DDP_OPTIONS))
    compile: bool = False


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, corpus: Corpus, saved: checkpoint.Checkpoint | None = None,
                 options: TrainerOptions = TrainerOptions(), keeps_files: bool = True,
                 run_options: RunOptions = RunOptions(), folder: RunFolder | None = None):
        """`keeps_files`: this process writes the run's files (setup.prepare says which do);
        `folder`: the run folder setup.prepare built (by default, run_options.out's)."""
        self.cfg, self.run_options, self.env, self.corpus = cfg, run_options, env, corpus
        self.keeps_files = keeps_files
        self.folder = folder or RunFolder(run_options.out)
        self.resume_command = launched_by() or resume_command(run_options.command_line, env)
        self.model_config = model_config(cfg, corpus)
        self.dtype, self.dtype_reason = precision.resolve_dtype(run_options.dtype)
        memory.keep_freed_memory()  # wherever a Trainer steps: the trainer, and the bench's rows
        torch.manual_seed(cfg.seed)  # the initial weights
        self.raw_model = GPT(self.model_config)
        self.optimizer = make_optimizer(self.raw_model, cfg, precision.torch_dtype(self.dtype))
        self.average = WeightAverage(self.raw_model, cfg.ema_decay)  # what is evaluated, sampled and saved
        # This rank's windows of each split: the same global batches whatever the world size.
        self.batches = {split: Batches(data, cfg.seed, cfg.batch_size, cfg.block_size, env.rank, env.world_size)
                        for split, data in (("train", corpus.train), ("val", corpus.val))}
        self.step = 0
        self.last_losses: dict = {}
        if saved is not None:
            self.load_checkpoint(saved)
        # DDP broadcasts rank 0's parameters at construction, then all-reduces every gradient.
        model = torch.compile(self.raw_model) if options.compile else self.raw_model
        self.model = distributed.wrap(model, env, options.ddp, run_options.grad_compression)
        self.stopping = Stopping(env)
        self.saved_step: int | None = None  # the step of the last checkpoint this run wrote
        self.save_error = ""  # why the last failed checkpoint write failed

    # -- one optimiser step ---------------------------------------------------------------

    def train_step(self, step: int) -> tuple[float, bool]:
        """One step on this rank's slice of the global batch. Returns (global loss, stop requested)."""
        cfg, env = self.cfg, self.env
        x, y = self.batches["train"].draw("train", step)
        # Dropout masks depend only on (seed, step, rank): a resumed run draws the same ones.
        torch.manual_seed(stream_seed(cfg.seed, "dropout", step, env.rank))
        self.optimizer.set_lr_scale(self._lr(step) / cfg.lr)
        self.optimizer.zero_grad(set_to_none=True)
        with precision.autocast(self.dtype):
            loss = next_token_loss(self.model(x), y)
        loss.backward()  # DDP all-reduces (averages) the gradients here
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        self.average.update(self.raw_model, step)
        # One small collective gives every rank the global loss and any rank's stop request.
        loss_sum, stops = distributed.all_reduce_sum([loss.item(), float(self.stopping.requested)])
        return loss_sum / env.world_size, stops > 0

    def _lr(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.schedule)

    # -- evaluation, sampling, checkpoints ------------------------------------------------------

    @torch.inference_mode()
    def evaluate(self, step: int) -> dict:
        """Mean loss of the weights' average over eval_iters global batches per split, each batch
        split across ranks."""
        cfg, env = self.cfg, self.env
        sums = []
        for split, batches in self.batches.items():
            total = 0.0
            for i in range(cfg.eval_iters):
                x, y = batches.draw(f"eval-{split}", step, index=i)
                total += next_token_loss(self.average.model(x), y).item()
            sums.append(total)
        train_sum, val_sum = distributed.all_reduce_sum(sums)
        scale = cfg.eval_iters * env.world_size
        return {"train": train_sum / scale, "val": val_sum / scale}

    def sample(self, step: int) -> str:
        """The evaluation sample at `step`: its own seed per step, so successive samples are
        independent draws (not edits of one string), and a rerun prints the same ones."""
        cfg = self.cfg
        ids = generate(self.average.model, self.corpus.encode(cfg.sample_prompt), cfg.sample_tokens,
                       cfg.block_size, temperature=defaults.TEMPERATURE, top_k=None,
                       generator=torch.Generator().manual_seed(stream_seed(cfg.seed, "sample", step)))
        return self.corpus.decode(ids)

    def save_checkpoint(self) -> None:
        """On the processes that keep the run's files. A failed write (full disk) leaves the
        previous checkpoint in place."""
        averaged = self.cfg.ema_decay > 0  # else the average is the weights themselves: saved once
        saved = checkpoint.Checkpoint(
            model=self.average.state_dict(), model_config=self.model_config.to_dict(), vocab=self.corpus.vocab,
            step=self.step, optimizer=self.optimizer.state_dict(), train_config=self.cfg.to_dict(),
            losses=self.last_losses, world_size=self.env.world_size, run_id=self.env.run_id,
            training_weights=self.raw_model.state_dict() if averaged else None,
            trained_on={"corpus": self.run_options.data or "", "dtype": self.dtype})
        try:
            checkpoint.save(self.folder.checkpoint, saved)
            self.saved_step = self.step
        except OSError as exc:
            self.save_error = exc.strerror or type(exc).__name__
            if self.step < self.cfg.steps:  # the last step's failure is the run's error (_train_loop)
                print(f"warning: could not write {self.folder.checkpoint} ({self.save_error}); the previous "
                      "checkpoint is kept, and the next checkpoint tries again", file=sys.stderr, flush=True)

    def load_checkpoint(self, saved: checkpoint.Checkpoint) -> None:
        """The weights, the optimiser's moments and the step of `saved`; the optimiser's settings
        are this run's (Optimizers.load_state_dict). The random state needs no restoring: every
        step seeds its own dropout (train_step)."""
        self.raw_model.load_state_dict(saved.stepped_weights)
        self.average.load_state_dict(saved.model)
        shapes = {name: tuple(p.shape) for name, p in self.raw_model.named_parameters()}
        self.optimizer.load_state_dict(saved.optimizer, state_names(shapes, saved.train_config))
        self.step = saved.step
        self.last_losses = saved.losses

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> int:
        """Train to cfg.steps. Returns the process exit status (128 + signal when stopped early)."""
        with self.stopping.watching():
            try:
                return self._train_loop()
            except Diverged as exc:
                cfg = self.cfg
                return self.stopping.end(Divergence(exc.step, exc.what, cfg.lr, cfg.grad_clip), self.standing())
            except RuntimeError as exc:
                return self.stopping.end(peer_failure(exc, self.env, self.run_options.timeout), self.standing())

    def _train_loop(self) -> int:
        cfg, env = self.cfg, self.env
        metrics = MetricsLog(self.folder, self.step or None, self.run_options.tensorboard, write=self.keeps_files)
        progress = Progress(env.first_on_node, self.run_options.progress, cfg.steps, self.step)
        stop = False
        try:
            progress.print(banner(cfg, env, self.step, count_parameters(self.raw_model), torch.get_num_threads(),
                                  self.corpus.describe(), f"{self.dtype} matmuls ({self.dtype_reason})"))
            while self.step < cfg.steps and not stop:
                stop = self._one_step(metrics, progress)
        except KeyboardInterrupt:  # a second Ctrl-C (Stopping.request): stop now; the last checkpoint stands
            stop = True
        finally:
            progress.close()  # the bar first, so that the last lines come after it
            metrics.close()
        if stop:
            return self.stopping.end(self.stopping.stop_signal(), self.standing())
        if self.env.is_main and self.saved_step != self.step:
            return self.stopping.end(LastCheckpointLost(self.save_error), self.standing())
        progress.print(metrics.done_line(self.step, self.folder.checkpoint))
        return 0

    def _one_step(self, metrics: MetricsLog, progress: Progress) -> bool:
        """The next step, its record, and the evaluation and checkpoint due at it; True: stop here."""
        cfg, env = self.cfg, self.env
        step = self.step + 1
        started = time.perf_counter()
        loss, stop = self.train_step(step)
        if not math.isfinite(loss):
            raise Diverged(step, f"the training loss is {loss}")
        self.step = step
        metrics.step(step, loss, self._lr(step), time.perf_counter() - started)
        progress.update(loss)
        if evaluation_due(cfg, step):
            self.last_losses = self.evaluate(step)
            if not all(map(math.isfinite, self.last_losses.values())):
                raise Diverged(step, "the evaluation loss is not finite")
            progress.print(metrics.evaluation(step, self.last_losses, env.world_size))
            if cfg.sample_tokens:
                # Every rank draws it (the same text; rank 0 shows it): drawn by rank 0 alone, a long
                # sample would keep the others waiting at the next collective, against --timeout.
                text = self.sample(step)
                progress.print("  sample: " + text.replace("\n", " / "))
        if checkpoint_due(cfg, step) or stop:
            # Every rank holds the same weights, so every rank reaches the same verdict.
            if not all(torch.isfinite(p).all() for p in self.raw_model.parameters()):
                raise Diverged(step, "the weights are no longer finite")
            if self.keeps_files:
                self.save_checkpoint()
            else:  # another process writes this folder's (this node's first, or an earlier node's on this machine)
                self.saved_step = self.step
        return stop

    def standing(self) -> Standing:
        """Where the run stands, for the line that ends it."""
        return Standing(self.step, self.saved_step, self.folder.checkpoint, self.resume_command)


def evaluation_due(cfg: TrainConfig, step: int) -> bool:
    """Evaluate at step 1 (the untrained loss), every --eval-every steps, and at the last step."""
    return step == 1 or step % cfg.eval_every == 0 or step == cfg.steps


def checkpoint_due(cfg: TrainConfig, step: int) -> bool:
    """A checkpoint every --save-every steps, or at every evaluation without it, and at the last step."""
    every = step % cfg.save_every == 0 if cfg.save_every else evaluation_due(cfg, step)
    return every or step == cfg.steps


def run(cfg: TrainConfig, options: RunOptions) -> int:
    """The whole run of one rank: process group, setup, training, and the files at the end (on the
    first process of each node: trainer.nodes). `cfg`, `options`: the command line's (config.parse)."""
    env = DistEnv.from_environ()
    distributed.init(env, options.timeout)
    trainer = None
    try:
        prepared = prepare(cfg, options, env)
        # torch.optim's optimizers and DDP import it (under torchrun, distributed.init already has):
        # here, after the checks, which refuse bad input sooner without it.
        with lasting_imports():
            importlib.import_module("torch._dynamo")
        trainer = trainer_of(prepared, env)
        status = trainer.train()
        if status == 0 and trainer.keeps_files:
            status = finish_run(trainer)
        return status
    finally:
        # DDP holds the process group: drop it first, so the group's worker threads are joined
        # now and not during interpreter shutdown (where they abort the process).
        del trainer
        distributed.shutdown()


def trainer_of(run: PreparedRun, env: DistEnv) -> Trainer:
    return Trainer(run.cfg, env, run.corpus, run.saved, keeps_files=run.keeps_files, run_options=run.options,
                   folder=run.folder)


def finish_run(trainer: Trainer) -> int:
    """After the last step, where the run's files are kept: the loss picture and the exports (unless
    --no-plot, --no-export). Returns the exit status: 128 + the signal when a stop signal cut them short."""
    options = trainer.run_options
    if not (options.plot or options.export):
        return 0
    write = partial(write_outputs, trainer.folder, len(trainer.corpus.vocab), options.plot, options.export)
    return trainer.stopping.finish(write, trainer.standing(), options.export)
