"""The character vocabulary: a string of the corpus's sorted unique characters, index = token id."""

from common.cli import UsageError


def encode(vocab: str, text: str) -> list[int]:
    """Token ids of text; a character outside the vocabulary is a UsageError naming it."""
    index = {c: i for i, c in enumerate(vocab)}
    missing = sorted(set(text) - set(index))
    if missing:
        raise UsageError(f"text has characters outside the vocabulary: {''.join(missing)!r}: "
                         "use only characters of the corpus")
    return [index[c] for c in text]


def decode(vocab: str, ids: list[int]) -> str:
    return "".join(vocab[i] for i in ids)
