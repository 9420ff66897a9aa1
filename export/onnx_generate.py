"""Generate Shakespeare with nothing but ONNX Runtime, NumPy and model.json: no torch, no repo code.

    python export/onnx_generate.py checkpoints/model.onnx --prompt "ROMEO:" --tokens 200

A self-contained example for the generation chapters: copy this file next to model.onnx and
model.json and it runs anywhere `pip install onnxruntime numpy` does. It samples at temperature
0.8 as every generator of the project does; --temperature 0 is greedy, and so is a temperature so
small that the scaled logits are not finite. It runs model.onnx only if its SHA-256 is the one
model.json records. The text goes to stdout as it is generated; Ctrl-C keeps what was printed.
"""

import argparse
import hashlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

# The project's defaults (common/defaults.py, which this file may not import: it runs on its own).
PROMPT, TOKENS, TEMPERATURE = "ROMEO:", 200, 0.8
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program Ctrl-C ended
REDO = "copy model.onnx and model.json from one export, or export again with make export"


def fail(message: str):
    """Bad input: one line on stderr and exit status 2, never a traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def scaled_logits(logits: np.ndarray, temperature: float) -> np.ndarray | None:
    """logits / temperature, or None where the pick must be greedy: model/sample.py's rule (this
    file may not import it). Greedy at temperature 0 and at one so small that a quotient is not
    finite (1e-39 turns fp32 logits into infinities, whose softmax is NaN)."""
    if temperature == 0:
        return None
    with np.errstate(all="ignore"):  # an overflow (or a temperature that is 0 in fp32) is handled here
        scaled = logits / temperature
    return scaled if np.isfinite(scaled).all() else None


def next_token(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    scaled = scaled_logits(logits, temperature)
    if scaled is None:
        return int(np.argmax(logits))
    probs = np.exp(scaled - scaled.max())
    return int(rng.choice(len(logits), p=probs / probs.sum()))


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, instead of the usage text and the message
        fail(f"{message} (see --help)")


def parse_args() -> argparse.Namespace:
    p = Parser(description="Greedy or sampled text from model.onnx")
    p.add_argument("model", type=Path)
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--tokens", type=int, default=TOKENS)
    p.add_argument("--temperature", type=float, default=TEMPERATURE, help="0 = greedy")
    p.add_argument("--seed", type=int, help="seed of the sampling (default: a random one)")
    args = p.parse_args()
    if not args.prompt:
        fail("--prompt is empty: give at least one character to start from")
    if args.tokens < 0 or (args.seed is not None and args.seed < 0):
        fail("--tokens and --seed must not be negative")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):
        fail(f"--temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}")
    return args


def load(model_path: Path):
    """(session, vocab, block_size, input name, output name) of a model.onnx checked against its model.json."""
    manifest = model_path.with_name("model.json")
    redo = REDO
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        # An array of characters (a plain string in manifests before format 2: list() reads both).
        vocab, block_size, expected = list(meta["vocab"]), int(meta["block_size"]), meta["sha256"][model_path.name]
        input_name, output_name = meta["input"]["name"], meta["output"]["name"]
        model = model_path.read_bytes()
    except FileNotFoundError as exc:
        fail(f"{exc.filename} is missing: {redo}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        fail(f"{manifest} is not a manifest for {model_path.name} ({type(exc).__name__}): {redo}")
    if hashlib.sha256(model).hexdigest() != expected:
        fail(f"{model_path} does not match its SHA-256 in {manifest} (damaged, or from another export): {redo}")
    ort.set_default_logger_severity(4)  # fatal only: a failure is this program's one line, not onnxruntime's log
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])  # the bytes just checked
    # model.onnx carries its own vocabulary and block size too (since format 2): they must agree.
    own = session.get_modelmeta().custom_metadata_map
    if "vocab" in own and (json.loads(own["vocab"]), int(own["block_size"])) != (vocab, block_size):
        fail(f"{manifest} does not match {model_path} (vocabulary or block size): {redo}")
    return session, vocab, block_size, input_name, output_name


def last_logits(session, input_name: str, output_name: str, context: np.ndarray, vocab_size: int,
                model_path: Path) -> np.ndarray:
    """The logits of the context's last position. A model.onnx without metadata can disagree with an
    old model.json on the block size or the vocabulary: onnxruntime's failure is one line then."""
    try:
        logits = session.run([output_name], {input_name: context})[0][0, -1]
    except Exception as exc:  # onnxruntime's own exception types (Fail, InvalidArgument, ...)
        fail(f"{model_path} cannot run a context of {context.shape[1]} characters (onnxruntime: {type(exc).__name__}): "
             f"it does not fit the block size its model.json gives; {REDO}")
    if logits.shape[-1] != vocab_size:
        fail(f"{model_path} has {logits.shape[-1]} characters where its model.json has {vocab_size}; {REDO}")
    return logits


def main() -> None:
    args = parse_args()
    session, vocab, block_size, input_name, output_name = load(args.model)

    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(args.prompt) - set(index))
    if unknown:
        fail(f"prompt has characters outside the vocabulary: {''.join(unknown)!r}: use characters of the corpus")
    rng = np.random.default_rng(args.seed)
    ids = [index[ch] for ch in args.prompt]
    print(args.prompt, end="", flush=True)
    try:
        for _ in range(args.tokens):
            context = np.array([ids[-block_size:]], dtype=np.int64)  # the model sees at most block_size
            ids.append(next_token(last_logits(session, input_name, output_name, context, len(vocab), args.model),
                                  args.temperature, rng))
            print(vocab[ids[-1]], end="", flush=True)  # as it comes: a long generation shows progress
    except KeyboardInterrupt:
        print(flush=True)
        sys.exit(EXIT_INTERRUPTED)
    print(flush=True)

if __name__ == "__main__":
    main()
