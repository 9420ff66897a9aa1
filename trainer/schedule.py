"""Learning rate by step: linear warm-up, then a decay to min_lr (cosine, or warm-up/stable/decay), or constant."""

import math

# wsd: the rate holds at lr until this fraction of the steps after warm-up is left, then falls
# linearly to min_lr (the speedrun records' shape: a long stable phase, a short cool-down).
WSD_DECAY_FRACTION = 0.4


def lr_at(step: int, lr: float, min_lr: float, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning rate of optimiser step `step` (1-based)."""
    if schedule == "constant":
        return lr
    if step <= warmup_steps:
        return lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "wsd":
        left = (1.0 - progress) / WSD_DECAY_FRACTION  # 1 where the decay starts, 0 at the last step
        return lr if left >= 1.0 else min_lr + (lr - min_lr) * left
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
