"""The run folder (--out): the paths of its files, the lock that keeps it to one run, and the
choice of the checkpoint a run continues from.

The lock is flock(2) on <out>/.trainer.lock: the kernel drops it when the holder exits, however
it exits (kill -9 included), so a dead run never leaves a stale lock behind. Linux emulates flock
with fcntl locks on NFS, so two machines sharing the folder exclude each other too. The file
keeps the holder's pid and host for the message a second run prints. It is deleted only by a
run refused before it wrote anything, when that run made the file (and with it any folders it
made), the lock still held; a process that locks a file just deleted sees so and locks the new
one instead.
"""

import fcntl
import os
import socket
import sys
from pathlib import Path

from common import defaults
from common.cli import UsageError
from common.files import check_writable, not_a_file
from trainer import checkpoint

LOCK_NAME = ".trainer.lock"

_held: dict[Path, int] = {}  # folder -> open descriptor, for as long as this process holds it


class RunFolder:
    def __init__(self, out):
        self.path = Path(out)
        self.checkpoint = self.path / defaults.CHECKPOINT
        self.metrics = self.path / defaults.METRICS
        self.loss_plot = self.path / defaults.LOSS_PLOT
        self.tensorboard = self.path / defaults.TENSORBOARD
        self.made: list[Path] = []  # the folders claim() made
        self.made_lock = False  # whether claim() made the lock file

    def claim(self, check_only: bool = False) -> None:
        """Fail now, not at the first checkpoint, when the folder cannot be written or another run
        holds it; then hold it until this process ends. `check_only` (the dry run): check, do not hold."""
        # The folders mkdir is about to make, deepest first: abandon() removes them again.
        self.made = [folder for folder in (self.path, *self.path.parents) if not folder.exists()]
        lock_was_there = os.path.lexists(self.path / LOCK_NAME)
        try:
            check_writable(self.path)
        except OSError as exc:
            raise UsageError(f"cannot write to --out {self.path} ({exc.strerror}): "
                             "choose a writable directory with --out (OUT= for make)") from None
        self.check_entries()
        acquire(self.path, check_only)
        self.made_lock = not lock_was_there  # only once the file is there: a refused claim made none
        if not check_only:
            self.remove_abandoned_temporaries()

    def remove_abandoned_temporaries(self) -> None:
        """The temporary files of writes that a killed run left (.model.pt.*.tmp, ...): with the lock
        held, no other run is writing them."""
        for name in (defaults.CHECKPOINT, defaults.METRICS, defaults.LOSS_PLOT):
            for path in self.path.glob(f".{name}.*.tmp"):
                path.unlink(missing_ok=True)

    def abandon(self) -> None:
        """For a run refused after claim and before writing anything: release the folder, and
        remove what claim made (the lock file, the folder), so that a refusal leaves no trace."""
        if self.made_lock:
            try:
                acquire(self.path)  # held again after the dry run's check: nobody else holds the file
            except UsageError:
                return  # another run took the folder meanwhile: it is theirs now
            (self.path / LOCK_NAME).unlink(missing_ok=True)
        release(self.path)
        for folder in self.made:
            try:
                folder.rmdir()
            except OSError:  # something else was put there meanwhile: leave it
                return

    def check_entries(self, writer: str = "the run", fix: str = "choose another --out (OUT= for make)") -> None:
        """What already stands at the names the run writes must be a regular file (or nothing):
        a directory where model.pt goes would let a whole run train and then lose its weights, a
        FIFO where metrics.jsonl goes would hang rank 0. The folders (hf/, tensorboard/) must
        be folders. make export checks the same before it renames anything (`writer`, `fix`: its words)."""
        files = [LOCK_NAME, defaults.CHECKPOINT, defaults.METRICS, defaults.LOSS_PLOT, *defaults.EXPORTS,
                 defaults.MANIFEST]
        for name in files:
            path = self.path / name
            problem = not_a_file(path) if os.path.lexists(path) else None
            if problem:
                raise UsageError(f"{path} {problem}, and {writer} writes a file there: remove or rename it, "
                                 f"or {fix}")
        for name in (defaults.HF_FOLDER, defaults.TENSORBOARD):
            path = self.path / name
            if os.path.lexists(path) and not path.is_dir():
                raise UsageError(f"{path} is not a folder, and {writer} writes a folder there: remove or rename "
                                 f"it, or {fix}")

    def resume_path(self, resume: str | None) -> Path:
        """The checkpoint --resume [CKPT] names: CKPT, or this folder's."""
        return Path(resume) if resume else self.checkpoint

    def checkpoint_to_resume(self, resume: str | None, run_id: str | None,
                             restart: int) -> checkpoint.Checkpoint | None:
        """The checkpoint this run continues from, loaded, or None to start from scratch.

        --resume [CKPT] names it (default <out>/model.pt). Without --resume, a worker that
        torchrun restarted (restart > 0) continues its own run's <out>/model.pt, but not one an
        earlier run left there: that one is of another run (and maybe another model shape).
        """
        if resume is not None:
            return checkpoint.load(self.resume_path(resume))
        if restart == 0 or not self.checkpoint.is_file():
            return None
        saved = checkpoint.load(self.checkpoint)
        return saved if saved.run_id == run_id else None


def acquire(out: Path, check_only: bool = False) -> None:
    """Hold the lock on `out` until release(out) or the end of this process.

    UsageError naming the folder and the holder when another process has it. `check_only`: only
    that check, with a shared lock let go at once, so that the dry runs of two nodes on one
    machine that share the folder do not refuse each other."""
    out = Path(out).resolve()
    if out in _held:
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if check_only else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        if not same_file(fd, out / LOCK_NAME):  # abandon() deleted it between our open and flock
            os.close(fd)
            return acquire(out, check_only)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise UsageError(
            f"--out {out} is in use by another training run ({holder}): wait for it to end or stop it, "
            "or choose another --out (OUT= for make)"
        ) from None
    except OSError as exc:  # a file system without locks (some network and FUSE ones)
        os.close(fd)
        print(f"warning: cannot lock {out} ({exc.strerror}): nothing stops a second run from writing "
              "into it at the same time", file=sys.stderr, flush=True)
        return
    if check_only:
        os.close(fd)
        return
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[out] = fd


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def release(out: Path) -> None:
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor drops the flock
