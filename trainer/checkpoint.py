"""Snapshots: written whole or not at all, read back with a clear error when they are not ours.

A snapshot (`model.pt`) is a plain dict that torch.load(weights_only=True) accepts:
  format, model (state_dict), model_config, vocab (str), step, optimizer, train_config,
  rng (torch CPU state), losses {train, val}, world_size, run_id.
The previous file stays in place until the new one is complete on disk: temporary file, fsync, rename.
"""

from pathlib import Path

import torch

from model import GPTConfig
from trainer.atomic import atomic_write
from trainer.errors import UsageError

FORMAT = "shakespeare-gpt/1"


def save(path: Path, snapshot: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **snapshot}, f))


def load(path: Path) -> dict:
    """Read a snapshot; anything missing, truncated or foreign is a UsageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist: train first (make train) or name an existing file")
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        detail = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"checkpoint {path} is corrupt or truncated ({detail}): delete it or point to another snapshot"
        ) from None
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this trainer: point to a model.pt written by python -m trainer")
    return snapshot


def check_compatible(snapshot: dict, path: Path, config: GPTConfig, vocab: str) -> None:
    """A resumed run must have the snapshot's model shape and vocabulary."""
    saved = GPTConfig.from_dict(snapshot["model_config"]).shape()
    for key, value in config.shape().items():
        if saved[key] != value:
            flag = "--" + key.replace("_", "-")
            hint = "use the corpus it was trained on" if key == "vocab_size" else f"pass {flag} {saved[key]}"
            raise UsageError(
                f"checkpoint {path} has {key}={saved[key]} but this run has {key}={value}: {hint}, or start without --resume"
            )
    if snapshot["vocab"] != vocab:
        raise UsageError(f"checkpoint {path} was trained on another corpus's vocabulary: use that corpus, or start without --resume")
