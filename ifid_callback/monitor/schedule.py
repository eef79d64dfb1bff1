"""When the monitor refreshes its neighbour index and evaluates: step counters and due checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Schedule", "check_positive", "is_int"]


class Schedule:
    """Step counters of a training run and the decisions that follow from them.

    Args:
        refresh_every_n_steps: rebuild the index every this many steps (None: at each evaluation).
        eval_every_n_steps: evaluate when this many steps passed since the last evaluation
            (None: only on request).
    """

    def __init__(
        self, refresh_every_n_steps: int | None = None, eval_every_n_steps: int | None = None
    ) -> None:
        for name, value in (
            ("refresh_every_n_steps", refresh_every_n_steps),
            ("eval_every_n_steps", eval_every_n_steps),
        ):
            if value is not None and (not is_int(value) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}.")
        self.refresh_every_n_steps = refresh_every_n_steps
        self.eval_every_n_steps = eval_every_n_steps
        self.step = 0
        self.steps_observed = 0
        self.last_refresh_step: int | None = None
        self.last_eval_step: int | None = None

    def next_step(self, step: int | None) -> int:
        """The global step an observation at ``step`` counts as (default: last + 1)."""
        return int(step) if step is not None else self.step + 1

    def observed(self, step: int | None) -> None:
        """Count one observed training step (``step``: the global step; default: last + 1)."""
        self.steps_observed += 1
        self.step = self.next_step(step)

    def refresh_due(self) -> bool:
        """Whether the index is due for a scheduled rebuild at the current step."""
        return self.refresh_every_n_steps is not None and (
            self.last_refresh_step is None
            or self.step - self.last_refresh_step >= self.refresh_every_n_steps
        )

    def eval_due(self, step: int | None = None) -> bool:
        """Whether an evaluation is due at ``step`` (default: the last step)."""
        if self.eval_every_n_steps is None:
            return False
        step = self.step if step is None else int(step)
        last = self.last_eval_step or 0
        return step > 0 and step - last >= self.eval_every_n_steps

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "steps_observed": self.steps_observed,
            "last_refresh_step": self.last_refresh_step,
            "last_eval_step": self.last_eval_step,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = int(state.get("step", 0))
        self.steps_observed = int(state.get("steps_observed", 0))
        self.last_refresh_step = _opt_int(state.get("last_refresh_step"))
        self.last_eval_step = _opt_int(state.get("last_eval_step"))


def is_int(value: Any) -> bool:
    """A Python int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def check_positive(**values: Any) -> None:
    """Refuse any of ``values`` (name -> value) that is not a positive integer."""
    for name, value in values.items():
        if not is_int(value) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}.")
