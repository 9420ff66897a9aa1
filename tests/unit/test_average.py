"""trainer.average: the moving average of the weights that evaluations, samples and exports use."""

import torch

from model import GPT, GPTConfig
from trainer.average import WeightAverage, decay_at

SMALL = GPTConfig(vocab_size=5, block_size=4, n_layer=1, n_head=1, n_embd=4)


def weights_at(value: float) -> GPT:
    model = GPT(SMALL)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    return model


def first(model: GPT) -> float:
    return next(model.parameters()).flatten()[0].item()


def test_the_average_starts_as_the_weights_then_follows_them_by_the_decay_of_each_step():
    average = WeightAverage(weights_at(0.0), decay=0.99)
    average.update(weights_at(1.0), step=1)
    assert all(torch.equal(p, torch.ones_like(p)) for p in average.model.parameters())
    average.update(weights_at(3.0), step=2)  # decay (1 + 2) / (10 + 2) = 0.25
    assert first(average.model) == 1.0 * 0.25 + 3.0 * 0.75
    assert not any(p.requires_grad for p in average.model.parameters()) and not average.model.training


def test_the_decay_is_short_early_and_the_configured_one_later():
    assert decay_at(2, 0.99) == 0.25 and decay_at(80, 0.99) == 0.9
    assert decay_at(889, 0.99) < 0.99 and decay_at(890, 0.99) == 0.99 == decay_at(10**6, 0.99)


def test_decay_zero_is_the_weights_themselves():
    average = WeightAverage(weights_at(0.0), decay=0.0)
    for step, value in enumerate([1.0, 2.0, -7.5], start=1):
        average.update(weights_at(value), step)
        assert first(average.model) == value


def test_its_state_round_trips():
    average = WeightAverage(weights_at(0.0), decay=0.9)
    average.update(weights_at(2.0), step=1)
    again = WeightAverage(weights_at(5.0), decay=0.9)
    again.load_state_dict(average.state_dict())
    assert first(again.model) == 2.0
