"""Autoregressive sampling over any function that maps token ids (1, T) to logits (1, T, V).

One loop serves the eager model, TorchScript, torch.export and (through a small adapter)
ONNX Runtime, so every format is decoded the same way.
"""

from typing import Callable

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@torch.inference_mode()
def generate(
    logits_fn: LogitsFn,
    ids: list[int],
    max_new_tokens: int,
    block_size: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Extend `ids` by max_new_tokens ids. temperature 0 is greedy (argmax) decoding."""
    out = list(ids)
    for _ in range(max_new_tokens):
        context = torch.tensor([out[-block_size:]], dtype=torch.long)
        logits = logits_fn(context)[0, -1].float()
        if temperature == 0:
            out.append(int(torch.argmax(logits)))
            continue
        logits = logits / temperature
        if top_k is not None and top_k < logits.numel():
            kth = torch.topk(logits, top_k).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        out.append(int(torch.multinomial(probs, 1, generator=generator)))
    return out
