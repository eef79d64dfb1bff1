"""One evaluation of the monitor over every set of weights it measures (``eval_vae`` and
``extra_vaes``): the index made ready for each, the metric run, keys suffixed, and for the
selected weights the comparison with the best earlier evaluation and the neighbours' ages."""

from __future__ import annotations

from typing import Any

from ifid_callback.distributed import world_and_rank
from ifid_callback.extras.uncertainty import latest_influences

__all__ = ["evaluate_weights"]


def evaluate_weights(monitor: Any, adapters: dict[str, Any]) -> dict[str, float]:
    """``{key + suffix: value}`` for each ``suffix -> adapter`` of ``adapters`` (suffix ``""``
    first: the selected weights), plus ``ifid_vs_best(_std)`` and the neighbour ages of the
    selected weights. Collective under torch.distributed, like ``IFIDMonitor.evaluate``."""
    world, rank = world_and_rank()
    values: dict[str, float] = {}
    for n, (suffix, adapter) in enumerate(adapters.items()):
        monitor.index.prepare_evaluation(adapter, first=n == 0, world=world)
        found = monitor.evaluator.run(adapter, rank, world, monitor.placement.place())
        values.update({f"{key}{suffix}": value for key, value in found.items()})
        if not suffix:  # the selected weights against the best of their earlier evaluations
            metric = monitor.metric
            values.update(monitor.best.compare_and_keep(latest_influences(metric)))
            values.update(monitor.ages.summarize(metric.last_neighbor_steps, monitor.step))
    return values
