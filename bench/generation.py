"""Generation speed of every export format: greedy decoding of 200 characters after "ROMEO:".

The context is cropped at the block size (128) as in export.generate. Speed depends on the
model's shape, not its weights, so without a checkpoint a one-step one is trained and exported
in a temporary directory: the bench runs on a fresh clone. model.onnx is also timed in the
browser page (web/), in headless Chromium when it is installed.
"""

import shutil
import tempfile
import time
from pathlib import Path

import torch

from bench.hf_generation import measure_cached_generation
from bench.processes import run_module
from common import defaults

PROMPT, TOKENS = defaults.PROMPT, defaults.TOKENS
FORMATS = [defaults.CHECKPOINT, *defaults.EXPORTS]  # the eager checkpoint, then each export


def measure_generation(ckpt: Path | None, data: str | None, tokens: int = TOKENS) -> dict:
    from export.generate import load_model  # torch.onnx loads slowly: only when generation runs

    with tempfile.TemporaryDirectory(prefix="bench-gen-") as tmp:
        files, source = _model_files(ckpt, data, Path(tmp))
        rows = []
        for path in files:
            model = load_model(path)
            rows.append({"format": path.suffix, "runtime": model.runtime, **_time_generation(model, tokens)})
        rows.append(_time_browser_generation(files[-1].parent, tokens))
        kv_cache = measure_cached_generation(files[-1].parent)
    return {"source": source, "prompt": PROMPT, "tokens": tokens, "threads": torch.get_num_threads(), "rows": rows,
            "kv_cache": kv_cache}


def _time_generation(model, tokens: int) -> dict:
    from export.generate import generate_text

    generate_text(model, PROMPT, 8, temperature=0.0)  # warm-up: first-call compilation and allocation
    start = time.perf_counter()
    generate_text(model, PROMPT, tokens, temperature=0.0)
    seconds = time.perf_counter() - start
    return {"tokens_per_s": tokens / seconds, "ms_per_token": 1000 * seconds / tokens}


def _time_browser_generation(model_dir: Path, tokens: int) -> dict:
    """The page (web/) on model.onnx in headless Chromium: its tokens/s on a second, warm run."""
    from web.browser import drive, missing_requirement, page_url
    from web.serve import serving

    row = {"format": ".onnx", "runtime": "onnxruntime-web (Chromium)"}
    missing = missing_requirement()
    if missing:
        return {**row, "not_measured": missing}
    with serving(model_dir) as url:
        page = drive(page_url(url, prompt=PROMPT, tokens=tokens, temperature=0, autostart=1), "--runs", 2)
    if page["state"] != "done":
        return {**row, "not_measured": page["error"]}
    return {**row, "tokens_per_s": page["tokensPerSecond"], "ms_per_token": 1000 / page["tokensPerSecond"]}


def _model_files(ckpt: Path | None, data: str | None, tmp: Path) -> tuple[list[Path], str]:
    """The four model files, and where they came from.

    A checkpoint's own exports are used when they sit beside it; otherwise a copy is exported
    in `tmp`, so the bench never writes into the user's checkpoint directory.
    """
    if ckpt is None:
        run_module("trainer", "--steps", 1, "--eval-iters", 1, "--sample-tokens", 0, "--progress", "lines",
                   "--out", tmp, *(["--data", data] if data else []), what="training the one-step checkpoint")
        return [tmp / name for name in FORMATS], "a one-step checkpoint (weights do not change the speed)"
    if all((ckpt.parent / name).is_file() for name in [*defaults.EXPORTS, defaults.MANIFEST]):
        return [ckpt, *(ckpt.parent / name for name in FORMATS[1:])], str(ckpt)
    from export.artifacts import export_checkpoint

    shutil.copy(ckpt, tmp / defaults.CHECKPOINT)
    export_checkpoint(tmp / defaults.CHECKPOINT)
    return [tmp / name for name in FORMATS], f"{ckpt} (exported to a temporary directory)"
