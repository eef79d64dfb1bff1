"""The monitor's neighbour index: when it must be rebuilt, and rebuilding it from the bank."""

from __future__ import annotations

import torch
from torch import Tensor

from ifid_callback.distributed import all_reduce_int, world_and_rank
from ifid_callback.monitor.evaluation import Evaluator
from ifid_callback.monitor.placement import Placement
from ifid_callback.monitor.schedule import Schedule
from ifid_callback.randomness import keyed_generators
from ifid_callback.vae import VAEAdapter

__all__ = ["IndexKeeper"]


class IndexKeeper:
    """Rebuilds the metric's index from the bank of all ranks and remembers what it was built from.

    With ``exact_bank`` the bank's source images are re-encoded with the weights being evaluated
    before each build, so the index also depends on whose encodes fill the bank.

    Args:
        evaluator: runs a VAE in eval mode with the hooks quiet (for re-encoding); its metric
            gathers the banks and builds the index, its evaluation images' latent shape is
            checked against the bank's.
        placement: moves the metric and the bank (its collector's) to the evaluation device.
        schedule: the step counters (a build records its step).
        seed: seeds the posterior samples of re-encoded rows.
        batch_size: images per re-encoding call.

    Attributes:
        rows: rows searched by the last build, all ranks together.
        world: the world size at the last build.
        ready: an index was built for the bank now held.
        encoder: the weights whose encodes fill an exact bank (None: the training VAE).
    """

    def __init__(
        self,
        evaluator: Evaluator,
        placement: Placement,
        schedule: Schedule,
        seed: int,
        batch_size: int,
    ) -> None:
        self.metric = evaluator.metric
        self.collector = placement.collector
        self.eval_set = evaluator.eval_set
        self.evaluator = evaluator
        self.place = placement.place
        self.schedule = schedule
        self.seed = seed
        self.batch_size = batch_size
        self.rows = 0
        self.world = 1
        self.ready = False
        self.encoder: VAEAdapter | None = None

    def invalidate(self) -> None:
        """Forget the index (a restored bank): the next evaluation or refresh rebuilds it."""
        self.ready = False
        self.encoder = None

    # ------------------------------------------------------------------ when to rebuild
    def _encoded_by_other(self, adapter: VAEAdapter | None) -> bool:
        return self.collector.exact_bank and self.encoder is not adapter

    def prepare_evaluation(self, adapter: VAEAdapter | None, first: bool, world: int) -> None:
        """Rebuild before evaluating ``adapter``'s weights when the index does not fit them.

        The first weights of an evaluation rebuild when no schedule refreshes the index, none was
        built, or the world size changed; any weights rebuild an exact bank that other weights
        encoded.
        """
        stale = first and (
            self.schedule.refresh_every_n_steps is None or not self.ready or self.world != world
        )
        if stale or self._encoded_by_other(adapter):
            self.refresh(adapter)

    def prepare_measure(self, adapter: VAEAdapter | None, world: int) -> None:
        """Rebuild as an evaluation would; an exact bank is re-encoded every time (the same VAE
        object may hold other weights than at the last refresh)."""
        if (
            self.schedule.refresh_every_n_steps is None
            or self.collector.exact_bank
            or not self.ready
            or self.world != world
        ):
            self.refresh(adapter)

    def prepare_grid(self, adapter: VAEAdapter | None) -> None:
        """Build when missing (or when an exact bank holds other weights' encodes)."""
        if not self.ready or self._encoded_by_other(adapter):
            self.refresh(adapter)

    # ------------------------------------------------------------------ rebuilding
    def refresh(self, adapter: VAEAdapter | None) -> int:
        """Rebuild the index from the bank of all ranks (collective); returns its rows.

        Args:
            adapter: the weights that re-encode an exact bank (None: the training VAE).

        Raises:
            ValueError: the bank is empty (on any rank).
        """
        world, _ = world_and_rank()
        bank = self.collector.bank
        local = len(bank)
        smallest = all_reduce_int(local, "min") if world > 1 else local
        if smallest == 0:
            where = "" if world == 1 else " on at least one rank"
            raise ValueError(
                f"The latent bank is empty{where}: iFID needs training latents to find neighbours "
                "in. Call observe() on training steps before the first evaluation (with Lightning "
                "the callback does it on every training batch), or evaluate later."
            )
        if bank.latent_shape is not None:
            self.eval_set.check_training_latents(tuple(bank.latent_shape))
        device = self.place()
        if self.collector.sources is not None:
            self._reencode(adapter, device)
        # The metric gathers the banks of all ranks (rows restored from one checkpoint on every
        # rank count once) and keeps no copy of the bank beside a compressed index.
        self.metric.bank = self.collector.bank
        rows = self.metric.refresh_index()
        self.schedule.last_refresh_step = self.schedule.step
        self.rows = int(rows)
        self.world = world
        self.ready = True
        return self.rows

    def _reencode(self, adapter: VAEAdapter | None, device: torch.device) -> None:
        """Refill an exact bank with ``adapter``'s encodes of its source images."""
        with self.evaluator.using(adapter) as vae:

            def encode(chunk: Tensor, ids: Tensor) -> Tensor:
                # A row's posterior sample depends on its id only (not on when it is re-encoded).
                gens = (
                    keyed_generators(self.seed, ids, "reference") if vae.sample_posterior else None
                )
                return vae.encode(chunk, generator=gens)

            self.collector.refill(encode, self.batch_size, device, step=self.schedule.step)
        self.metric.bank = self.collector.bank
        self.encoder = adapter
