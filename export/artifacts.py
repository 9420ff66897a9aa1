"""A checkpoint as files other runtimes load: model.ts, model.pt2, model.onnx and model.json.

Every format takes token ids (batch, time), int64, batch dynamic and time from 1 to the block
size, and returns logits (batch, time, vocab). model.json carries what a runtime without
Python needs to tokenize (export/manifest.py: the vocabulary as an array of characters, the
block size) and the SHA-256 of each file; model.onnx and model.pt2 carry the vocabulary and the
block size inside themselves too, model.ts as the plain-text files the C++ program reads.
Each file is written to a temporary name and renamed, so a failed export leaves no half file.
"""

import contextlib
import hashlib
import io
import logging
import warnings
from pathlib import Path

import torch

from export.manifest import MANIFEST_NAME, embedded_facts, manifest_text
from model import GPT, GPTConfig
from trainer import checkpoint
from trainer.atomic import atomic_write
from trainer.errors import UsageError

ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "idx", "logits"
MAX_EXPORT_BATCH = 4096  # torch.export needs an upper bound; generation uses batch 1


def load_trained_model(path: Path) -> tuple[GPT, dict]:
    """The eager model of a trainer checkpoint, in eval mode, and the checkpoint itself."""
    snapshot = checkpoint.load(path)
    model = GPT(GPTConfig.from_dict(snapshot["model_config"]))
    model.load_state_dict(snapshot["model"])
    return model.eval(), snapshot


def export_checkpoint(path: Path) -> list[Path]:
    """Write model.ts, model.pt2, model.onnx and model.json beside the checkpoint; return their paths."""
    path = Path(path)
    model, snapshot = load_trained_model(path)
    config = model.config
    example = torch.randint(0, config.vocab_size, (2, min(16, config.block_size)))
    dynamic = {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=MAX_EXPORT_BATCH),
                            1: torch.export.Dim("time", min=1, max=config.block_size)}}
    out = path.parent
    vocab = snapshot["vocab"]
    facts = embedded_facts(vocab, config.block_size)
    written = {}
    with _quiet_exporters(), torch.no_grad():
        traced = torch.jit.trace(model, example)
        written["model.ts"] = _save(out / "model.ts", lambda f: torch.jit.save(
            traced, f, _extra_files=_torchscript_extras(vocab, config.block_size)))
        program = torch.export.export(model, (example,), dynamic_shapes=dynamic)
        written["model.pt2"] = _save(out / "model.pt2", lambda f: torch.export.save(program, f, extra_files=facts))
        onnx_model = _onnx_model(model, example, dynamic, facts)
        written["model.onnx"] = _save(out / "model.onnx", lambda f: f.write(onnx_model.SerializeToString()))
    text = manifest_text(
        vocab, config.block_size, {name: _sha256(file) for name, file in written.items()},
        config=config.to_dict(), step=snapshot["step"], source=path.name,
        input={"name": INPUT_NAME, "dtype": "int64", "shape": ["batch", "time <= block_size"]},
        output={"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", "time", "vocab"]},
        onnx_opset=ONNX_OPSET, torch_version=torch.__version__)
    written[MANIFEST_NAME] = _save(out / MANIFEST_NAME, lambda f: f.write(text.encode("utf-8")))
    return list(written.values())


def _torchscript_extras(vocab: str, block_size: int) -> dict:
    """Plain-text files inside model.ts, so the C++ program needs no JSON parser."""
    return {"vocab.txt": vocab, "block_size.txt": str(block_size)}


def _onnx_model(model: GPT, example: torch.Tensor, dynamic: dict, facts: dict[str, str]):
    import onnx

    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                opset_version=ONNX_OPSET, external_data=False, verbose=False)
    proto = program.model_proto
    for key, value in facts.items():  # so model.onnx alone is enough to generate
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _save(path: Path, write) -> Path:
    try:
        atomic_write(path, write)
    except OSError as exc:
        raise UsageError(f"cannot write {path} ({exc.strerror}): free some space or make the directory writable") from None
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _quiet_exporters():
    """Keep the exporters' chatter out of the user's output.

    TorchScript warns that it is deprecated (torch.export is its successor, written too), tracing
    warns about shape arithmetic (the tests check every shape), and the ONNX exporter logs
    progress and the absence of torchvision.
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
