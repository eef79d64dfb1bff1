"""Where the monitor runs: it follows the VAE's device, and evaluated weights must be there too."""

from __future__ import annotations

import torch

from ifid_callback.metric import InterpolatedFID
from ifid_callback.monitor.collect import LatentCollector
from ifid_callback.vae import VAEAdapter

__all__ = ["Placement"]


class Placement:
    """Keeps the metric (and the bank, unless pinned) on the device the monitor evaluates on.

    Args:
        metric: the monitor's metric (its VAE gives the device to follow).
        collector: the owner of the bank.
        device: a fixed device (``IFIDMonitor(device=...)`` or ``.to()``); None follows the VAE.
    """

    def __init__(
        self, metric: InterpolatedFID, collector: LatentCollector, device: torch.device | None
    ) -> None:
        self.metric = metric
        self.collector = collector
        self.device = device

    def vae_device(self) -> torch.device:
        """The device evaluations run on: the fixed one, else the training VAE's (else CPU)."""
        return self.device or self.metric.vae.device() or torch.device("cpu")

    def place(self) -> torch.device:
        """Follow the VAE's device: move the metric (and the bank, unless pinned) there."""
        device = self.vae_device()
        if self.metric.device != device:
            self.metric.to(device)
        self.collector.follow(device)
        self.metric.bank = self.collector.bank
        return device

    def check(self, adapter: VAEAdapter | None, name: str) -> None:
        """Refuse weights (``name`` in the message) that are not on the evaluation device."""
        there, here = (adapter.device() if adapter else None), self.vae_device()
        if there is not None and there != here:
            raise ValueError(
                f"The weights of {name} are on {there} but the monitor evaluates on {here} (the "
                "training VAE's device): keep the averaged copy on the training device "
                "(AveragedModel(model) without device=, ema_pytorch.EMA's default)."
            )
