"""Characters to token ids, streamed: a corpus of any size in chunks of a few MB, vectorized.

Two passes over the files. The first checks that they are UTF-8, finds the vocabulary (the
sorted unique characters) and hashes the bytes; the second writes each character's id. A chunk
of one-byte characters (ASCII: most chunks of most corpora) never becomes a Python string: its
new characters are found by bytes.translate deleting the known ones, and its ids by
bytes.translate through a 256-entry table (or numpy through one). Any other chunk is decoded and
its code points looked up in a table over all of Unicode. Memory is bounded by the chunk,
whatever the corpus's size.

A UTF-8 byte-order mark at the start of a file is not text (Windows editors write one) and is
skipped, so that a corpus saved with one has the same vocabulary as without it.
"""

import codecs
import hashlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from common.cli import UsageError

CHUNK = 4 << 20  # bytes read at a time: the memory a pass needs is a small multiple of it
BOM = codecs.BOM_UTF8
UNICODE = 0x110000  # code points
NOT_ONE_BYTE = bytes(range(128, 256))  # the bytes of UTF-8's longer characters (and of its BOM)

# progress(bytes done, bytes in all): called after each chunk
Progress = Callable[[int, int], None]


def no_progress(done: int, total: int) -> None:
    pass


@dataclass(frozen=True)
class Scan:
    vocab: str  # the sorted unique characters; index = token id
    characters: int
    sha256: str  # of the files' bytes, one after the other


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest type that holds every id: one byte for up to 256 characters."""
    for dtype in (np.uint8, np.uint16):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype("<i4")


def total_bytes(paths: list[Path]) -> int:
    return sum(path.stat().st_size for path in paths)


def scan(paths: list[Path], progress: Progress = no_progress) -> Scan:
    """The first pass: the vocabulary, the character count and the SHA-256; a UsageError naming
    the file and the byte offset where a file is not UTF-8."""
    hasher, total, done = hashlib.sha256(), total_bytes(paths), 0
    ascii_seen = b""  # the one-byte characters found so far, for bytes.translate to delete
    seen = np.zeros(UNICODE, dtype=bool)  # the others, by code point
    characters = 0
    # hashlib lets go of the GIL while it hashes: a chunk's SHA-256 runs on another core beside the
    # search of the next one's characters, in order, one chunk at a time.
    with ThreadPoolExecutor(max_workers=1) as hashing:
        hashed = hashing.submit(hasher.update, b"")
        for raw, piece in pieces(paths):
            hashed.result()
            hashed = hashing.submit(hasher.update, raw)
            # The one-byte characters not seen yet: the bytes left once the known ones (and any
            # byte of a longer character) are deleted. The others are marked by code point.
            new = raw.translate(None, ascii_seen + NOT_ONE_BYTE)
            if new:
                ascii_seen = bytes(sorted(set(ascii_seen) | set(new)))
            if not isinstance(piece, bytes):
                seen[piece[piece >= 128]] = True
            characters += len(piece)
            done += len(raw)
            progress(done, total)
        hashed.result()
    codes = sorted(set(ascii_seen) | set(np.flatnonzero(seen).tolist()))
    return Scan("".join(map(chr, codes)), characters, hasher.hexdigest())


def write_ids(paths: list[Path], vocab: str, out: BinaryIO, progress: Progress = no_progress) -> None:
    """The second pass: each character's id in vocab, as id_dtype(len(vocab)), written to out."""
    dtype = id_dtype(len(vocab))
    lookup = np.zeros(UNICODE, dtype=dtype)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
    one_byte = lookup[:128].copy()
    table = bytes(np.resize(one_byte, 256)) if dtype == np.uint8 else None  # bytes.translate's table
    total, done = total_bytes(paths), 0
    for raw, piece in pieces(paths):
        if isinstance(piece, bytes):
            out.write(piece.translate(table) if table else np.take(one_byte, np.frombuffer(piece, np.uint8)))
        else:
            out.write(np.take(lookup, piece))
        done += len(raw)
        progress(done, total)


def pieces(paths: list[Path]) -> Iterator[tuple[bytes, bytes | np.ndarray]]:
    """(raw chunk, its characters) for each chunk of each file in turn: the characters as the
    bytes themselves when they are all one-byte characters, else as an array of code points."""
    for path in paths:
        decoder = codecs.getincrementaldecoder("utf-8")()
        offset = 0
        with open(path, "rb") as f:
            while raw := f.read(CHUNK):
                text = raw[len(BOM):] if offset == 0 and raw.startswith(BOM) else raw
                yield raw, characters_of(decoder, text, path, offset + len(raw) - len(text))
                offset += len(raw)
        characters_of(decoder, b"", path, offset, final=True)  # a file may not end inside a character


def characters_of(decoder, data: bytes, path: Path, offset: int, final: bool = False) -> bytes | np.ndarray:
    """The characters of data (which starts at byte `offset` of path) as pieces() gives them; a
    character cut by the chunk's end waits in the decoder for the next chunk."""
    pending = len(decoder.getstate()[0])
    if not pending and not final and data.isascii():
        return data
    try:
        text = decoder.decode(data, final)
    except UnicodeDecodeError as exc:  # exc.start counts from the decoder's pending bytes
        raise UsageError(f"corpus {path} is not UTF-8 (byte {offset - pending + exc.start}): "
                         "convert it to UTF-8 or pass another --data") from None
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
