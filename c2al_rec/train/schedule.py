"""Learning-rate schedule: linear warm-up, then constant, linear or cosine decay to zero."""

from __future__ import annotations

import math


def lr_factor(step: int, warmup_steps: int, decay: str, total_steps: int) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based).

    Stateless in ``step``, so a resumed run follows the same schedule without saved state.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "none" or total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"train.decay: unknown '{decay}'")
