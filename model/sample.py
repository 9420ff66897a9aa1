"""Autoregressive sampling over any function that maps token ids (1, T) to logits (1, T, V).

One loop serves the eager model, TorchScript, torch.export and (through a small adapter)
ONNX Runtime, so every format is decoded the same way. The same rule picks a token in every
generator of the project (export/onnx_generate.py, export/cpp/generate.cpp, web/sampling.mjs
mirror scaled_logits): temperature 0, or a temperature so small that the scaled logits are not
finite, is greedy.
"""

from typing import Callable, Iterator

import torch

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def scaled_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor | None:
    """logits / temperature, or None where the pick must be greedy (argmax of the logits).

    Greedy at temperature 0, and at a temperature so small that a quotient is not finite (1e-39
    turns fp32 logits into infinities, whose softmax is NaN): sampling tends to the argmax as the
    temperature falls, so that is what such a temperature asks for.
    """
    if temperature == 0:
        return None
    scaled = logits / temperature
    return scaled if bool(torch.isfinite(scaled).all()) else None


def pick_token(logits: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator | None) -> int:
    """The next token id from one position's logits (V,)."""
    scaled = scaled_logits(logits, temperature)
    if scaled is None:
        return int(torch.argmax(logits))
    if top_k is not None and top_k < scaled.numel():
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return int(torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=generator))


@torch.inference_mode()
def stream(
    logits_fn: LogitsFn,
    ids: list[int],
    max_new_tokens: int,
    block_size: int,
    temperature: float = 0.8,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """The max_new_tokens ids that follow `ids`, each yielded as soon as it is picked."""
    out = list(ids)
    for _ in range(max_new_tokens):
        context = torch.tensor([out[-block_size:]], dtype=torch.long)
        out.append(pick_token(logits_fn(context)[0, -1].float(), temperature, top_k, generator))
        yield out[-1]


def generate(logits_fn: LogitsFn, ids: list[int], max_new_tokens: int, block_size: int,
             temperature: float = 0.8, top_k: int | None = None,
             generator: torch.Generator | None = None) -> list[int]:
    """`ids` extended by max_new_tokens ids. temperature 0 is greedy (argmax) decoding."""
    return [*ids, *stream(logits_fn, ids, max_new_tokens, block_size, temperature, top_k, generator)]
