"""One run per --out folder: an OS lock on <out>/.trainer.lock, held by the process that writes it.

The lock is flock(2) on an open file: the kernel drops it when the holder exits, however it
exits (kill -9 included), so a dead run never leaves a stale lock behind. Linux emulates flock
with fcntl locks on NFS, so two machines sharing the folder exclude each other too. The file
keeps the holder's pid and host for the message a second run prints; it is never deleted
(deleting a lock file lets two processes lock two different files of the same name).
"""

import fcntl
import os
import socket
import sys
from pathlib import Path

from common.cli import UsageError

LOCK_NAME = ".trainer.lock"

_held: dict[Path, int] = {}  # folder -> open descriptor, for as long as this process holds it


def acquire(out: Path) -> None:
    """Hold the lock on `out` until release(out) or the end of this process.

    UsageError naming the folder and the holder when another process has it."""
    out = Path(out).resolve()
    if out in _held:
        return
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _held[out] = fd


def release(out: Path) -> None:
    fd = _held.pop(Path(out).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor drops the flock

