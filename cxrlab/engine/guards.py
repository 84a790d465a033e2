"""Stop a run the moment its loss stops being a number.

A NaN or inf loss poisons every weight at the next optimiser step; training on would write
garbage checkpoints. The watcher keeps the last few step losses on the device (no GPU sync
per step) and checks them every ``check_every`` steps and before every checkpoint, so the
run stops with a message that names the first bad step, and the last checkpoint on disk is
still a good one.
"""
from __future__ import annotations

import math

import torch

from cxrlab.errors import CxrlabError


class NonFiniteLossError(CxrlabError, FloatingPointError):
    """The training loss became NaN or inf."""


def non_finite_message(value: float, epoch: int, step: int, global_step: int) -> str:
    kind = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return (f"loss became {kind} at epoch {epoch}, step {step} (global step {global_step}); "
            "lower the learning rate, check inputs, or use fp32")


class LossWatch:
    """Collects detached step losses; :meth:`check` raises :class:`NonFiniteLossError`.

    ``epoch`` counts from 1, ``step`` from 0 within the epoch, ``global_step`` from 0 over the
    whole run. Under DDP pass ``all_reduce`` (``all_reduce(tensor, op="min")`` over ranks) so that
    every rank stops together at the same step instead of leaving the others waiting.
    """

    def __init__(self, check_every: int = 1, all_reduce=None):
        self.check_every = max(1, int(check_every))
        self.all_reduce = all_reduce
        self._losses: list[torch.Tensor] = []
        self._where: list[tuple[int, int, int]] = []
        self.total = 0.0
        self.count = 0
        self._win_total = 0.0
        self._win_count = 0

    def add(self, loss: torch.Tensor, epoch: int, step: int, global_step: int) -> None:
        self._losses.append(loss.detach().float().reshape(()))
        self._where.append((epoch, step, global_step))
        if len(self._losses) >= self.check_every:
            self.check()

    def check(self) -> None:
        """Check the pending losses (a device sync); add them to the running sum."""
        if not self._losses:
            return
        vals = torch.stack(self._losses).cpu()
        where, self._losses, self._where = self._where, [], []
        finite = torch.isfinite(vals)
        first = int((~finite).nonzero()[0, 0]) if not bool(finite.all()) else len(vals)
        if self.all_reduce is not None:  # the earliest bad step over all ranks
            t = torch.tensor([float(first)])
            first_any = int(self.all_reduce(t, op="min").item())
            if first_any < first:
                e, s, g = where[first_any]
                raise NonFiniteLossError(
                    non_finite_message(float("nan"), e, s, g).replace("became nan", "became nan or inf")
                    + " (seen on another process)")
        if first < len(vals):
            e, s, g = where[first]
            raise NonFiniteLossError(non_finite_message(float(vals[first]), e, s, g))
        self.total += float(vals.sum())
        self.count += len(vals)
        self._win_total += float(vals.sum())
        self._win_count += len(vals)

    def mean(self) -> float:
        return self.total / max(1, self.count)

    def window_mean(self) -> float:
        """Mean loss since the previous call (checks pending losses first)."""
        self.check()
        m = self._win_total / max(1, self._win_count)
        self._win_total, self._win_count = 0.0, 0
        return m

    def reset(self) -> None:
        self._losses, self._where = [], []
        self.total, self.count = 0.0, 0
        self._win_total, self._win_count = 0.0, 0
