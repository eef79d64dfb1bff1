"""Checkpointing the monitor: what its state holds, and restoring it without half-applied changes."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Protocol

import torch

from ifid_callback.bank import LatentBank
from ifid_callback.metric import InterpolatedFID
from ifid_callback.monitor.best import BestEvaluation, parse_best
from ifid_callback.monitor.collect import LatentCollector
from ifid_callback.monitor.eval_set import EvalImages
from ifid_callback.monitor.evaluation import Evaluator
from ifid_callback.monitor.index_keeper import IndexKeeper
from ifid_callback.monitor.results import ResultHistory
from ifid_callback.monitor.schedule import Schedule

__all__ = ["STATE_FORMAT", "MonitorParts", "load_monitor_state", "monitor_state"]

STATE_FORMAT = 1
# load_state_dict's warnings name the line that called IFIDMonitor.load_state_dict.
_CALLER = 3


class MonitorParts(Protocol):
    """The parts of a monitor that its checkpoint covers (an :class:`IFIDMonitor` has them)."""

    metric: InterpolatedFID
    collector: LatentCollector
    schedule: Schedule
    results: ResultHistory
    evaluator: Evaluator
    eval_set: EvalImages
    index: IndexKeeper
    best: BestEvaluation


def monitor_state(parts: MonitorParts) -> dict[str, Any]:
    """Bank, counters, cached real statistics, history and the best evaluation's per-image
    influences (plain types and CPU tensors)."""
    sources = parts.collector.sources
    return {
        "format": STATE_FORMAT,
        "bank": parts.collector.bank.state_dict(),
        "sources": sources.state_dict() if sources is not None else None,
        **parts.schedule.state_dict(),
        "history": parts.results.state(),
        "real_statistics": parts.evaluator.real_state(),
        "eval_fingerprint": parts.eval_set.fingerprint,
        "best": parts.best.state(),
    }


def load_monitor_state(parts: MonitorParts, state: Mapping[str, Any]) -> None:
    """Restore ``parts`` from :func:`monitor_state`; missing entries keep their defaults.

    Everything is parsed before any part changes. A bank saved with another capacity keeps its
    newest rows; cached real statistics and the best evaluation's influences of another
    evaluation set are dropped (with a warning); a checkpoint without the best evaluation starts
    a new one at the next evaluation; the index is rebuilt at the next refresh or evaluation.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping from state_dict(), got {type(state)}.")
    collector = parts.collector
    device = collector.bank.device
    bank = _bank_from_state(collector, state.get("bank"), device)
    sources = None
    if collector.sources is not None:
        sources = _bank_from_state(collector, state.get("sources"), device)
        if len(sources) != len(bank):
            warnings.warn(
                "The checkpoint has no source images for its bank rows (saved without "
                "exact_bank); the bank starts empty.",
                UserWarning,
                stacklevel=_CALLER,
            )
            bank, sources = collector.new_bank(device), collector.new_bank(device)
    real = state.get("real_statistics")
    if real is not None and state.get("eval_fingerprint") != parts.eval_set.fingerprint:
        warnings.warn(
            "The checkpoint's cached real-image statistics belong to another evaluation set; "
            "they are recomputed at the next evaluation.",
            UserWarning,
            stacklevel=_CALLER,
        )
        real = None
    best = parse_best(state.get("best"))
    if best is not None and state.get("eval_fingerprint") != parts.eval_set.fingerprint:
        # Its influences belong to other images: no paired comparison with them.
        warnings.warn(
            "The checkpoint's best evaluation was on another evaluation set; ifid_vs_best "
            "starts again from the next evaluation.",
            UserWarning,
            stacklevel=_CALLER,
        )
        best = None
    # Everything parsed: from here on the monitor changes.
    collector.bank, collector.sources = bank, sources
    parts.metric.bank = bank
    parts.schedule.load_state_dict(state)
    parts.results.load(state.get("history", []))
    parts.best.influences = best
    # A full reset of the metric (cached real statistics included); the index is rebuilt.
    parts.evaluator.load_real_state(real)
    parts.index.invalidate()
    collector.drop_captured()


def _bank_from_state(
    collector: LatentCollector, state: Mapping[str, Any] | None, device: torch.device
) -> LatentBank:
    bank = collector.new_bank(device)
    if state:
        # Saved with another capacity: loading re-adds the rows in insertion order, so the
        # newest `capacity` rows survive.
        bank.load_state_dict({**state, "capacity": collector.capacity})
    return bank
