"""Learning-rate schedules, as per-step multipliers of the base rate (``LambdaLR``)."""
from __future__ import annotations

import math

SCHEDULES = ("cosine", "constant")


class StepSchedule:
    """Multiplier of the base learning rate at optimiser step ``s`` (counting from 0).

    ``warmup_steps`` ramp linearly from ``1/warmup_steps`` to 1; then ``"cosine"`` decays to 0
    at ``total_steps`` (a half cosine), ``"constant"`` stays at 1. A picklable class rather
    than a lambda, so the scheduler's state can be saved with the checkpoint.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int = 0):
        if kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {kind!r}; choose one of {SCHEDULES}")
        if warmup_steps < 0 or warmup_steps >= max(total_steps, 1):
            raise ValueError(f"warmup_steps must be in [0, total steps={total_steps}), got "
                             f"{warmup_steps}")
        self.kind, self.total, self.warmup = kind, int(total_steps), int(warmup_steps)

    def __call__(self, s: int) -> float:
        if s < self.warmup:
            return (s + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        t = (s - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
