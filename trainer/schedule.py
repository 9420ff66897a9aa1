"""Learning rate by step: linear warm-up, then cosine decay to min_lr, or constant."""

import math


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning rate of optimiser step `step` (1-based)."""
    if schedule == "constant":
        return lr
    if step <= warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * min(progress, 1.0)))
