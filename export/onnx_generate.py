"""Generate Shakespeare with nothing but ONNX Runtime, NumPy and model.json: no torch, no repo code.

    python export/onnx_generate.py checkpoints/model.onnx --prompt "ROMEO:" --tokens 200

A self-contained example for the generation chapters: copy this file next to model.onnx and
model.json and it runs anywhere `pip install onnxruntime numpy` does. Greedy by default; with
--temperature > 0 it samples.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort


def main() -> None:
    p = argparse.ArgumentParser(description="Greedy or sampled text from model.onnx")
    p.add_argument("model", type=Path)
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    meta = json.loads(args.model.with_name("model.json").read_text(encoding="utf-8"))
    # An array of characters (a plain string in manifests before format 2: list() reads both).
    vocab, block_size = list(meta["vocab"]), meta["block_size"]
    index = {ch: i for i, ch in enumerate(vocab)}
    unknown = sorted(set(args.prompt) - set(index))
    if unknown:
        raise SystemExit(f"error: prompt has characters outside the vocabulary: {''.join(unknown)!r}")

    session = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    input_name, output_name = meta["input"]["name"], meta["output"]["name"]
    rng = np.random.default_rng(args.seed)
    ids = [index[ch] for ch in args.prompt]
    for _ in range(args.tokens):
        context = np.array([ids[-block_size:]], dtype=np.int64)  # the model sees at most block_size
        logits = session.run([output_name], {input_name: context})[0][0, -1]
        if args.temperature == 0:
            ids.append(int(np.argmax(logits)))
        else:
            scaled = logits / args.temperature
            probs = np.exp(scaled - scaled.max())
            ids.append(int(rng.choice(len(vocab), p=probs / probs.sum())))
    print("".join(vocab[i] for i in ids))


if __name__ == "__main__":
    main()
