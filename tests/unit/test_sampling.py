"""The one sampling rule (model/sample.py, mirrored by the ONNX-only example): temperature 0, or one
so small that the scaled logits are not finite, is greedy; and tokens come out one at a time."""

import io
import sys

import numpy as np
import pytest
import torch

from export import onnx_generate
from export.generate import EXIT_INTERRUPTED, print_stream
from model.sample import pick_token, scaled_logits, stream

LOGITS = torch.tensor([1.5, -2.0, 7.25, 3.0])
GREEDY = int(torch.argmax(LOGITS))


@pytest.mark.parametrize("temperature", [0.0, 1e-39, 1e-45, 5e-324])
def test_a_temperature_whose_scaled_logits_are_not_finite_is_greedy(temperature):
    assert scaled_logits(LOGITS, temperature) is None
    for top_k in (None, 2):
        assert pick_token(LOGITS, temperature, top_k, torch.Generator().manual_seed(0)) == GREEDY


@pytest.mark.parametrize("temperature", [1e-30, 0.8, 1.0, 1e30])
def test_a_temperature_with_finite_scaled_logits_samples(temperature):
    assert torch.equal(scaled_logits(LOGITS, temperature), LOGITS / temperature)


@pytest.mark.parametrize("temperature", [0.0, 1e-300, 1e-39, 1e-30, 0.8, 1e30])
def test_the_onnx_example_applies_the_same_rule(temperature):
    ours = scaled_logits(LOGITS, temperature)
    theirs = onnx_generate.scaled_logits(LOGITS.numpy(), temperature)
    assert (ours is None) == (theirs is None)
    if ours is not None:
        assert np.allclose(theirs, ours.numpy())


def test_stream_yields_each_token_before_computing_the_next():
    calls = []

    def logits_fn(ids):
        calls.append(ids.shape[1])
        return LOGITS.expand(1, ids.shape[1], -1)

    tokens = stream(logits_fn, [0, 1], 1_000_000_000, block_size=8, temperature=0)
    assert [next(tokens), next(tokens)] == [GREEDY, GREEDY]
    assert calls == [2, 3]  # one model call per token so far, not a billion


def test_print_stream_keeps_what_was_printed_when_interrupted(monkeypatch):
    def pieces():
        yield "ROMEO:"
        yield " a"
        raise KeyboardInterrupt

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert print_stream(pieces()) == EXIT_INTERRUPTED
    assert out.getvalue() == "ROMEO: a\n"


def test_print_stream_ends_the_text_with_a_newline(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert print_stream(iter(["ROMEO:", "x"])) == 0 and out.getvalue() == "ROMEO:x\n"
