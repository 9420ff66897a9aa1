"""Files are written whole or not at all (a temporary file beside the target, fsync, rename), a
folder is checked for writing before the work that ends in a write begins, and a path that is
not a regular file is named as what it is.

A crash, a kill or a full disk during a write leaves the previous file untouched.
"""

import io
import os
import stat
import tempfile
from pathlib import Path

from common.cli import UsageError

# What a path is, by the type bits of its stat, for the errors that name it.
KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def atomic_write(path: Path, write) -> None:
    """Call write(file_object), put what it wrote in a temporary file beside `path`, fsync it,
    then rename it over `path`. A full disk raises OSError (errno ENOSPC).

    write() fills a buffer in memory, and the bytes reach the disk here: libraries that write
    to the file themselves report a full disk in their own way (torch.save as a RuntimeError
    saying "file write failed"), which callers could not tell from a bug.
    """
    buffer = io.BytesIO()
    write(buffer)
    atomic_stream(path, lambda f: f.write(buffer.getbuffer()))


def atomic_stream(path: Path, write) -> None:
    """Call write(file_object) on a temporary file beside `path`, fsync it, then rename it over
    `path`; on any failure (a full disk, Ctrl-C) the temporary file is removed. For what is too
    big to hold in memory first; atomic_write holds it, for libraries that write to files."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, usual_mode())  # mkstemp makes 0600
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def usual_mode() -> int:
    """The permissions a new file gets from open(2) under this process's umask (rw for all, less the mask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def fsync_dir(directory: Path) -> None:
    """Flush `directory`'s entries: a rename into it is durable only once they are on disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_writable(directory: Path) -> None:
    """Create `directory` if needed and a file in it (removed at once), so that a folder that
    cannot be written fails now, as an OSError, and not after minutes of training or measuring."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=directory).close()


def not_a_file(path: Path) -> str | None:
    """None when `path` is a regular file (or a link to one); else what it is instead, for an
    error message: "does not exist", "is a directory, not a file", "is a FIFO (named pipe), not a
    file" and so on. Only stat(2) is called: a FIFO is never opened (which would wait for a writer)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in KINDS if test(mode)), None)
    return f"is {kind}, not a file" if kind else "is not a regular file"


def existing_file(path: Path, what: str, fix: str) -> Path:
    """`path` when it is a regular file; else a UsageError "{what} {path} is a directory, not a
    file: {fix}" (or "does not exist", and so on)."""
    problem = not_a_file(path)
    if problem:
        raise UsageError(f"{what} {path} {problem}: {fix}")
    return Path(path)
