"""Text from any exported format: python -m export.generate MODEL [--prompt ..] [--tokens ..] ...

MODEL may be a trainer checkpoint (.pt), TorchScript (.ts), torch.export (.pt2) or ONNX (.onnx);
the suffix picks the runtime. The vocabulary comes from the checkpoint, or from the model.json
written beside the other formats. Only the text (prompt included) goes to stdout.
"""

import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from export.artifacts import INPUT_NAME, OUTPUT_NAME, load_trained_model
from export.manifest import MANIFEST_NAME, read_manifest
from model import generate
from trainer.data import decode, encode
from trainer.errors import OneLineParser, UsageError, report_usage_errors

FORMATS = {".pt": "eager", ".ts": "torchscript", ".pt2": "torch.export", ".onnx": "onnxruntime"}


@dataclass
class LoadedModel:
    logits: Callable[[torch.Tensor], torch.Tensor]  # token ids (B, T) -> logits (B, T, V)
    vocab: str
    block_size: int
    runtime: str


def load_model(path: str | Path) -> LoadedModel:
    path = Path(path)
    if path.suffix not in FORMATS:
        raise UsageError(f"{path} is not a model file: pass a .pt, .ts, .pt2 or .onnx file")
    if not path.is_file():
        raise UsageError(f"model {path} does not exist: train (make train) and export (make export) first")
    runtime = FORMATS[path.suffix]
    if path.suffix == ".pt":
        model, snapshot = load_trained_model(path)
        return LoadedModel(model, snapshot["vocab"], model.config.block_size, runtime)
    manifest = read_manifest(path.with_name(MANIFEST_NAME))
    try:
        logits = _load_exported(path)
    except Exception as exc:  # each runtime has its own exception types for a damaged file
        raise UsageError(f"{path} cannot be loaded by {runtime} ({type(exc).__name__}): export it again with make export") from None
    return LoadedModel(logits, manifest.vocab, manifest.block_size, runtime)


def _load_exported(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    if path.suffix == ".ts":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            return torch.jit.load(str(path)).eval()
    if path.suffix == ".pt2":
        return torch.export.load(str(path)).module()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda ids: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: ids.numpy()})[0])


def generate_text(model: LoadedModel, prompt: str, tokens: int, temperature: float = 0.0,
                  top_k: int | None = None, seed: int | None = None) -> str:
    """The prompt and `tokens` more characters. temperature 0 is greedy decoding."""
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = generate(model.logits, encode(model.vocab, prompt), tokens, model.block_size,
                   temperature=temperature, top_k=top_k, generator=generator)
    return decode(model.vocab, ids)


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m export.generate", description=__doc__.splitlines()[0])
    p.add_argument("model", help="a .pt checkpoint or an exported .ts, .pt2 or .onnx file")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (characters of the vocabulary)")
    p.add_argument("--tokens", type=int, default=200, help="characters to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=int, help="seed for sampling (same seed, same text)")

    def body() -> int:
        args = p.parse_args(argv)
        if args.tokens < 0 or args.temperature < 0 or (args.top_k is not None and args.top_k < 1):
            raise UsageError("--tokens and --temperature must not be negative and --top-k must be at least 1")
        if not args.prompt:
            raise UsageError("--prompt is empty: give at least one character to start from")
        model = load_model(args.model)
        print(generate_text(model, args.prompt, args.tokens, args.temperature, args.top_k, args.seed))
        return 0

    return report_usage_errors(body)

if __name__ == "__main__":
    sys.exit(main())
