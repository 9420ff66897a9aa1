"""Checkpoints (model.pt): one schema, written whole or not at all, read back with a clear error
when they are not ours.

`Checkpoint` is the schema: its fields are the entries of the dict that torch.save writes (and
torch.load(weights_only=True) accepts), beside "format", which is FORMAT. `save` writes one; `load`
reads a file, brings a checkpoint of the earlier format up to this one (`upgrade`), checks it
(`validate`) and returns a Checkpoint. The previous file stays in place until the new one is
complete on disk: temporary file, fsync, rename.
"""

import zipfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import get_args

import torch

from common.cli import UsageError
from common.files import atomic_write, existing_file
from model import GPTConfig, weight_shapes
from trainer.config import TrainConfig, saved_config_problem
from trainer.optim import state_names

FORMAT = "shakespeare-gpt/2"
EARLIER_FORMAT = "shakespeare-gpt/1"  # what upgrade() reads
ZIP_MAGIC = b"PK\x03\x04"  # the first bytes of what torch.save writes


@dataclass(frozen=True)
class Checkpoint:
    """What resuming, exporting and generating read: every entry of model.pt but "format"."""

    model: dict  # the weights' average (the weights themselves at --ema-decay 0): what exports and generators read
    model_config: dict  # GPTConfig.to_dict()
    vocab: str  # the corpus's characters, in token id order
    step: int  # optimiser steps taken
    optimizer: dict  # {optimiser name: its state_dict}, parameters in trainer.optim.state_names's order
    train_config: dict  # TrainConfig.to_dict(): the settings a resumed run continues with
    losses: dict = field(default_factory=dict)  # the last evaluation's {"train": .., "val": ..}
    world_size: int | None = None  # the processes that trained it
    run_id: str | None = None  # torchrun's: a restarted worker continues only its own run's checkpoint
    training_weights: dict | None = None  # the weights the optimiser steps, where they differ from model
    # What the model card names that train_config does not hold (this invocation's, not the run's
    # settings): {"corpus": --data as given, "" for the default, "dtype": the training step's matmuls}.
    trained_on: dict | None = None

    @property
    def stepped_weights(self) -> dict:
        """The weights the optimiser steps: training_weights where the run averages (--ema-decay > 0), else model."""
        return self.model if self.training_weights is None else self.training_weights

    def entries(self) -> dict:
        """The dict torch.save writes: "format", then every field; an optional field left None is not written."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {"format": FORMAT, **{name: value for name, value in values.items() if value is not None}}


# What resuming and exporting read; a checkpoint without one of them cannot be used.
REQUIRED_KEYS = tuple(f.name for f in fields(Checkpoint) if f.default is MISSING and f.default_factory is MISSING)
# Each entry's type, without the None of an optional one.
ENTRY_TYPES = {f.name: next(t for t in (*get_args(f.type), f.type) if isinstance(t, type)) for f in fields(Checkpoint)}

# The train_config fields runs wrote only once they existed, and what an earlier checkpoint takes for
# each: what its run trained with (AdamW alone, AdamW's one rate for the embeddings and the head, no
# average: its "model" is what the optimiser stepped); for Muon's momentum and weight decay, which came
# with Muon and act on nothing at muon_lr 0, the defaults a resume that turns Muon on would take.
BEFORE_THE_FIELD = {"muon_lr": 0.0, "embed_lr": 0.0, "head_lr": 0.0, "ema_decay": 0.0,
                    "muon_momentum": TrainConfig.muon_momentum, "muon_weight_decay": TrainConfig.muon_weight_decay}
RENAMED_RECIPES = {"tuned": "adamw"}  # the recipe's name before Muon came


def save(path: Path, checkpoint: Checkpoint) -> None:
    atomic_write(path, lambda f: torch.save(checkpoint.entries(), f))


def upgrade(saved: dict) -> dict:
    """A checkpoint of EARLIER_FORMAT as one of FORMAT; any other dict as it is.

    The earlier format is this one less what runs wrote before a field existed: a train_config
    without the fields of BEFORE_THE_FIELD (and with recipe "tuned" for "adamw"), an "optimizer"
    that is one AdamW's state_dict (before Muon), and an "rng" entry, the random state, which no
    step needs now (each seeds its own dropout)."""
    # Why upgrade rather than refuse: a checkpoint is hours of training, and a refusal would leave its
    # owner no way to resume or export it but an earlier version of this code, while the earlier
    # format differs only by what this one function fills in, so that no other code reads it.
    if saved.get("format") != EARLIER_FORMAT:
        return saved
    upgraded = {key: value for key, value in saved.items() if key != "rng"} | {"format": FORMAT}
    if isinstance(saved.get("train_config"), dict):
        filled = BEFORE_THE_FIELD | saved["train_config"]
        if isinstance(filled.get("recipe"), str):
            filled["recipe"] = RENAMED_RECIPES.get(filled["recipe"], filled["recipe"])
        upgraded["train_config"] = filled
        upgraded["trained_on"] = {"corpus": filled.get("data") or "", "dtype": filled.get("dtype")}
    if isinstance(saved.get("optimizer"), dict) and "param_groups" in saved["optimizer"]:
        upgraded["optimizer"] = {"adamw": saved["optimizer"]}
    return upgraded


def load(path: Path) -> Checkpoint:
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
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        # torch's first sentence ("PytorchStreamReader failed reading zip archive: not a ZIP archive")
        detail = str(exc).strip().splitlines()[0].split(". ")[0][:120] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"checkpoint {path} is corrupt or truncated ({detail}): delete it or point to another checkpoint"
        ) from None
    saved = upgrade(saved) if isinstance(saved, dict) else saved
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise UsageError(f"{path} is not a checkpoint of this trainer: "
                         "point to a model.pt written by python -m trainer")
    missing = [key for key in REQUIRED_KEYS if key not in saved]
    if missing:
        raise UsageError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}: it was not written "
                         "whole by python -m trainer; point to another checkpoint or start without --resume")
    problem = validate(saved)
    if problem:
        raise UsageError(f"checkpoint {path} is damaged ({problem}): point to another checkpoint or start "
                         "without --resume")
    return Checkpoint(**{name: saved[name] for name in ENTRY_TYPES if name in saved})


def validate(saved: dict) -> str | None:
    """What is wrong with a checkpoint's entries (of FORMAT), or None: their types, and its weights'
    names and shapes against the model its own model_config describes."""
    for name, kind in ENTRY_TYPES.items():
        value = saved.get(name)
        left_out = value is None and name not in REQUIRED_KEYS  # an optional entry may be absent, or None
        if name in saved and name != "step" and not left_out and not isinstance(value, kind):
            return f"{name!r} is a {type(value).__name__}, not a {kind.__name__}"
    step = saved["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' is {step!r}, not a step number"
    try:
        config = GPTConfig.from_dict(saved["model_config"])
        expected = weight_shapes(config)
    except Exception as exc:  # any value GPTConfig cannot build a model from
        return f"'model_config' describes no model ({type(exc).__name__})"
    for name in ("model", "training_weights"):
        problem = weights_problem(saved[name], expected) if saved.get(name) is not None else None
        if problem:
            return problem if name == "model" else f"{name!r}: {problem}"
    if len(saved["vocab"]) != config.vocab_size:
        return f"a vocabulary of {len(saved['vocab'])} characters for a model of {config.vocab_size}"
    problem = saved_config_problem(saved["train_config"])
    if problem:
        return f"'train_config': {problem}"
    if saved["train_config"]["ema_decay"] > 0 and saved.get("training_weights") is None:
        # "model" is then the average: resuming from it would restart training from other weights.
        return "its train_config has an --ema-decay but it lacks 'training_weights'"
    return optimizer_problem(saved["optimizer"], state_names(expected, saved["train_config"]), expected)


def optimizer_problem(states: dict, names: dict[str, list[str]], shapes: dict[str, tuple]) -> str | None:
    """The optimisers' states against the parameters their train_config gives each (`names`), or None:
    a moment of another shape would otherwise fail inside the optimiser's step."""
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


def check_compatible(checkpoint: Checkpoint, path: Path, config: GPTConfig, vocab: str) -> None:
    """A resumed run must have the checkpoint's model shape and vocabulary."""
    saved = GPTConfig.from_dict(checkpoint.model_config).shape()
    for key, value in config.shape().items():
        if saved[key] != value:
            flag = "--" + key.replace("_", "-")
            hint = "use the corpus it was trained on" if key == "vocab_size" else f"pass {flag} {saved[key]}"
            raise UsageError(
                f"checkpoint {path} has {key}={saved[key]} but this run has {key}={value}: {hint}, "
                "or start without --resume"
            )
    if checkpoint.vocab != vocab:
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
