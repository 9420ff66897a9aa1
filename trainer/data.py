"""The corpus: where it comes from, its character vocabulary, and batches drawn by (seed, step).

Every batch is a pure function of (seed, step, purpose), so all ranks draw the same global
batch and each takes its own slice: the run is the same whatever the world size, and a
resumed run needs no data position beyond the step number.
"""

import hashlib
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from common import defaults, vocab
from common.cli import UsageError
from common.files import atomic_write, existing_file

DEFAULT_PATH = defaults.CORPUS
URL = os.environ.get(
    "TINYSHAKESPEARE_URL",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
)
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
TRAIN_FRACTION = 0.9


def resolve_corpus(path: str | None, download: bool = True) -> Path:
    """--data PATH, else data/tinyshakespeare.txt, else download it there."""
    if path:
        return existing_file(path, "corpus", "pass a UTF-8 text file with --data (DATA= for make)")
    if DEFAULT_PATH.exists():
        return existing_file(DEFAULT_PATH, "corpus", "put the corpus there, or pass a UTF-8 text file with --data")
    if download:
        _download(DEFAULT_PATH)
    return DEFAULT_PATH


def _download(dest: Path) -> None:
    try:
        with urllib.request.urlopen(URL, timeout=30) as response:
            payload = response.read()
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        raise UsageError(
            f"cannot download Tiny Shakespeare ({reason}): put the file at {DEFAULT_PATH} or pass --data PATH"
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
    train: torch.Tensor  # int64 token ids, first 90%
    val: torch.Tensor  # int64 token ids, last 10%

    def encode(self, text: str) -> list[int]:
        return vocab.encode(self.vocab, text)

    def decode(self, ids: list[int]) -> str:
        return vocab.decode(self.vocab, ids)


def load_corpus(path: str | Path, block_size: int) -> Corpus:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read corpus {path} ({exc.strerror}): check the path and its permissions") from None
    if not raw:
        raise UsageError(f"corpus {path} is empty: pass a UTF-8 text with --data")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"corpus {path} is not UTF-8 (byte {exc.start}): "
                         "convert it to UTF-8 or pass another --data") from None
    chars = "".join(sorted(set(text)))
    ids = torch.tensor(vocab.encode(chars, text), dtype=torch.long)
    split = int(TRAIN_FRACTION * len(ids))
    train, val = ids[:split], ids[split:]
    # A window needs block_size inputs plus one target; the validation split must hold one.
    needed = block_size + 1
    if len(val) < needed:
        raise UsageError(
            f"corpus {path} is too short: {len(text)} characters leave {len(val)} for validation, "
            f"fewer than block size + 1 = {needed}: use a text of at least {10 * needed} characters "
            "or a smaller --block-size"
        )
    return Corpus(vocab=chars, train=train, val=val)


def stream_seed(seed: int, purpose: str, step: int, index: int = 0) -> int:
    """A 63-bit seed for one draw, distinct for every (seed, purpose, step, index)."""
    key = f"{seed}:{purpose}:{step}:{index}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


@dataclass(frozen=True)
class Batches:
    """The windows one rank draws from one split: batch_size windows of block_size characters
    make the global batch of (seed, purpose, step, index), and this rank takes its slice."""

    data: torch.Tensor  # token ids of one split
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
        starts = starts[self.rank * per_rank:(self.rank + 1) * per_rank]
        windows = self.data[starts[:, None] + torch.arange(self.block_size + 1)]
        return windows[:, :-1], windows[:, 1:]
