"""Re-encoding a seeded fraction of each training batch, for ``latent_source="encode"``."""

from __future__ import annotations

import torch
from torch import Tensor

from ifid_callback.distributed import world_and_rank
from ifid_callback.monitor.collect import LatentCollector
from ifid_callback.monitor.evaluation import Evaluator
from ifid_callback.monitor.schedule import Schedule
from ifid_callback.randomness import keyed_generators

__all__ = ["SubsampleEncoder"]


class SubsampleEncoder:
    """Picks ``encode_fraction`` of a batch and encodes it with the training VAE, no_grad.

    The pick and the posterior samples are keyed by (seed, observe() call, rank): the call
    counter is checkpointed, so a resumed run picks and samples exactly as an uninterrupted one.

    Args:
        collector: says how many images of a batch to take.
        evaluator: runs the training VAE in eval mode with the hooks quiet.
        schedule: counts the observe() calls.
        seed: the monitor's seed.
    """

    def __init__(
        self, collector: LatentCollector, evaluator: Evaluator, schedule: Schedule, seed: int
    ) -> None:
        self.collector = collector
        self.evaluator = evaluator
        self.schedule = schedule
        self.seed = seed

    def __call__(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(latents, images)`` of the picked images of a (B, C, H, W) batch (order kept)."""
        _, rank = world_and_rank()
        key = self.schedule.steps_observed * 65536 + rank
        (generator,) = keyed_generators(self.seed, [key], "subsample")
        batch = images.shape[0]
        n = self.collector.subsample_size(batch)
        if n < batch:
            pick = torch.randperm(batch, generator=generator)[:n].sort().values
            images = images[pick.to(images.device)]
        with self.evaluator.using(None) as vae:
            latents = vae.encode(images, generator=generator)
        return latents, images
