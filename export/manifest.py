"""model.json, and the facts every exported file also carries inside itself.

The vocabulary is a JSON array of one-character strings (index = token id), not one string: a
character outside the Basic Multilingual Plane (an emoji) is then one entry in every language,
whereas one string of them has a different length in JavaScript (UTF-16) than in Python. The
context length is a number. The same two facts go inside model.onnx (metadata_props) and
model.pt2 (extra files) under the keys of `embedded_facts`, so those files alone are enough to
generate from. Python also reads a manifest whose vocabulary is one string (a str is a sequence of
characters) and a model file that carries no facts; anything else is refused with `make export` as
the fix.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from common.cli import UsageError

FORMAT_VERSION = 2
REDO = "export again with make export"


@dataclass(frozen=True)
class Manifest:
    vocab: str  # kept as a str inside Python, where indexing is by character
    block_size: int
    sha256: dict[str, str]  # file name -> hex digest of the files of the set
    path: Path

    def verify(self, model: Path, name: str | None = None) -> None:
        """Refuse a model file whose bytes are not the ones this manifest was written with.
        `name` is the file's key in the table when it is not the file name (hf/config.json)."""
        name = name or model.name
        expected = self.sha256.get(name)
        if expected is None:
            raise UsageError(f"{self.path} lists no SHA-256 for {name}: {REDO}")
        try:
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
        except OSError as exc:
            raise UsageError(f"cannot read {model} ({exc.strerror}): check its permissions") from None
        if digest != expected:
            raise UsageError(f"{model} does not match its SHA-256 in {self.path} (damaged, or from another "
                             f"export): {REDO}")


def embedded_facts(vocab: str, block_size: int) -> dict[str, str]:
    """The strings a model file carries itself: ONNX metadata_props, torch.export extra files."""
    return {"vocab": json.dumps(list(vocab), ensure_ascii=False), "block_size": str(block_size)}


def manifest_text(vocab: str, block_size: int, sha256: dict[str, str], **details) -> str:
    """model.json's text: the facts a runtime needs first, then `details` (config, step, ...)."""
    manifest = {"format": FORMAT_VERSION, "vocab": list(vocab), "block_size": block_size, **details,
                "sha256": sha256}
    return json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"


def read_manifest(path: Path) -> Manifest:
    """The manifest at `path`, checked; a missing or malformed one is a UsageError naming it."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: it holds the vocabulary and the files' SHA-256; {REDO}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is not a readable manifest ({type(exc).__name__}): {REDO}") from None
    if not isinstance(manifest, dict):
        raise UsageError(f"{path} is not a manifest (no JSON object): {REDO}")
    vocab, block_size = checked_facts(manifest.get("vocab"), manifest.get("block_size"), str(path))
    sha256 = manifest.get("sha256")
    if not (isinstance(sha256, dict) and all(isinstance(v, str) for v in sha256.values())):
        raise UsageError(f"{path} has no valid sha256 table: {REDO}")
    return Manifest(vocab, block_size, sha256, path)


def read_embedded_facts(props: dict[str, str], where: str) -> tuple[str, int] | None:
    """(vocab, block_size) from the strings of `embedded_facts`, as read back from a model file;
    None for a file that carries neither."""
    if not props.get("vocab") and not props.get("block_size"):
        return None
    try:
        vocab = json.loads(props["vocab"])
        block_size = int(props["block_size"])
    except (KeyError, ValueError):
        raise UsageError(f"{where} does not carry its vocabulary and block size: {REDO}") from None
    return checked_facts(vocab, block_size, where)


def checked_facts(vocab, block_size, where: str) -> tuple[str, int]:
    """The vocabulary as a str and the block size, or a UsageError saying what is wrong with them."""
    if isinstance(vocab, str):  # a manifest without "format": one string of characters
        vocab = list(vocab)
    if not (isinstance(vocab, list) and vocab and all(isinstance(c, str) and len(c) == 1 for c in vocab)):
        raise UsageError(f"{where}: the vocabulary is not a list of single characters: {REDO}")
    if len(set(vocab)) != len(vocab):
        raise UsageError(f"{where}: the vocabulary repeats a character: {REDO}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise UsageError(f"{where}: block_size is not a positive whole number: {REDO}")
    return "".join(vocab), block_size
