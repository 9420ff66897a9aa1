"""The corpus: where it comes from, its character vocabulary, and batches drawn by (seed, step).

Every batch is a pure function of (seed, step, purpose), so all ranks draw the same global
batch and each takes its own slice: the run is the same whatever the world size, and a
resumed run needs no data position beyond the step number.
"""

import glob
import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common import defaults, vocab
from common.cli import UsageError
from common.files import atomic_write, existing_file
from trainer import token_cache

DEFAULT_PATH = defaults.CORPUS
URL = os.environ.get(
    "TINYSHAKESPEARE_URL",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
)
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def resolve_corpus(path: str | None, download: bool = True) -> Path:
    """--data PATH (a file, a folder or a glob pattern), else data/tinyshakespeare.txt, else download it there."""
    if path and (Path(path).is_dir() or (is_pattern(path) and not Path(path).exists())):
        corpus_files(path)  # a folder or pattern without a file is refused here
        return Path(path)
    if path:
        return existing_file(path, "corpus", "pass a UTF-8 text file, a folder of them or a glob with --data "
                             "(DATA= for make)")
    if DEFAULT_PATH.exists():
        return existing_file(DEFAULT_PATH, "corpus", "put the corpus there, or pass a UTF-8 text file with --data")
    if download:
        _download(DEFAULT_PATH)
    return DEFAULT_PATH


def is_pattern(path: str) -> bool:
    return any(c in str(path) for c in "*?[")


def corpus_files(path: str | Path) -> list[Path]:
    """The files of a corpus, in the order they are joined: a file alone; a folder's files, those
    in its subfolders included, by name (hidden ones, like .git or the token cache, left out); or
    the files a glob pattern matches (** for any depth), by name."""
    path = str(path)
    if Path(path).is_dir():
        root = Path(path)
        found = [Path(folder, name) for folder, subfolders, names in os.walk(root)
                 for name in names if not name.startswith(".")
                 if not any(part.startswith(".") for part in Path(folder).relative_to(root).parts)]
        where = f"corpus folder {path} holds no files"
    elif is_pattern(path) and not Path(path).exists():
        found = [Path(match) for match in glob.glob(path, recursive=True)]
        where = f"--data {path} matches no file"
    else:
        return [Path(path)]
    files = sorted((p for p in found if p.is_file()), key=lambda p: str(p))
    if not files:
        raise UsageError(f"{where}: pass a UTF-8 text file, a folder of them or a glob with --data (DATA= for make)")
    return files


def _download(dest: Path) -> None:
    try:
        with urllib.request.urlopen(URL, timeout=30) as response:
            payload = response.read()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"cannot download Tiny Shakespeare ({reason}): put the file at {DEFAULT_PATH} "
            "or pass --data PATH (DATA= for make)"
        ) from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != SHA256:
        raise UsageError(
            f"downloaded corpus has SHA-256 {digest[:12]}..., expected {SHA256[:12]}...: "
            f"put the genuine file at {DEFAULT_PATH} or pass --data PATH"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, lambda f: f.write(payload))


@dataclass
class Corpus:
    vocab: str  # the sorted unique characters; index = token id
    train: np.ndarray  # token ids, the first 90%: a view of the memory-mapped token file
    val: np.ndarray  # token ids, the last 10%
    files: int | None = None  # how many files a folder or pattern corpus joins (None: one file)

    def encode(self, text: str) -> list[int]:
        return vocab.encode(self.vocab, text)

    def decode(self, ids: list[int]) -> str:
        return vocab.decode(self.vocab, ids)

    def start(self, length: int) -> str:
        """The first `length` characters of the training split: where samples start when the
        corpus lacks the default prompt's characters (trainer.config.sample_prompt)."""
        return self.decode(self.train[:length].tolist())

    def describe(self) -> str:
        """What the banner says of the corpus: its files and characters when it joins several."""
        characters = len(self.train) + len(self.val)
        files = "" if self.files is None else f"corpus {self.files} file(s), {characters:,} characters, "
        return f"{files}vocab {len(self.vocab)}"


def load_corpus(data: str | Path | None, block_size: int) -> Corpus:
    """The corpus --data names (a file, a folder, a glob; None: the default file), tokenized once
    into the token cache (trainer/token_cache.py) and memory-mapped from it."""
    label = str(resolve_corpus(data, download=False))
    paths = corpus_files(label)
    try:
        cached = token_cache.tokens(paths, label)
    except OSError as exc:
        raise UsageError(f"cannot read corpus {exc.filename or label} ({exc.strerror}): "
                         "check the path and its permissions") from None
    ids = cached.ids
    split = int(TRAIN_FRACTION * len(ids))
    train, val = ids[:split], ids[split:]
    # A window needs block_size inputs plus one target; the validation split must hold one.
    needed = block_size + 1
    if len(val) < needed:
        raise UsageError(
            f"corpus {label} is too short: {len(ids)} characters leave {len(val)} for validation, "
            f"fewer than block size + 1 = {needed}: use a text of at least {10 * needed} characters "
            "or a smaller --block-size"
        )
    return Corpus(vocab=cached.vocab, train=train, val=val, files=None if Path(label).is_file() else len(paths))


def stream_seed(seed: int, purpose: str, step: int, index: int = 0) -> int:
    """A 63-bit seed for one draw, distinct for every (seed, purpose, step, index)."""
    key = f"{seed}:{purpose}:{step}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class Batches:
    """The windows one rank draws from one split: batch_size windows of block_size characters
    make the global batch of (seed, purpose, step, index), and this rank takes its slice."""

    data: np.ndarray  # token ids of one split (a view of the memory-mapped token file)
    seed: int
    batch_size: int  # global: split evenly across the ranks
    block_size: int
    rank: int = 0
    world_size: int = 1

    def draw(self, purpose: str, step: int, index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets), each (batch_size / world_size, block_size): this rank's windows,
        the targets one character on. Gathered by one tensor index, not a Python loop."""
        generator = torch.Generator().manual_seed(stream_seed(self.seed, purpose, step, index))
        starts = torch.randint(len(self.data) - self.block_size, (self.batch_size,), generator=generator)
        per_rank = self.batch_size // self.world_size
        starts = starts[self.rank * per_rank:(self.rank + 1) * per_rank].numpy()
        windows = np.take(self.data, starts[:, None] + np.arange(self.block_size + 1)).astype(np.int64)
        token_cache.release_pages(self.data)  # the windows are copied out: their pages can go
        windows = torch.from_numpy(windows)
        return windows[:, :-1], windows[:, 1:]
