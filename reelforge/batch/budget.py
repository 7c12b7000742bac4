"""A batch's budget: no new character starts once what was spent plus the estimate for the running ones (and
the new one) would pass the limit. The estimate is the mean of the characters finished so far, else the prior
(``REELFORGE_BATCH_ESTIMATE_GPU_S``); a running character may still end above it, so a batch can pass its limit
by at most what its running characters spend above their estimates."""

from __future__ import annotations

from dataclasses import dataclass, field

from reelforge.storage import cost_for

__all__ = ["Budget"]


@dataclass
class Budget:
    """Limits in money (``max_cost``) and GPU hours (``max_gpu_hours``); None = no limit."""

    max_cost: float | None = None
    max_gpu_hours: float | None = None
    estimate_gpu_s: float = 900.0
    price_per_hour: float = 0.0
    spent_cost: float = 0.0
    spent_gpu_s: float = 0.0
    _finished: list[tuple[float, float]] = field(default_factory=list)  # (gpu s, cost) of finished characters

    def __post_init__(self) -> None:
        for name, value in (("max_cost", self.max_cost), ("max_gpu_hours", self.max_gpu_hours)):
            if value is not None and value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")

    @property
    def limited(self) -> bool:
        return self.max_cost is not None or self.max_gpu_hours is not None

    def estimate(self) -> tuple[float, float]:
        """(GPU seconds, cost) one character is expected to take."""
        if self._finished:
            n = len(self._finished)
            return sum(g for g, _ in self._finished) / n, sum(c for _, c in self._finished) / n
        return self.estimate_gpu_s, cost_for(self.estimate_gpu_s, self.price_per_hour)

    def record(self, gpu_s: float, cost: float, *, executed: bool = True) -> None:
        """A character finished (or failed) having spent this; ``executed=False``: served from cache, so it
        says nothing about what a new character costs."""
        self.spent_gpu_s += gpu_s
        self.spent_cost += cost
        if executed:
            self._finished.append((gpu_s, cost))

    def refusal(self, running: int) -> str | None:
        """Why one more character may not start with ``running`` still going (None: it may)."""
        gpu_s, cost = self.estimate()
        n = running + 1
        if self.max_cost is not None and self.spent_cost + n * cost > self.max_cost:
            return (f"budget: spent {self.spent_cost:.2f} + {n} x {cost:.2f} estimated would pass "
                    f"--max-cost {self.max_cost:g}")
        if self.max_gpu_hours is not None and (self.spent_gpu_s + n * gpu_s) / 3600 > self.max_gpu_hours:
            return (f"budget: spent {self.spent_gpu_s / 3600:.4f} GPU h + {n} x {gpu_s / 3600:.4f} estimated would "
                    f"pass --max-gpu-hours {self.max_gpu_hours:g}")
        return None
