"""The moving average of the weights: the model a run evaluates, samples from and exports.

Each step nudges the average towards the weights, avg <- avg + (1 - decay) (w - avg), so it is
the weights of about the last 1 / (1 - decay) steps, most recent heaviest (fewer early on:
decay_at). Until the schedule has decayed the learning rate, each step moves the weights a long
way (Muon's especially) and they jitter about the path the loss wants; the average sits nearer
the middle of that path, and its validation loss is lower at every evaluation
(docs/training.md has the figures). With decay 0 the average is the weights themselves.
"""

import copy

import torch

from model import GPT


class WeightAverage:
    def __init__(self, model: GPT, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: GPT, step: int) -> None:
        """After optimiser step `step` (1-based); at step 1 the average starts as the weights."""
        decay = decay_at(step, self.decay)
        for average, current in zip(self.model.parameters(), model.parameters(), strict=True):
            if step == 1 or decay == 0:
                average.copy_(current)
            else:
                average.lerp_(current, 1.0 - decay)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def decay_at(step: int, decay: float) -> float:
    """The decay of step `step`: (1 + step) / (10 + step) while that is lower (TensorFlow's
    ExponentialMovingAverage with num_updates), so that early on, and in a short run, the average
    spans the last tenth of the steps and not the first weights; `decay` from step 890 at 0.99."""
    return min(decay, (1 + step) / (10 + step))
