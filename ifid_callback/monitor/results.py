"""The monitor's evaluation results: each evaluation's numbers in order, the latest, checkpointed."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["BOOKKEEPING_KEYS", "ResultHistory"]

#: Entries of an evaluation's result that describe it rather than measure the VAE.
BOOKKEEPING_KEYS = ("step", "bank_size", "num_eval_images")


class ResultHistory:
    """The results of a run's evaluations, oldest first.

    Each entry is one evaluation's numbers (floats, e.g. ``"ifid"``, ``"rfid"``, ``"ifid_ema"``)
    with the :data:`BOOKKEEPING_KEYS`. ``entries`` is the list itself: framework adapters add
    the numbers they log with an evaluation to its entry.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, float]] = []

    def record(
        self, values: Mapping[str, float], *, step: int, bank_size: int, num_eval_images: int
    ) -> dict[str, float]:
        """Append one evaluation's ``values`` with its bookkeeping; returns a copy of the entry."""
        result = dict(values)
        result.update(
            step=int(step), bank_size=int(bank_size), num_eval_images=int(num_eval_images)
        )
        self.entries.append(result)
        return dict(result)

    @property
    def last(self) -> dict[str, float] | None:
        """A copy of the latest entry, or None before the first evaluation."""
        return dict(self.entries[-1]) if self.entries else None

    def state(self) -> list[dict[str, float]]:
        """Copies of the entries, for a checkpoint."""
        return [dict(h) for h in self.entries]

    def load(self, saved: Iterable[Mapping[str, float]]) -> None:
        """Replace the entries with copies of ``saved`` (from :meth:`state`)."""
        self.entries = [dict(h) for h in saved]

    def __len__(self) -> int:
        return len(self.entries)
