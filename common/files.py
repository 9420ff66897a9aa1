"""Files are written whole or not at all (a temporary file beside the target, fsync, rename), and a
folder is checked for writing before the work that ends in a write begins.

A crash, a kill or a full disk during a write leaves the previous file untouched.
"""

import io
import os
import tempfile
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Call write(file_object), put what it wrote in a temporary file beside `path`, fsync it,
    then rename it over `path`. A full disk raises OSError (errno ENOSPC).

    write() fills a buffer in memory, and the bytes reach the disk here: libraries that write
    to the file themselves report a full disk in their own way (torch.save as a RuntimeError
    saying "file write failed"), which callers could not tell from a bug.
    """
    path = Path(path)
    buffer = io.BytesIO()
    write(buffer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
