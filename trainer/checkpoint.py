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
from common.files import atomic_write, existing_file
from model import GPTConfig, weight_shapes
from trainer.config import BEFORE_THE_FIELD, saved_config_problem
from trainer.optim import state_names

FORMAT = "shakespeare-gpt/1"
# What resuming and exporting read; a checkpoint without one of them cannot be used.
REQUIRED_KEYS = ("model", "model_config", "vocab", "step", "optimizer", "train_config")
ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of what torch.save writes


def save(path: Path, checkpoint: dict) -> None:
    atomic_write(path, lambda f: torch.save({"format": FORMAT, **checkpoint}, f))


def load(path: Path) -> dict:
    """Read a checkpoint; anything missing, truncated or foreign is a UsageError naming the file.

    Every reader (resume, export, generate, plot, bench) comes through here, so a checkpoint is
    checked once, in one way: its form (validate) before any of it is used."""
    path = existing_file(path, "checkpoint", "train first (make train) or name a model.pt")
    kind = export_kind(path)
    if kind:
        raise UsageError(f"{path} is an export ({kind}), not a training checkpoint: point to the model.pt "
                         "written by python -m trainer (exports are for make generate)")
    with open(path, "rb") as f:
        if f.read(4) != ZIP_MAGIC:
            raise UsageError(f"{path} is not a checkpoint (torch.save writes a zip archive, and this file is none): "
                             "point to a model.pt written by python -m trainer")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        # torch's first sentence ("PytorchStreamReader failed reading zip archive: not a ZIP archive")
        detail = str(exc).strip().splitlines()[0].split(". ")[0][:120] if str(exc).strip() else type(exc).__name__
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
    problem = validate(checkpoint)
    if problem:
        raise UsageError(f"checkpoint {path} is damaged ({problem}): point to another checkpoint or start "
                         "without --resume")
    return checkpoint


def validate(checkpoint: dict) -> str | None:
    """What is wrong with a checkpoint's contents, or None: the types of its entries, and its
    weights' names and shapes against the model its own model_config describes."""
    for key, kind in (("model", dict), ("model_config", dict), ("vocab", str), ("optimizer", dict),
                      ("train_config", dict), ("training_weights", dict)):
        if key in checkpoint and not isinstance(checkpoint[key], kind):  # all but training_weights are required
            return f"{key!r} is a {type(checkpoint[key]).__name__}, not a {kind.__name__}"
    step = checkpoint["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' is {step!r}, not a step number"
    try:
        config = GPTConfig.from_dict(checkpoint["model_config"])
        expected = weight_shapes(config)
    except Exception as exc:  # any value GPTConfig cannot build a model from
        return f"'model_config' describes no model ({type(exc).__name__})"
    for key in ("model", "training_weights"):
        problem = weights_problem(checkpoint[key], expected) if key in checkpoint else None
        if problem:
            return problem if key == "model" else f"{key!r}: {problem}"
    if len(checkpoint["vocab"]) != config.vocab_size:
        return f"a vocabulary of {len(checkpoint['vocab'])} characters for a model of {config.vocab_size}"
    problem = saved_config_problem(checkpoint["train_config"])
    if problem:
        return f"'train_config': {problem}"
    train_config = {**BEFORE_THE_FIELD, **checkpoint["train_config"]}
    if train_config.get("ema_decay", 0) > 0 and "training_weights" not in checkpoint:
        # "model" is then the average: resuming from it would restart training from other weights.
        return "its train_config has an --ema-decay but it lacks 'training_weights'"
    return optimizer_problem(checkpoint["optimizer"], state_names(expected, train_config), expected)


def optimizer_problem(optimizer: dict, names: dict[str, list[str]], shapes: dict[str, tuple]) -> str | None:
    """The optimisers' states against the parameters their train_config gives each (`names`), or None:
    a moment of another shape would otherwise fail inside the optimiser's step."""
    states = {"adamw": optimizer} if "param_groups" in optimizer else optimizer
    if not states or not all(isinstance(v, dict) and {"state", "param_groups"} <= set(v) for v in states.values()):
        return "'optimizer' holds no optimiser state"
    absent = [opt for opt in names if opt not in states]
    if absent:
        return f"'optimizer' lacks the {absent[0]!r} state its train_config uses"
    for opt, state in states.items():
        params = names.get(opt, [])
        groups = state["param_groups"]
        count = sum(len(g.get("params", ())) for g in groups if isinstance(g, dict)) if isinstance(groups, list) else -1
        if count != len(params) or not isinstance(state["state"], dict):
            return f"'optimizer' {opt!r} holds {max(count, 0)} parameters where its train_config gives it {len(params)}"
        for index, moments in state["state"].items():
            if not (isinstance(index, int) and 0 <= index < len(params) and isinstance(moments, dict)):
                return f"'optimizer' {opt!r} has a state for parameter {index!r}, which it does not hold"
            shape = shapes[params[index]]
            for key, value in moments.items():
                if not isinstance(value, torch.Tensor) or (value.dim() and tuple(value.shape) != shape):
                    return f"'optimizer' {opt!r}: {key} of {params[index]} is not a tensor of shape {shape}"
    return None


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


def weights_problem(weights: dict, expected: dict[str, tuple]) -> str | None:
    """A weight missing, unexpected or of another shape than `expected` (name -> shape), or None."""
    for names, what in ((set(expected) - set(weights), "missing"), (set(weights) - set(expected), "unexpected")):
        if names:
            return f"weight{'s' * (len(names) > 1)} {', '.join(sorted(map(str, names))[:3])} {what}"
    for name, shape in expected.items():
        if not isinstance(weights[name], torch.Tensor) or tuple(weights[name].shape) != shape:
            return f"weight {name} is not a tensor of shape {shape}"
        if not torch.isfinite(weights[name]).all():
            return f"weight {name} holds NaN or infinite values"
    return None
