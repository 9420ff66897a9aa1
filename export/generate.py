"""Text from any exported format: python -m export.generate MODEL [--prompt ..] [--tokens ..] ...

MODEL may be a trainer checkpoint (.pt), TorchScript (.ts), torch.export (.pt2) or ONNX (.onnx);
the suffix picks the runtime. The vocabulary comes from the checkpoint, or from the model.json
written beside the other formats, which must record the exported file's SHA-256 and agree with
the vocabulary and block size inside it. Only the text (prompt included) goes to stdout, each
character as soon as it is picked: a long generation shows progress, and Ctrl-C keeps what was
printed (exit status 130).
An hf/ folder (make export writes one) is loaded through transformers: export/hf_load.py.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from common import defaults
from common.cli import OneLineParser, UsageError, command, lasting_imports
from common.files import existing_file
from common.vocab import encode
from export.manifest import REDO, checked_facts, read_embedded_facts, read_manifest

# torch (slow to import) only once a model is loaded: bad flags, a missing file and a
# manifest that does not vouch for the file are refused at once.
if TYPE_CHECKING:
    import torch

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program Ctrl-C ended
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of stdout went away (| head)
FORMATS = {".pt": "eager", ".ts": "torchscript", ".pt2": "torch.export", ".onnx": "onnxruntime"}


@dataclass
class LoadedModel:
    logits: Callable[[torch.Tensor], torch.Tensor]  # token ids (B, T) -> logits (B, T, V)
    vocab: str
    block_size: int
    runtime: str


def load_model(path: str | Path) -> LoadedModel:
    """A model file ready to generate from; an exported one only when model.json vouches for it."""
    path = Path(path)
    if path.is_dir() and path.suffix not in FORMATS:  # an hf folder, under any name (a renamed copy)
        from export import hf_load  # transformers loads slowly: only for this format

        return LoadedModel(*hf_load.load_hf_folder(path), hf_load.RUNTIME)
    if path.suffix not in FORMATS:
        raise UsageError(f"{path} is not a model file: pass a .pt, .ts, .pt2 or .onnx file or an hf folder")
    existing_file(path, "model", "name a model file, or train (make train) and export (make export) first")
    runtime = FORMATS[path.suffix]
    if path.suffix == ".pt":
        from export.artifacts import load_trained_model

        model, saved = load_trained_model(path)
        return LoadedModel(model, saved.vocab, model.config.block_size, runtime)
    manifest = read_manifest(path.with_name(defaults.MANIFEST))
    manifest.verify(path)
    try:
        logits, facts = _load_exported(path)
    except UsageError:
        raise
    except Exception as exc:  # each runtime has its own exception types for a damaged file
        raise UsageError(f"{path} cannot be loaded by {runtime} ({type(exc).__name__}): {REDO}") from None
    model = LoadedModel(logits, manifest.vocab, manifest.block_size, runtime)
    _check_agrees(model, facts, path, manifest.path)
    return model


def _load_exported(path: Path) -> tuple[Callable[[torch.Tensor], torch.Tensor], tuple[str, int] | None]:
    """The model's logits function, and the (vocab, block_size) it carries (None if it carries none)."""
    import torch

    if path.suffix == ".ts":
        extra = {"vocab.txt": "", "block_size.txt": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            module = torch.jit.load(str(path), _extra_files=extra).eval()
        return module, checked_facts(extra["vocab.txt"].decode("utf-8"), int(extra["block_size.txt"]), str(path))
    if path.suffix == ".pt2":
        extra = {"vocab": "", "block_size": ""}
        program = torch.export.load(str(path), extra_files=extra)
        return program.module(), read_embedded_facts(extra, str(path))
    import onnxruntime

    from export.artifacts import INPUT_NAME, OUTPUT_NAME

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # a failed run is reported as one line here, not logged in colour too
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    facts = read_embedded_facts(session.get_modelmeta().custom_metadata_map, str(path))
    return lambda ids: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: ids.numpy()})[0]), facts


def _check_agrees(model: LoadedModel, facts: tuple[str, int] | None, path: Path, manifest: Path) -> None:
    """model.json must describe the model: its own vocabulary and block size (files of format 2
    carry them) and, for every file, logits over len(vocab) characters for a full context."""
    import torch

    mismatch = f"{manifest} does not match {path}"
    if facts is not None and facts != (model.vocab, model.block_size):
        what = ("vocabulary" if facts[0] != model.vocab
                else f"block size ({model.block_size}, the model's is {facts[1]})")
        raise UsageError(f"{mismatch}: its {what} differs from the one inside the model file; {REDO}")
    try:
        with torch.inference_mode():
            shape = tuple(model.logits(torch.zeros(1, model.block_size, dtype=torch.long)).shape)
    except Exception:  # a runtime refuses a context longer than the model's
        shape = None
    if shape != (1, model.block_size, len(model.vocab)):
        raise UsageError(f"{mismatch}: a vocabulary of {len(model.vocab)} characters and a block size of "
                         f"{model.block_size} do not fit the model; {REDO}")


def text_stream(model: LoadedModel, prompt: str, tokens: int, temperature: float = defaults.TEMPERATURE,
                top_k: int | None = None, seed: int | None = None) -> Iterator[str]:
    """The prompt, then `tokens` more characters, each yielded as soon as it is picked.
    temperature 0 is greedy decoding."""
    import torch

    from model.sample import stream

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    ids = encode(model.vocab, prompt)  # before the prompt is yielded: a bad prompt prints nothing
    yield prompt
    for token in stream(model.logits, ids, tokens, model.block_size,
                        temperature=temperature, top_k=top_k, generator=generator):
        yield model.vocab[token]


def generate_text(model: LoadedModel, prompt: str, tokens: int, temperature: float = defaults.TEMPERATURE,
                  top_k: int | None = None, seed: int | None = None) -> str:
    """The prompt and `tokens` more characters. temperature 0 is greedy decoding."""
    return "".join(text_stream(model, prompt, tokens, temperature, top_k, seed))


def print_stream(pieces: Iterable[str]) -> int:
    """Print each piece of text as it comes, then a newline: the exit status.

    Ctrl-C ends the text where it is (a newline, exit status 130, no traceback), also while the
    model loads if `pieces` loads it lazily; a reader that goes away (`| head`) ends it quietly,
    as a program killed by SIGPIPE."""
    printed = False
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
            printed = True
    except KeyboardInterrupt:
        if printed:
            print(flush=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Python flushes stdout again at exit: point it at /dev/null so that flush has nowhere to fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    print(flush=True)
    return 0


def add_sampling_arguments(p: OneLineParser) -> None:
    """The flags of every generator run by make (generate, cpp-generate), with one set of defaults."""
    p.add_argument("--prompt", default=defaults.PROMPT, help="text to continue (characters of the vocabulary)")
    p.add_argument("--tokens", type=int, default=defaults.TOKENS, help="characters to generate")
    p.add_argument("--temperature", type=float, default=defaults.TEMPERATURE, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="sample among the k likeliest characters only")
    p.add_argument("--seed", type=int, help="seed for sampling (same seed, same text)")


def parse_generator_flags(prog: str, description: str, model_help: str, argv: list[str]) -> argparse.Namespace:
    """The command line of a generator run by make: MODEL and the sampling flags, checked."""
    p = OneLineParser(prog=prog, description=description)
    p.add_argument("model", help=model_help)
    add_sampling_arguments(p)
    args = p.parse_args(argv)
    check_sampling(args.prompt, args.tokens, args.temperature, args.top_k, args.seed)
    return args


def check_sampling(prompt: str, tokens: int, temperature: float, top_k: int | None, seed: int | None) -> None:
    """Refuse what no runtime could generate with, before any model is loaded (or built)."""
    if not prompt:
        raise UsageError("--prompt is empty: give at least one character to start from")
    if tokens < 0:
        raise UsageError(f"--tokens must not be negative, got {tokens}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise UsageError(f"--temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if seed is not None and not 0 <= seed <= defaults.MAX_SEED:
        raise UsageError(f"--seed must be a whole number from 0 to 2**64-1, got {seed}")


@command
def main(argv: list[str]) -> int:
    args = parse_generator_flags("python -m export.generate", __doc__.splitlines()[0],
                                 "a .pt checkpoint or an exported .ts, .pt2 or .onnx file", argv)

    def text() -> Iterator[str]:  # lazy, so that Ctrl-C while the model loads is handled as later
        with lasting_imports():  # the runtime and the model, which live until exit
            model = load_model(args.model)
        yield from text_stream(model, args.prompt, args.tokens, args.temperature, args.top_k, args.seed)

    return print_stream(text())

if __name__ == "__main__":
    sys.exit(main())
