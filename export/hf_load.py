"""An hf/ folder as a model to generate from, through transformers (AutoModelForCausalLM and
AutoTokenizer): make generate MODEL=checkpoints/hf.

Like the other formats, the folder must match the model.json written beside it (every file's
SHA-256), and the tokenizer and the config must agree with model.json's vocabulary and block
size. Files are read from the folder only (local_files_only): nothing is fetched.
"""

from pathlib import Path
from typing import Callable

import torch

from common import defaults
from common.cli import UsageError
from export import hf
from export.manifest import REDO, read_manifest

RUNTIME = "transformers"


def load_hf_folder(folder: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], str, int]:
    """The folder's logits function (token ids (B, T) -> logits (B, T, V)), vocabulary and block size."""
    manifest = read_manifest(folder.parent / defaults.MANIFEST)
    for name in hf.MODEL_FILES:  # the card (README.md) is for people to edit
        path = folder / name
        if not path.is_file():
            raise UsageError(f"{path} is missing: {REDO}")
        manifest.verify(path, f"{hf.FOLDER}/{name}")
    model, tokenizer = from_pretrained(folder)
    vocab = "".join(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))))
    block_size = model.config.n_positions
    if (vocab, block_size) != (manifest.vocab, manifest.block_size):
        raise UsageError(f"{folder} does not match {manifest.path}: its vocabulary or block size differs; {REDO}")

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return model(ids).logits

    return logits, vocab, block_size


def from_pretrained(folder: Path):
    """transformers' model (eval mode) and tokenizer of the folder, quietly, from local files only."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" would go to the user's terminal
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    except Exception as exc:  # transformers raises many types for a damaged file; the hashes passed, so rare
        raise UsageError(f"{folder} cannot be loaded by transformers ({type(exc).__name__}): {REDO}") from None
    return model, tokenizer
