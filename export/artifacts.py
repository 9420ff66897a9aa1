"""A checkpoint as files other runtimes load: model.ts, model.pt2, model.onnx, hf/ and model.json.

Every format takes token ids (batch, time), int64, batch dynamic and time from 1 to the block
size, and returns logits (batch, time, vocab). model.json carries what a runtime without
Python needs to tokenize (export/manifest.py: the vocabulary as an array of characters, the
block size) and the SHA-256 of each file; model.onnx and model.pt2 carry the vocabulary and the
block size inside themselves too, model.ts as the plain-text files the C++ program reads.
hf/ is the Hugging Face folder of export/hf.py; model.json lists its files' SHA-256 too.
The set is written whole (write_set): a failed or killed export leaves the previous set.
"""

import contextlib
import hashlib
import io
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from common import defaults
from common.cli import UsageError
from common.files import atomic_write, fsync_dir, not_a_file
from export import hf
from export.manifest import embedded_facts, manifest_text
from export.onnx_file import traced_onnx
from model import GPT, GPTConfig
from trainer import checkpoint
from trainer.run_folder import RunFolder

ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "idx", "logits"
MAX_EXPORT_BATCH = 4096  # torch.export needs an upper bound; generation uses batch 1
STAGING_PREFIX = ".export-"  # + pid: where a set is written before it is renamed into place


def load_trained_model(path: Path) -> tuple[GPT, checkpoint.Checkpoint]:
    """The eager model of a trainer checkpoint, in eval mode, and the checkpoint itself."""
    saved = checkpoint.load(path)
    model = GPT(GPTConfig.from_dict(saved.model_config))
    model.load_state_dict(saved.model)
    return model.eval(), saved


def export_checkpoint(path: Path, strict: bool = False) -> list[Path]:
    """Write model.ts, model.pt2, model.onnx, hf/ and model.json beside the checkpoint; return their paths.

    A model that is not exactly GPT-2 (hf.NotRepresentable) gets the rest of the set without hf/:
    then strict (make export) raises that one line after writing, and otherwise (the end of a
    training run, whose model is saved and exported all the same) it is printed as a warning.
    """
    path = Path(path)
    model, saved = load_trained_model(path)
    check_destination(path.parent, [*defaults.EXPORTS, *(f"{hf.FOLDER}/{name}" for name in hf.FILES),
                                    defaults.MANIFEST])  # in seconds, not after the exporters' minute
    files = _serialized(model, saved.vocab)
    refused = None
    try:
        with _quiet_exporters():
            hf_set = hf.hf_files(model, saved, ONNX_OPSET)
        files |= {f"{hf.FOLDER}/{name}": data for name, data in hf_set.items()}
    except hf.NotRepresentable as exc:
        refused = exc
    card = f"{hf.FOLDER}/{defaults.HF_CARD}"  # edited by people before push_to_hub: not part of the model
    text = manifest_text(
        saved.vocab, model.config.block_size,
        {name: hashlib.sha256(data).hexdigest() for name, data in files.items() if name != card},
        config=model.config.to_dict(), step=saved.step, source=path.name,
        input={"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", "time <= block_size"]},
        output={"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", "time", "vocab"]},
        onnx_opset=ONNX_OPSET, torch_version=torch.__version__)
    files[defaults.MANIFEST] = text.encode("utf-8")  # last: the set is complete once it is in place
    written = write_set(path.parent, files)
    if refused and strict:
        raise refused
    if refused:
        print(f"warning: {refused}", file=sys.stderr, flush=True)
    return written


def _serialized(model: GPT, vocab: str) -> dict[str, bytes]:
    """The model files' bytes, made in memory: torch's C++ writers abort the whole process on a
    full disk instead of raising, so only plain Python writes touch the disk."""
    config = model.config
    example = torch.randint(0, config.vocab_size, (2, min(16, config.block_size)))
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH),
                            1: torch.export.Dim("time", min=1, max=config.block_size)}}
    facts = embedded_facts(vocab, config.block_size)
    with _quiet_exporters(), torch.no_grad():
        ts, pt2 = io.BytesIO(), io.BytesIO()
        torch.jit.save(torch.jit.trace(model, example), ts,
                       _extra_files=_torchscript_extras(vocab, config.block_size))
        torch.export.save(torch.export.export(model, (example,), dynamic_shapes=dynamic), pt2, extra_files=facts)
        sizes = {INPUT_NAME: {0: "batch", 1: "time"}, OUTPUT_NAME: {0: "batch", 1: "time"}}
        # The facts in its metadata: model.onnx alone is enough to generate.
        onnx_bytes = traced_onnx(model, (example,), [INPUT_NAME], [OUTPUT_NAME], sizes, ONNX_OPSET, facts)
    return dict(zip(defaults.EXPORTS, (ts.getvalue(), pt2.getvalue(), onnx_bytes), strict=True))


def write_set(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Put `files` (name -> bytes) into `out` as one set, in their order: all or none of them.

    First every name is checked (what stands there must be a file, hf/ a folder: the trainer's
    own checks), then every file is written whole (fsynced) into a staging directory inside the
    folder it goes to, then all are renamed into place; a name may hold folders (hf/onnx/model.onnx),
    made as needed. A staging directory beside its files keeps each rename within one file system,
    wherever hf/ is mounted or linked. A bad entry, a full disk, an error or a kill before the
    renames leaves the previous set untouched; the renames take microseconds, and a kill between
    two of them leaves files that the loaders refuse by the SHA-256 in model.json (renamed last).
    """
    check_destination(out, files)
    staging: dict[Path, Path] = {}  # destination folder -> its staging directory
    try:
        for name, data in files.items():
            target = out / name
            try:
                if target.parent not in staging:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _remove_abandoned_staging(target.parent)
                    staging[target.parent] = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-",
                                                                   dir=target.parent))
                atomic_write(staging[target.parent] / target.name, lambda f: f.write(data))
            except OSError as exc:
                raise UsageError(f"cannot write {target} ({exc.strerror}): free some space or make the "
                                 "directory writable, then run make export; the previous export set is "
                                 "unchanged") from None
        for name in files:
            os.replace(staging[(out / name).parent] / (out / name).name, out / name)
    finally:
        for folder in staging.values():
            shutil.rmtree(folder, ignore_errors=True)
    for folder in staging:
        fsync_dir(folder)  # the renames are durable once the directory entries are flushed
    return [out / name for name in files]


def check_destination(out: Path, files) -> None:
    """Before anything is written: the trainer's checks of the run folder (RunFolder.check_entries),
    and every other name of the set `files` (hf/'s files) a file or nothing, in a folder."""
    fix = "run make export again"
    RunFolder(out).check_entries(writer="make export", fix=fix)
    for name in files:
        problem = not_a_file(out / name) if os.path.lexists(out / name) else None
        if problem:
            raise UsageError(f"{out / name} {problem}, and make export writes a file there: remove or rename it, "
                             f"or {fix}")
        if os.path.lexists((out / name).parent) and not (out / name).parent.is_dir():
            raise UsageError(f"{(out / name).parent} is not a folder, and make export writes a folder there: "
                             f"remove or rename it, or {fix}")


def _remove_abandoned_staging(folder: Path) -> None:
    """Staging directories of exports that were killed (their process is gone)."""
    for staging in folder.glob(f"{STAGING_PREFIX}*"):
        pid = staging.name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(staging, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _torchscript_extras(vocab: str, block_size: int) -> dict:
    """Plain-text files inside model.ts, so the C++ program needs no JSON parser."""
    return {"vocab.txt": vocab, "block_size.txt": str(block_size)}


@contextlib.contextmanager
def _quiet_exporters():
    """Keep the exporters' chatter out of the user's output.

    TorchScript and its ONNX exporter warn that they are deprecated (torch.export is the
    successor, written too), and tracing warns about shape arithmetic (the tests check every
    shape); the torch.onnx logger stays at errors.
    """
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)
