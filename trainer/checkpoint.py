"""Checkpoints: written whole or not at all, read back with a clear error when they are not ours.

A checkpoint (`model.pt`) is a plain dict that torch.load(weights_only=True) accepts:
  format, model (state_dict), model_config, vocab (str), step, optimizer, train_config,
  losses {train, val}, world_size, run_id.
Checkpoints written before the random state was dropped also hold `rng`; it is ignored (every
step seeds its own dropout). The previous file stays in place until the new one is complete on
disk: temporary file, fsync, rename.
"""

import zipfile
from pathlib import Path

import torch

from common.cli import UsageError
from common.files import atomic_write
from model import GPTConfig

FORMAT = "shakespeare-gpt/1"
# What resuming and exporting read; a checkpoint without one of them cannot be used.
REQUIRED_KEYS = ("model", "model_config", "vocab", "step", "optimizer", "train_config")


def save(path: Path, checkpoint: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **checkpoint}, f))


def load(path: Path) -> dict:
    """Read a checkpoint; anything missing, truncated or foreign is a UsageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist: train first (make train) or name an existing file")
    kind = export_kind(path)
    if kind:
        raise UsageError(f"{path} is an export ({kind}), not a training checkpoint: point to the model.pt "
                         "written by python -m trainer (exports are for make generate)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        detail = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"checkpoint {path} is corrupt or truncated ({detail}): delete it or point to another checkpoint"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this trainer: "
                         "point to a model.pt written by python -m trainer")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise UsageError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}: it was not written "
                         "whole by python -m trainer; point to another checkpoint or start without --resume")
    return checkpoint


def export_kind(path: Path) -> str | None:
    """'torch.export', 'TorchScript' or 'ONNX' when `path` is one of our exports, else None.

    Told apart before torch.load, which would call any of them corrupt (or, for TorchScript, warn).
    """
    if path.suffix == ".onnx":
        return "ONNX"
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(name.endswith("/archive_format") for name in names):
        return "torch.export"
    if any(name.endswith("/constants.pkl") or "/code/" in name for name in names):
        return "TorchScript"
    return None


def check_compatible(checkpoint: dict, path: Path, config: GPTConfig, vocab: str) -> None:
    """A resumed run must have the checkpoint's model shape and vocabulary."""
    saved = GPTConfig.from_dict(checkpoint["model_config"]).shape()
    for key, value in config.shape().items():
        if saved[key] != value:
            flag = "--" + key.replace("_", "-")
            hint = "use the corpus it was trained on" if key == "vocab_size" else f"pass {flag} {saved[key]}"
            raise UsageError(
                f"checkpoint {path} has {key}={saved[key]} but this run has {key}={value}: {hint}, "
                "or start without --resume"
            )
    if checkpoint["vocab"] != vocab:
        raise UsageError(f"checkpoint {path} was trained on another corpus's vocabulary: use that corpus, "
                         "or start without --resume")
