"""Snapshots: written whole or not at all, read back with a clear error when they are not ours.

A snapshot (`model.pt`) is a plain dict that torch.load(weights_only=True) accepts:
  format, model (state_dict), model_config, vocab (str), step, optimizer, train_config,
  rng (torch CPU state), losses {train, val}, world_size, run_id.
The previous file stays in place until the new one is complete on disk: temporary file, fsync, rename.
"""

import zipfile
from pathlib import Path

import torch

from common.cli import UsageError
from common.files import atomic_write
from model import GPTConfig

FORMAT = "shakespeare-gpt/1"
# What resuming and exporting read; a snapshot without one of them cannot be used.
REQUIRED_KEYS = ("model", "model_config", "vocab", "step", "optimizer", "train_config", "rng")


def save(path: Path, snapshot: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **snapshot}, f))


def load(path: Path) -> dict:
    """Read a snapshot; anything missing, truncated or foreign is a UsageError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist: train first (make train) or name an existing file")
    kind = export_kind(path)
    if kind:
        raise UsageError(f"{path} is an export ({kind}), not a training snapshot: point to the model.pt "
                         "written by python -m trainer (exports are for make generate)")
    try:
        snapshot = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        detail = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"checkpoint {path} is corrupt or truncated ({detail}): delete it or point to another snapshot"
        ) from None
    if not isinstance(snapshot, dict) or snapshot.get("format") != FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this trainer: "
                         "point to a model.pt written by python -m trainer")
    missing = [key for key in REQUIRED_KEYS if key not in snapshot]
    if missing:
        raise UsageError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}: it was not written "
                         "whole by python -m trainer; point to another snapshot or start without --resume")
    return snapshot


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


def check_compatible(snapshot: dict, path: Path, config: GPTConfig, vocab: str) -> None:
    """A resumed run must have the snapshot's model shape and vocabulary."""
    saved = GPTConfig.from_dict(snapshot["model_config"]).shape()
    for key, value in config.shape().items():
        if saved[key] != value:
            flag = "--" + key.replace("_", "-")
            hint = "use the corpus it was trained on" if key == "vocab_size" else f"pass {flag} {saved[key]}"
            raise UsageError(
                f"checkpoint {path} has {key}={saved[key]} but this run has {key}={value}: {hint}, "
                "or start without --resume"
            )
    if snapshot["vocab"] != vocab:
        raise UsageError(f"checkpoint {path} was trained on another corpus's vocabulary: use that corpus, "
                         "or start without --resume")
