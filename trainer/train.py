"""The training loop: DDP over gloo, one global batch split across ranks, Adam, periodic evaluation.

Read top to bottom: `run` prepares everything, `Trainer.train` loops over steps, and each
step is `train_step`; `evaluate`, `_save_snapshot` and `_load_snapshot` do the rest.
"""

import math
import os
import signal
import sys
import time
from pathlib import Path

import torch

from common import defaults
from common.cli import EXIT_FAILED, UsageError
from common.files import check_writable
from model import GPT, GPTConfig, count_parameters, generate, next_token_loss
from trainer import checkpoint, distributed, lock, memory, precision
from trainer.config import TrainConfig, check_run_length, check_split, choose_sample_prompt, continue_snapshot
from trainer.data import Batches, Corpus, load_corpus, resolve_corpus, stream_seed
from trainer.distributed import DistEnv
from trainer.launch import resume_command
from trainer.metrics import MetricsLog
from trainer.optim import make_optimizer
from trainer.progress import Progress
from trainer.schedule import lr_at


class Diverged(Exception):
    """A loss or a weight is no longer finite at `step`: training cannot go on from here."""

    def __init__(self, step: int, what: str):
        super().__init__(what)
        self.step, self.what = step, what


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, corpus: Corpus, snapshot: dict | None,
                 ddp_options: dict | None = None):
        self.cfg, self.env, self.corpus = cfg, env, corpus
        self.out = Path(cfg.out)
        self.snapshot_path = self.out / defaults.SNAPSHOT
        self.model_config = model_config(cfg, corpus)
        self.dtype, self.dtype_reason = precision.resolve_dtype(cfg.dtype)
        memory.keep_freed_memory()  # wherever a Trainer steps: the trainer, and the bench's rows
        torch.manual_seed(cfg.seed)  # the initial weights
        self.raw_model = GPT(self.model_config)
        self.optimizer = make_optimizer(self.raw_model, cfg, precision.torch_dtype(self.dtype))
        # This rank's windows of each split: the same global batches whatever the world size.
        self.batches = {split: Batches(data, cfg.seed, cfg.batch_size, cfg.block_size, env.rank, env.world_size)
                        for split, data in (("train", corpus.train), ("val", corpus.val))}
        self.step = 0
        self.last_losses: dict = {}
        if snapshot is not None:
            self._load_snapshot(snapshot)
        # DDP broadcasts rank 0's parameters at construction, then all-reduces every gradient.
        self.model = distributed.wrap(self.raw_model, env, **(ddp_options or {}))
        self.stop_signal = 0
        self.saved_step: int | None = None  # the step of the last snapshot this run wrote

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
        # One small collective gives every rank the global loss and any rank's stop request.
        loss_sum, stops = distributed.all_reduce_sum([loss.item(), float(self.stop_signal > 0)])
        return loss_sum / env.world_size, stops > 0

    def _lr(self, step: int) -> float:
        cfg = self.cfg
        return lr_at(step, cfg.lr, cfg.min_lr, cfg.warmup_steps, cfg.steps, cfg.schedule)

    # -- evaluation, sampling, snapshots --------------------------------------------------------

    @torch.inference_mode()
    def evaluate(self, step: int) -> dict:
        """Mean loss over eval_iters global batches per split, each batch split across ranks."""
        cfg, env = self.cfg, self.env
        self.raw_model.eval()
        sums = []
        for split, batches in self.batches.items():
            total = 0.0
            for i in range(cfg.eval_iters):
                x, y = batches.draw(f"eval-{split}", step, index=i)
                total += next_token_loss(self.raw_model(x), y).item()
            sums.append(total)
        self.raw_model.train()
        train_sum, val_sum = distributed.all_reduce_sum(sums)
        scale = cfg.eval_iters * env.world_size
        return {"train": train_sum / scale, "val": val_sum / scale}

    def sample(self, step: int) -> str:
        """The evaluation sample at `step`: its own seed per step, so successive samples are
        independent draws (not edits of one string), and a rerun prints the same ones."""
        cfg = self.cfg
        self.raw_model.eval()
        ids = generate(self.raw_model, self.corpus.encode(cfg.sample_prompt), cfg.sample_tokens,
                       cfg.block_size, temperature=defaults.TEMPERATURE, top_k=None,
                       generator=torch.Generator().manual_seed(stream_seed(cfg.seed, "sample", step)))
        self.raw_model.train()
        return self.corpus.decode(ids)

    def _save_snapshot(self) -> None:
        """Rank 0 only. A failed write (full disk) leaves the previous snapshot in place."""
        snapshot = {
            "model": self.raw_model.state_dict(),
            "model_config": self.model_config.to_dict(),
            "vocab": self.corpus.vocab,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "train_config": self.cfg.to_dict(),
            "rng": {"torch": torch.get_rng_state()},
            "losses": self.last_losses,
            "world_size": self.env.world_size,
            "run_id": os.environ.get("TORCHELASTIC_RUN_ID", ""),
        }
        try:
            checkpoint.save(self.snapshot_path, snapshot)
            self.saved_step = self.step
        except OSError as exc:
            print(f"warning: could not write {self.snapshot_path} ({exc.strerror}); "
                  "the previous snapshot is kept, and the next snapshot tries again", file=sys.stderr, flush=True)

    def _load_snapshot(self, snapshot: dict) -> None:
        self.raw_model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        torch.set_rng_state(snapshot["rng"]["torch"])
        self.step = snapshot["step"]
        self.last_losses = snapshot.get("losses", {})

    # -- the loop ---------------------------------------------------------------------------

    def train(self) -> int:
        """Train to cfg.steps. Returns the process exit status (128 + signal when stopped early)."""
        previous = self._install_signal_handlers()
        stop_watching = distributed.watch_launcher(self._launcher_gone)
        try:
            return self._train_loop()
        except Diverged as exc:
            # Every rank stops at the same step (all see the same global numbers); no snapshot.
            if self.env.is_main:
                print(f"error: training diverged at step {exc.step} ({exc.what}), so it stopped; "
                      f"{self._snapshot_state()}; try a lower --lr (now {self.cfg.lr:g}) or a gradient clip "
                      f"(--grad-clip 1.0, now {self.cfg.grad_clip:g})", file=sys.stderr, flush=True)
            return EXIT_FAILED
        except RuntimeError as exc:
            silent = distributed.silent_rank(exc, self.env)
            if silent is None:
                raise
            print(f"error: {silent} stopped answering: no reply within --timeout {self.cfg.timeout:g} s "
                  f"after step {self.step} (a frozen, swapped-out or unreachable process); "
                  f"{self._snapshot_state()}; resume with: {resume_command()}", file=sys.stderr, flush=True)
            return EXIT_FAILED
        finally:
            stop_watching()
            # The handlers refer to this Trainer, and through it to DDP and the process group:
            # left installed, they keep the group's threads alive into interpreter shutdown.
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _train_loop(self) -> int:
        cfg, env = self.cfg, self.env
        metrics = MetricsLog(self.out, self.step or None, cfg.tensorboard, write=env.is_main)
        progress = Progress(env.is_main, cfg.progress, cfg.steps, self.step)
        try:
            progress.print(self._banner())
            while self.step < cfg.steps:
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
                    if cfg.sample_tokens and env.is_main:  # only rank 0 shows it: only rank 0 draws it
                        progress.print("  sample: " + self.sample(step).replace("\n", " / "))
                if snapshot_due(cfg, step) or stop:
                    # Every rank holds the same weights, so every rank reaches the same verdict.
                    if not all(torch.isfinite(p).all() for p in self.raw_model.parameters()):
                        raise Diverged(step, "the weights are no longer finite")
                    if env.is_main:
                        self._save_snapshot()
                if stop:
                    progress.close()  # the bar first, so that the last lines come after it
                    progress.print(f"stopped at step {step}: {self._snapshot_state()}\n"
                                   f"resume with: {resume_command()}")
                    return 128 + (self.stop_signal or signal.SIGTERM)
            progress.close()
            progress.print(metrics.done_line(self.step, self.snapshot_path))
            return 0
        finally:
            progress.close()
            metrics.close()

    def _snapshot_state(self) -> str:
        if self.saved_step == self.step:
            return f"snapshot saved to {self.snapshot_path}"
        if self.saved_step is not None:
            return f"the last good snapshot, {self.snapshot_path} at step {self.saved_step}, is kept"
        return f"{self.snapshot_path} is left as it was"

    def _launcher_gone(self, launcher_pid: int) -> None:
        """Called by the watchdog thread: finish this step, snapshot and stop, as on SIGTERM."""
        if self.env.is_main:
            print(f"warning: the launcher (torchrun, pid {launcher_pid}) is gone: stopping after this step",
                  file=sys.stderr, flush=True)
        self.stop_signal = self.stop_signal or signal.SIGTERM

    def _banner(self) -> str:
        cfg, env = self.cfg, self.env
        where = f"resuming at step {self.step}" if self.step else "from scratch"
        muon = f"Muon lr {cfg.muon_lr:g}, " if cfg.muon_lr else ""
        return (f"training {count_parameters(self.raw_model):,} parameters, {where}: {cfg.steps} steps, "
                f"global batch {cfg.batch_size} x {cfg.block_size} over {env.world_size} process(es) "
                f"x {torch.get_num_threads()} thread(s), vocab {len(self.corpus.vocab)}, "
                f"recipe {cfg.recipe} ({muon}lr {cfg.lr:g}, {cfg.schedule}), "
                f"{self.dtype} matmuls ({self.dtype_reason})")

    def _install_signal_handlers(self) -> dict:
        """SIGINT/SIGTERM finish the current step, snapshot, and stop every rank together.

        Returns the handlers they replace."""

        def request_stop(signum, frame):
            if self.stop_signal:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.stop_signal = signum

        return {signum: signal.signal(signum, request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}


def evaluation_due(cfg: TrainConfig, step: int) -> bool:
    """Evaluate at step 1 (the untrained loss), every --eval-every steps, and at the last step."""
    return step == 1 or step % cfg.eval_every == 0 or step == cfg.steps


def snapshot_due(cfg: TrainConfig, step: int) -> bool:
    """Snapshot every --save-every steps, or at every evaluation without it, and at the last step."""
    every = step % cfg.save_every == 0 if cfg.save_every else evaluation_due(cfg, step)
    return every or step == cfg.steps


def model_config(cfg: TrainConfig, corpus: Corpus) -> GPTConfig:
    return GPTConfig(vocab_size=len(corpus.vocab), block_size=cfg.block_size, n_layer=cfg.n_layer,
                     n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout)


def check_out_dir(out: Path) -> None:
    """Fail before training, not at the first snapshot, when --out cannot be written."""
    try:
        check_writable(out)
    except OSError as exc:
        raise UsageError(f"cannot write to --out {out} ({exc.strerror}): "
                         "choose a writable directory with --out (OUT= for make)") from None


def resume_path(cfg: TrainConfig) -> Path | None:
    """--resume [CKPT], or, after torchrun restarted the workers, this run's own last snapshot."""
    if cfg.resume is not None:
        return Path(cfg.resume or Path(cfg.out) / defaults.SNAPSHOT)
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    path = Path(cfg.out) / defaults.SNAPSHOT
    if restarted and path.is_file():
        return path
    return None


def prepare(cfg: TrainConfig, env: DistEnv) -> tuple[Corpus, dict | None]:
    """Every check that can fail on bad input, agreed by all ranks so they stop together."""
    error = None
    snapshot = None
    corpus = None
    note = None
    try:
        check_split(cfg.batch_size, env.world_size,
                    f"use a process count that divides {cfg.batch_size} (NPROC=1, 2, 4 ...) or another --batch-size")
        # Only one process per machine may download the corpus; the others wait for it.
        if env.local_rank == 0:
            resolve_corpus(cfg.data, download=True)
    except UsageError as exc:
        error = str(exc)
    distributed.agree_on_error(env, error)
    try:
        corpus = load_corpus(resolve_corpus(cfg.data, download=False), cfg.block_size)
        # Before --out is touched. A resumed run then takes the snapshot's prompt, unless given.
        note = choose_sample_prompt(cfg, corpus.vocab, corpus.decode(corpus.train[:len(cfg.sample_prompt)].tolist()))
        if env.is_main:
            check_out_dir(Path(cfg.out))
            # Before any file of the run is read or written; held until this process exits.
            # The dry run (make train's, before torchrun) only checks: the workers take the lock.
            lock.acquire(Path(cfg.out))
            if cfg.dry_run:
                lock.release(Path(cfg.out))
            path = resume_path(cfg)
            if path is not None:
                snapshot = checkpoint.load(path)
                if cfg.resume is not None:
                    continue_snapshot(cfg, snapshot["train_config"])
                checkpoint.check_compatible(snapshot, path, model_config(cfg, corpus), corpus.vocab)
                if cfg.resume is not None:
                    check_run_length(cfg, snapshot["train_config"], snapshot["step"], path)
                if cfg.resume is None and snapshot.get("run_id") != os.environ.get("TORCHELASTIC_RUN_ID"):
                    snapshot = None  # a snapshot of an earlier run, not of this restarted one
    except UsageError as exc:
        error = str(exc)
    distributed.agree_on_error(env, error)
    snapshot = distributed.broadcast_from_main(env, snapshot)
    if snapshot is not None and cfg.resume is not None and not env.is_main:
        continue_snapshot(cfg, snapshot["train_config"])  # as rank 0 did above
    if note and env.is_main and not cfg.dry_run and snapshot is None:
        print(note, flush=True)
    return corpus, snapshot


def run(cfg: TrainConfig) -> int:
    env = DistEnv.from_environ()
    if cfg.dry_run:
        # `make train` runs this before torchrun starts (with WORLD_SIZE set), so bad input is
        # one line from one process, and the corpus is downloaded once, not by every worker.
        prepare(cfg, env)
        return 0
    distributed.init(env, cfg.timeout)
    trainer = None
    try:
        corpus, snapshot = prepare(cfg, env)
        trainer = Trainer(cfg, env, corpus, snapshot)
        status = trainer.train()
        if status == 0 and env.is_main:
            finish_run(trainer)
        return status
    finally:
        # DDP holds the process group: drop it first, so the group's worker threads are joined
        # now and not during interpreter shutdown (where they abort the process).
        del trainer
        distributed.shutdown()


def finish_run(trainer: Trainer) -> None:
    """Rank 0, after the last step: the loss picture and (unless --no-export) the exports."""
    from export.artifacts import export_checkpoint  # torch.onnx and matplotlib load slowly:
    from trainer.plot import plot_metrics  # only at the end

    # Exporting takes 5-20 s: say so, or the pause after "done:" looks like a hang.
    exports = ", ".join([*defaults.EXPORTS, defaults.MANIFEST])
    what = f"loss.png and the exports ({exports})" if trainer.cfg.export else "loss.png"
    print(f"writing {what} to {trainer.out} ...", flush=True)
    written = []
    try:
        written.append(plot_metrics(trainer.out / "metrics.jsonl", trainer.out / "loss.png"))
    except UsageError as exc:  # the run is trained and saved; a picture that cannot be drawn does not undo that
        print(f"warning: {exc}", file=sys.stderr, flush=True)
    if trainer.cfg.export:
        written += export_checkpoint(trainer.snapshot_path)
    print("wrote " + ", ".join(str(p) for p in written), flush=True)

