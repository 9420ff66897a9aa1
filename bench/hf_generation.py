"""Generation with and without a KV cache: greedy, 100 characters after "ROMEO:", batch 1.

The hf/ folder's onnx/model.onnx reuses the keys and values of earlier positions, so each new
character costs one position's work; model.onnx recomputes the whole context every time. Both are
timed in the same runtime (onnxruntime in Python), then transformers (Python, with and without its
cache) and transformers.js (Node, and the page in Chromium). 100 characters fit the context of
128 that transformers' generate() does not slide.
"""

import json
import subprocess
import time
from pathlib import Path

import numpy as np

from common import defaults
from common.vocab import encode
from export import hf
from export.manifest import read_manifest

PROMPT, TOKENS = defaults.PROMPT, 100
WEB = Path(__file__).resolve().parents[1] / "web"


def measure_cached_generation(model_dir: Path, tokens: int = TOKENS) -> dict:
    """Rows of tokens/s for the cache-free model.onnx and the hf/ folder's runtimes."""
    from export.generate import generate_text, load_model

    folder = model_dir / hf.FOLDER
    onnx = load_model(model_dir / "model.onnx")
    rows = [{"format": ".onnx", "runtime": "onnxruntime, no cache",
             **_timed(lambda n: generate_text(onnx, PROMPT, n, temperature=0.0), tokens)}]
    if not (folder / hf.ONNX_DECODER).is_file():
        return {"prompt": PROMPT, "tokens": tokens, "rows": rows + [
            {"format": "hf/", "runtime": "all", "not_measured": "no hf/ folder (make export says why)"}]}
    vocab = read_manifest(model_dir / defaults.MANIFEST).vocab
    rows.append({"format": "hf/onnx/model.onnx", "runtime": "onnxruntime, KV cache",
                 **_timed(_cached_onnx_generator(folder, vocab), tokens)})
    for use_cache in (True, False):
        rows.append({"format": "hf/", "runtime": f"transformers (Python), {'KV cache' if use_cache else 'no cache'}",
                     **_timed(_transformers_generator(folder, use_cache), tokens)})
    rows.append({"format": "hf/", "runtime": "transformers.js (Node), KV cache", **_node_row(folder, tokens)})
    rows.append({"format": "hf/", "runtime": "transformers.js (Chromium), KV cache", **_browser_row(model_dir, tokens)})
    return {"prompt": PROMPT, "tokens": tokens, "rows": rows}


def _timed(generate, tokens: int) -> dict:
    generate(8)  # warm-up: first-call compilation and allocation
    start = time.perf_counter()
    generate(tokens)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "ms_per_token": 1000 * seconds / tokens}


def _cached_onnx_generator(folder: Path, vocab: str):
    """Greedy decoding over the KV-cache decoder: the prompt in one step, then one token a step."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(folder / hf.ONNX_DECODER), providers=["CPUExecutionProvider"])
    config = json.loads((folder / "config.json").read_text())
    names = hf.cache_names(config["n_layer"], "past_key_values")
    head = config["n_embd"] // config["n_head"]

    def generate(tokens: int) -> list[int]:
        ids = encode(vocab, PROMPT)
        past = {name: np.zeros((1, config["n_head"], 0, head), np.float32) for name in names}
        step, start = ids, 0
        for _ in range(tokens):
            feed = {"input_ids": np.array([step]), "attention_mask": np.ones((1, len(ids)), np.int64),
                    "position_ids": np.arange(start, len(ids))[None], **past}
            outputs = session.run(None, feed)
            past = dict(zip(names, outputs[1:]))
            start = len(ids)
            ids.append(int(outputs[0][0, -1].argmax()))
            step = ids[-1:]
        return ids

    return generate


def _transformers_generator(folder: Path, use_cache: bool):
    import torch

    from export.hf_load import from_pretrained

    model, tokenizer = from_pretrained(folder)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids

    def generate(tokens: int) -> None:
        with torch.inference_mode():
            model.generate(ids, max_new_tokens=tokens, do_sample=False, use_cache=use_cache)

    return generate


def _node_row(folder: Path, tokens: int) -> dict:
    result = subprocess.run(["node", str(WEB / "hf-time.mjs"), str(folder), PROMPT, str(tokens)],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        return {"not_measured": (result.stderr.strip().splitlines() or ["node failed"])[-1][:120]}
    return json.loads(result.stdout)


def _browser_row(model_dir: Path, tokens: int) -> dict:
    """The page on the hf/ folder (runtime=hf) in headless Chromium: tokens/s of a second, warm run."""
    from web.browser import drive, missing_requirement, page_url
    from web.serve import serving

    missing = missing_requirement()
    if missing:
        return {"not_measured": missing}
    with serving(model_dir) as url:
        page = drive(page_url(url, prompt=PROMPT, tokens=tokens, temperature=0, autostart=1, runtime="hf"), "--runs", 2)
    if page["state"] != "done":
        return {"not_measured": page["error"]}
    return {"tokens_per_s": page["tokensPerSecond"], "ms_per_token": 1000 / page["tokensPerSecond"]}
