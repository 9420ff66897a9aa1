"""The token cache: a corpus tokenized once into a file of ids that every rank memory-maps.

Where: in `.tokens/` beside the corpus (in the folder that holds its files); where that folder
cannot be written (a read-only data set), in a folder of this user's in the system's temporary
folder. What: per corpus (its list of files), `<name>-<key>.bin`, the ids (one byte each for a
vocabulary of up to 256 characters, two up to 65,536, else four), and `<name>-<key>.json`, its
record: the vocabulary, the id type, the number of ids, and the files' sizes, mtimes and the
SHA-256 of their bytes.

Each file is written to a temporary name and renamed, the record last: a cache is whole or
absent, and an interrupted tokenization leaves none. A token file whose size is not what its
record says is not used. When the files' sizes and mtimes are the record's, the cache is used
at once; when they differ, the bytes are hashed: the same SHA-256 (a file touched, or copied
with a new mtime) keeps the cache, another tokenizes again over it.
"""

import hashlib
import json
import mmap
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.cli import UsageError
from common.files import atomic_stream, atomic_write, check_writable
from trainer import tokenizer

FOLDER = ".tokens"
FORMAT = 1  # of the record; another format is tokenized again
STALE_TMP_S = 60  # a temporary file left this long by a killed tokenizer is removed by the next one


@dataclass(frozen=True)
class Tokens:
    vocab: str
    ids: np.ndarray  # the token file, memory-mapped read-only
    path: Path  # the token file


def tokens(paths: list[Path], label: str) -> Tokens:
    """The corpus's ids and vocabulary, from the cache, tokenizing first when it has none that fits."""
    bin_path, record_path = entry(paths, label)
    stats = file_stats(paths)
    record = read_record(record_path, bin_path)
    if record is not None and record["files"] != stats:
        record = refresh(record, paths, stats, record_path)
    if record is None:
        record = build(paths, label, stats, bin_path, record_path)
    with open(bin_path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    mapped.madvise(mmap.MADV_RANDOM)  # batches read scattered windows: no read-ahead around each
    ids = np.frombuffer(mapped, dtype=np.dtype(record["dtype"]), count=record["length"])
    return Tokens(record["vocab"], ids, bin_path)


def release_pages(ids: np.ndarray) -> None:
    """Take the token file's pages out of this process's resident memory (MADV_DONTNEED); they stay
    in the page cache, and the next read maps them again without reading the disk.

    Each page fault maps the 16 pages around it (the kernel's fault-around), so a rank that keeps
    its map grows by about 64 KB for every window it reads (by 94 MB of a 100 MB corpus over a
    100-step run), towards the whole file over a long run. Released after every batch, a rank's
    resident memory holds no more of the corpus than one batch's windows.
    """
    base = ids
    while isinstance(base, np.ndarray):  # a split's view -> the map's array -> its memoryview -> the map
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    if isinstance(base, mmap.mmap):  # else ids in memory (the tests' arrays): nothing to release
        base.madvise(mmap.MADV_DONTNEED)


def entry(paths: list[Path], label: str) -> tuple[Path, Path]:
    """The token file and record of this list of files: one pair per corpus, replaced when it changes."""
    key = hashlib.sha256("\0".join(str(p.resolve()) for p in paths).encode()).hexdigest()[:16]
    folder = cache_folder(paths)
    name = re.sub(r"[^\w.-]", "_", Path(label).name).strip(".") or "corpus"  # a pattern's * and ? are not kept
    name = f"{name}-{key}"
    return folder / f"{name}.bin", folder / f"{name}.json"


def cache_folder(paths: list[Path]) -> Path:
    """.tokens/ in the folder holding the corpus's files; else this user's folder in the temporary folder."""
    home = Path(os.path.commonpath([str(p.resolve().parent) for p in paths]))
    beside = home / FOLDER
    try:
        check_writable(beside)
        return beside
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / f"shakespeare-gpt-tokens-{os.getuid()}"
    try:
        fallback.mkdir(mode=0o700, exist_ok=True)
        info = fallback.lstat()
        # A folder another user could write (or made first, to plant ids) is not used.
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise PermissionError(0, "not a private folder of this user")
        check_writable(fallback)
    except OSError as exc:
        raise UsageError(f"cannot write the token cache beside the corpus ({beside}) nor in {fallback} "
                         f"({exc.strerror}): make one of them writable") from None
    return fallback


def file_stats(paths: list[Path]) -> list[list]:
    return [[str(p.resolve()), info.st_size, info.st_mtime_ns] for p, info in ((p, p.stat()) for p in paths)]


def read_record(record_path: Path, bin_path: Path) -> dict | None:
    """The record when it and its token file are whole and of this format; else None (tokenize again)."""
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        whole = (record["format"] == FORMAT and isinstance(record["vocab"], str)
                 and bin_path.stat().st_size == record["length"] * np.dtype(record["dtype"]).itemsize)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if whole else None


def refresh(record: dict, paths: list[Path], stats: list, record_path: Path) -> dict | None:
    """Files with new sizes or mtimes: the record with them when the bytes are the same, else None."""
    if [s[1] for s in stats] != [s[1] for s in record["files"]] or content_sha256(paths) != record["sha256"]:
        return None
    record = {**record, "files": stats}
    write_record(record_path, record)
    return record


def content_sha256(paths: list[Path]) -> str:
    hasher = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(tokenizer.CHUNK):
                hasher.update(chunk)
    return hasher.hexdigest()


def build(paths: list[Path], label: str, stats: list, bin_path: Path, record_path: Path) -> dict:
    """Tokenize the files into bin_path and write its record; the two passes say how far they are
    when they take more than a second."""
    progress = ProgressLine(label, bin_path)
    scan = tokenizer.scan(paths, progress.update("reading"))
    if scan.characters == 0:
        raise UsageError(f"corpus {label} is empty: pass a UTF-8 text with --data")
    record = {"format": FORMAT, "vocab": scan.vocab, "dtype": tokenizer.id_dtype(len(scan.vocab)).str,
              "length": scan.characters, "sha256": scan.sha256, "files": stats}
    try:
        record_path.unlink(missing_ok=True)  # the old record does not describe the file about to replace its ids
        write_ids_file(paths, scan.vocab, bin_path, progress)
        write_record(record_path, record)
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename).parent != bin_path.parent:
            raise  # reading the corpus: load_corpus names it
        raise UsageError(f"cannot write the token cache {bin_path} ({exc.strerror}): free space there "
                         "(each corpus's cache is about its size), or remove caches no longer needed") from None
    progress.done(scan.characters)
    return record


def write_ids_file(paths: list[Path], vocab: str, bin_path: Path, progress: "ProgressLine") -> None:
    """The ids into a temporary file, renamed to bin_path once whole."""
    remove_stale_temporaries(bin_path)
    atomic_stream(bin_path, lambda f: tokenizer.write_ids(paths, vocab, f, progress.update("writing")))


def write_record(record_path: Path, record: dict) -> None:
    atomic_write(record_path, lambda f: f.write(json.dumps(record, ensure_ascii=False).encode("utf-8")))


def remove_stale_temporaries(bin_path: Path) -> None:
    """What a tokenizer killed mid-write (kill -9) left; another still writing has touched its file lately."""
    for tmp in bin_path.parent.glob(f".{bin_path.name}.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > STALE_TMP_S:
                tmp.unlink()
        except OSError:
            pass


class ProgressLine:
    """A line every few seconds once tokenizing has taken a second, and one at the end if any came before."""

    FIRST_S, EVERY_S = 1.0, 5.0

    def __init__(self, label: str, bin_path: Path):
        self.label, self.bin_path = label, bin_path
        self.start = time.monotonic()
        self.next_s = self.FIRST_S
        self.shown = False

    def update(self, what: str):
        def show(done: int, total: int) -> None:
            elapsed = time.monotonic() - self.start
            if elapsed >= self.next_s:
                print(f"tokenizing corpus {self.label}: {what} {done / 1e6:,.0f} of {total / 1e6:,.0f} MB "
                      f"({elapsed:.0f} s)", flush=True)
                self.next_s, self.shown = elapsed + self.EVERY_S, True
        return show

    def done(self, characters: int) -> None:
        if self.shown:
            print(f"tokenized corpus {self.label}: {characters:,} characters in {time.monotonic() - self.start:.1f} s, "
                  f"cached in {self.bin_path}", flush=True)
