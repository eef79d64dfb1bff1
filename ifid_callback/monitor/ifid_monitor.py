"""IFIDMonitor: iFID/rFID during VAE training, assembled from the parts in this package.

The parts, one job each: :mod:`.collect` fills the latent bank from training steps
(:mod:`.subsample` re-encodes part of a batch for it), :mod:`.schedule` decides when to refresh
the index and evaluate, :mod:`.index_keeper` rebuilds the index when it does not fit,
:mod:`.eval_set` holds the fixed evaluation images, :mod:`.weights` says which weights an
evaluation measures (training, EMA, averaged), :mod:`.placement` keeps the metric on the VAE's
device, :mod:`.evaluation` runs one evaluation, :mod:`.results` keeps the results,
:mod:`.evaluation_round` evaluates every set of weights of one evaluation,
:mod:`.persistence` checkpoints them all, :mod:`.metric_setup` builds the metric,
:mod:`.grid_columns` makes the grid's images.

Latents reach the bank in one of three ways (``latent_source``):

* ``"outputs"``: what the training step already computed, passed as ``observe(latents=...)``
  or read from ``observe(outputs=...)[outputs_key]`` (a dict or an object attribute), or from
  the model's forward output once :meth:`IFIDMonitor.attach` hooked the model. Free.
* ``"hook"``: a forward hook on ``encoder_module`` (default: found from the VAE, see
  :func:`~ifid_callback.diffusers_vae.latent_hook_point`) collects its output during
  training forwards; ``hook_transform`` maps the output to latents. Free.
* ``"encode"``: a fraction ``encode_fraction`` of each training batch
  (``observe(images=...)``, or captured by :meth:`IFIDMonitor.attach`) is re-encoded under no_grad with
  the VAE in eval mode. Costs one partial encoder pass per step.

Staleness: the bank holds the latents of the last ``bank_capacity`` training images, computed
by the encoder as it was then. ``exact_bank=True`` also keeps those images and re-encodes them
with the evaluated weights at each index refresh (memory: one image per bank row).

Averaged weights (EMA, SWA): ``eval_vae`` names the weights the results measure (e.g. an
``ema_pytorch.EMA`` or ``torch.optim.swa_utils.AveragedModel`` of the VAE); ``extra_vaes``
adds more weights to the same evaluation under suffixed keys (``{"ema": ema}`` gives
``ifid_ema``, ``rfid_ema``, ...), sharing the cached real statistics and the feature network.
The bank keeps the training step's latents either way, so an averaged encoder's queries are
matched against neighbours encoded by the training encoder of the last ``bank_capacity``
images; ``exact_bank=True`` re-encodes those images with each evaluated encoder instead.

Distributed (torch.distributed initialised): each rank keeps its own bank; at refresh the
banks are gathered (a collective: every rank must call :meth:`IFIDMonitor.refresh_index`,
:meth:`IFIDMonitor.evaluate` and :meth:`IFIDMonitor.maybe_evaluate` at the same steps); an
evaluation gives each rank every ``world_size``-th evaluation image and the metric states are
summed across ranks, so every rank returns the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.distributed import world_and_rank
from ifid_callback.monitor.best import BestEvaluation
from ifid_callback.monitor.collect import LATENT_SOURCES, LatentCollector
from ifid_callback.monitor.eval_set import EvalImages
from ifid_callback.monitor.evaluation import Evaluator
from ifid_callback.monitor.evaluation_round import evaluate_weights
from ifid_callback.monitor.freshness import NeighborAges
from ifid_callback.monitor.grid_columns import monitor_grid
from ifid_callback.monitor.index_keeper import IndexKeeper
from ifid_callback.monitor.metric_setup import build_metric, check_extra_vaes, check_metric_options
from ifid_callback.monitor.persistence import load_monitor_state, monitor_state
from ifid_callback.monitor.placement import Placement
from ifid_callback.monitor.results import BOOKKEEPING_KEYS, ResultHistory
from ifid_callback.monitor.schedule import Schedule, check_positive
from ifid_callback.monitor.subsample import SubsampleEncoder
from ifid_callback.monitor.weights import WeightsSource, weights_by_suffix
from ifid_callback.vae import VAEAdapter

__all__ = ["BOOKKEEPING_KEYS", "LATENT_SOURCES", "IFIDMonitor"]


class IFIDMonitor:
    """Keeps a rolling bank of training latents and evaluates iFID/rFID on a fixed image set.

    Between evaluations the monitor only inserts latents into a :class:`LatentBank` (and, every
    ``refresh_every_n_steps`` steps, rebuilds the neighbour index from it); an evaluation encodes
    the fixed evaluation set, finds each latent's nearest neighbour in the bank, decodes
    interpolants and reconstructions and returns every number the metric computes (``"ifid"``,
    ``"rfid"``, ...). Real-image statistics
    of the evaluation set are computed on the first evaluation and cached (also in
    :meth:`state_dict`). Framework adapters (``ifid_callback.integrations``) only translate hooks,
    logging and checkpointing to the calls below.

    How latents reach the bank (``latent_source``), how stale it may be, averaged weights and
    distributed runs: see the module documentation (``help(ifid_callback.monitor.ifid_monitor)``).

    Args:
        vae: object with ``encode``/``decode`` (e.g. ``diffusers.AutoencoderKL``,
            :class:`~ifid_callback.tiny_vae.TinyVAE`); fp16/bf16 VAEs get float32 images in and
            out. Or None with ``encoder``/``decoder``.
        encoder: callable images -> latents or posterior (overrides ``vae.encode``).
        decoder: callable latents -> images (overrides ``vae.decode``).
        eval_images: the evaluation images, a (N, C, H, W) tensor in ``input_range`` or a
            Dataset whose items are images or (image, ...) tuples or dicts with ``pixel_values``.
            Use held-out images: an evaluation image whose latent is in the bank is its own
            nearest neighbour. Checked at construction with one encode/decode round trip (channels,
            channels-last, size the VAE reproduces) and against the first training latents
            (evaluation images of another size than the training images are refused).
        num_eval_images: how many of them to use, chosen once with ``seed`` (default: all).
            At least 2; fewer than the feature dimension gives a rank-deficient covariance and a
            warning (the standard Inception features are 2048-d).
        eval_batch_size: images per encode/decode/feature call during evaluation.
        bank_capacity: rows kept in the bank (the last ``bank_capacity`` training latents).
        bank_dtype: bank storage, ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        bank_device: where the bank lives and is searched (default: the VAE's device).
        refresh_every_n_steps: rebuild the neighbour index every this many steps (amortises
            approximate-index builds and exact-bank re-encoding). None (default): rebuild at each
            evaluation, so every evaluation searches the current bank.
        eval_every_n_steps: :meth:`maybe_evaluate` evaluates when this many steps passed since the
            last evaluation. None: only on request (framework adapters evaluate at each of their
            validation/evaluation phases).
        latent_source: ``"outputs"``, ``"hook"`` or ``"encode"`` (see the module documentation).
        outputs_key: key (or attribute) of the training step's outputs that holds the latents.
        encoder_module: module hooked for ``latent_source="hook"``.
        hook_transform: maps the hooked module's output to latents (default: the output itself,
            or the posterior mean of a moments tensor for VAEs found automatically).
        encode_fraction: fraction in (0, 1] of each batch re-encoded for ``"encode"``.
        exact_bank: keep the bank's source images and re-encode them at each index refresh.
        feature: ``"inception"``, ``"dinov2"`` (FD_DINOv2, local weights), an ``nn.Module``
            mapping images to (B, d) features, or a tuple of them (``("inception", "dinov2")``
            also logs ``ifid_dinov2``, ``rfid_dinov2``), as in
            :class:`~ifid_callback.metric.InterpolatedFID`.
        interpolation, alpha, k, pick, index, distance, sample_posterior, search_norm,
            preprocessing: as in :class:`~ifid_callback.metric.InterpolatedFID`. With
            ``sample_posterior=True`` the bank should hold posterior samples as well (log
            ``posterior.sample()``, or ``exact_bank=True``, which re-encodes with samples); the
            metric warns when the bank's latents are on another scale than the queries'.
        input_range: (low, high) value range of the images.
        seed: seeds the evaluation subset, the metric's random choices and the subsampling.
        grid_rows: rows (evaluation images) in :meth:`render_grid`.
        eval_vae: the weights whose numbers :meth:`evaluate` returns under the plain keys: a VAE,
            an ``AveragedModel``/``ema_pytorch.EMA`` of the VAE or of a model with a ``vae``
            attribute, or a callable with no arguments returning one (looked up at each
            evaluation). Default: the training VAE.
        extra_vaes: more weights of the same kinds, evaluated in the same evaluation, their
            metrics suffixed with ``_<name>`` (e.g. ``{"ema": ema}``, or ``{"raw": vae}`` next to
            ``eval_vae=ema``).
        device: where the metric runs (default: the VAE's device, followed when it moves).
        metric_options: the metric's extras, logged with the other keys:
            ``{"uncertainty": ..., "reconstruction_metrics": ..., "kid": ...,
            "precision_recall": ..., "lpips": ...}`` (see
            :class:`~ifid_callback.metric.InterpolatedFID`; default: standard errors and
            PSNR/SSIM/MSE on, KID, precision/recall and LPIPS off; ``"lpips"`` takes a module).
            Companion predictors from the same encode, off by default: ``"latent_spectrum"``
            logs ``latent_hf_energy``, ``"equivariance"`` logs ``equivariance_error``.
        real_stats_cache: keep the evaluation images' real statistics on disk
            (:mod:`~ifid_callback.stats_cache`): a directory, a ``StatsCache``, True (the
            per-user default directory) or None (default: off). A new run on the same images
            with the same feature network and settings skips their feature pass at its first
            evaluation too. Under DDP rank 0 reads and writes the files.
        max_neighbor_age: warn once when the median age (evaluation step minus the step the
            row entered the bank) of the neighbours an evaluation used exceeds this many steps
            (default None: never). The ages are reported either way
            (``neighbor_age_median``, ``neighbor_age_p90``).

    Example:
        >>> monitor = IFIDMonitor(vae, eval_images=val_images, eval_every_n_steps=1000)  # doctest: +SKIP
        >>> for step, batch in enumerate(loader, 1):                                     # doctest: +SKIP
        ...     out = vae_loss(batch); out["loss"].backward(); opt.step()
        ...     monitor.observe(latents=out["latents"], step=step)
        ...     if (metrics := monitor.maybe_evaluate(step)) is not None:
        ...         print(metrics["ifid"], metrics["rfid"])
    """

    def __init__(
        self,
        vae: Any = None,
        encoder: Callable[[Tensor], Any] | None = None,
        decoder: Callable[[Tensor], Any] | None = None,
        *,
        eval_images: Tensor | torch.utils.data.Dataset,
        num_eval_images: int | None = None,
        eval_batch_size: int = 32,
        bank_capacity: int = 10_000,
        bank_dtype: str = "fp32",
        bank_device: torch.device | str | None = None,
        refresh_every_n_steps: int | None = None,
        eval_every_n_steps: int | None = None,
        latent_source: str = "outputs",
        outputs_key: str = "latents",
        encoder_module: nn.Module | None = None,
        hook_transform: Callable[[Any], Tensor] | None = None,
        encode_fraction: float = 0.25,
        exact_bank: bool = False,
        feature: str | nn.Module | tuple = "inception",
        interpolation: str = "slerp",
        alpha: float = 0.5,
        k: int = 1,
        pick: str = "uniform",
        index: str = "auto",
        distance: str | None = None,
        sample_posterior: bool = False,
        search_norm: str | None = None,
        preprocessing: str | None = None,
        input_range: tuple[float, float] = (-1.0, 1.0),
        seed: int = 0,
        grid_rows: int = 8,
        device: torch.device | str | None = None,
        eval_vae: Any = None,
        extra_vaes: Mapping[str, Any] | None = None,
        metric_options: Mapping[str, Any] | None = None,
        real_stats_cache: Any = None,
        max_neighbor_age: int | None = None,
    ) -> None:
        self.schedule = Schedule(refresh_every_n_steps, eval_every_n_steps)
        check_positive(
            bank_capacity=bank_capacity, eval_batch_size=eval_batch_size, grid_rows=grid_rows
        )
        pinned = torch.device(bank_device) if bank_device is not None else None
        self.collector = LatentCollector(
            latent_source=latent_source,
            outputs_key=outputs_key,
            encoder_module=encoder_module,
            hook_transform=hook_transform,
            encode_fraction=encode_fraction,
            exact_bank=exact_bank,
            capacity=bank_capacity,
            dtype=bank_dtype,
            device=pinned,
            vae=vae,
        )
        metric_options = check_metric_options(metric_options)
        extra_vaes = check_extra_vaes(extra_vaes)
        settings = dict(feature=feature, interpolation=interpolation, alpha=alpha, k=k, pick=pick)
        settings.update(index=index, distance=distance, input_range=input_range, seed=seed)
        settings.update(sample_posterior=sample_posterior, search_norm=search_norm)
        settings["preprocessing"] = preprocessing
        self.metric = build_metric(vae, encoder, decoder, settings, metric_options)
        self.metric.bank = self.collector.bank
        self.vae = vae
        self.input_range = self.metric.input_range
        self.seed = int(seed)
        self.eval_batch_size = eval_batch_size
        self.grid_rows = grid_rows
        self.placement = Placement(
            self.metric, self.collector, torch.device(device) if device is not None else None
        )
        self.eval_set = EvalImages(
            eval_images,
            num_eval_images,
            seed=self.seed,
            input_range=self.input_range,
            tolerance=self.metric.range_tolerance,
            batch_size=eval_batch_size,
            num_features=self.metric.num_features,
        )
        self.evaluator = Evaluator(
            self.metric, self.eval_set, self.collector.quiet, stats_cache=real_stats_cache
        )
        self.weights = weights_by_suffix(eval_vae, extra_vaes, sample_posterior)
        self.results = ResultHistory()
        self.best = BestEvaluation()
        self.ages = NeighborAges(max_neighbor_age)
        self.index = IndexKeeper(
            self.evaluator, self.placement, self.schedule, self.seed, eval_batch_size
        )
        self._subsample = SubsampleEncoder(self.collector, self.evaluator, self.schedule, self.seed)
        # What the VAE makes of the evaluation images, checked now rather than at the first
        # evaluation (thousands of steps later).
        self.evaluator.check_vae(self.placement.vae_device())

    # ------------------------------------------------------------------ read-only views
    bank = property(lambda self: self.collector.bank, doc="The :class:`LatentBank` of latents.")
    latent_source = property(lambda self: self.collector.latent_source)
    outputs_key = property(lambda self: self.collector.outputs_key)
    exact_bank = property(lambda self: self.collector.exact_bank)
    encode_fraction = property(lambda self: self.collector.encode_fraction)
    bank_capacity = property(lambda self: self.collector.capacity)
    num_eval_images = property(lambda self: self.eval_set.num)
    refresh_every_n_steps = property(lambda self: self.schedule.refresh_every_n_steps)
    eval_every_n_steps = property(lambda self: self.schedule.eval_every_n_steps)
    steps_observed = property(lambda self: self.schedule.steps_observed)
    last_refresh_step = property(lambda self: self.schedule.last_refresh_step)
    last_eval_step = property(lambda self: self.schedule.last_eval_step)

    @property
    def step(self) -> int:
        """The last global step observed or evaluated at."""
        return self.schedule.step

    @step.setter
    def step(self, value: int) -> None:
        self.schedule.step = int(value)

    @property
    def history(self) -> list[dict[str, float]]:
        """Every evaluation's results, oldest first (the list itself; see :meth:`evaluate`)."""
        return self.results.entries

    @property
    def device(self) -> torch.device | None:
        """The device given to the constructor or :meth:`to`; None follows the VAE."""
        return self.placement.device

    @device.setter
    def device(self, value: torch.device | str | None) -> None:
        self.placement.device = torch.device(value) if value is not None else None

    # ------------------------------------------------------------------ placement
    def to(self, device: torch.device | str) -> IFIDMonitor:
        """Run the metric (and keep the bank, unless ``bank_device`` was given) on ``device``."""
        self.placement.device = torch.device(device)
        self.placement.place()
        return self

    # ------------------------------------------------------------------ training steps
    def attach(self, model: nn.Module | None = None) -> None:
        """Register forward hooks that collect latents (or images) during training forwards.

        * ``latent_source="hook"``: hooks ``encoder_module`` (or the module found in the VAE).
        * ``"outputs"``: hooks ``model`` and reads ``outputs_key`` from its forward output.
        * ``"encode"``: hooks ``model`` before its forward and keeps the images it receives
          (keyword ``pixel_values``/``images``/``image``/``x`` or the first tensor argument).

        Hooks only collect while the hooked module is in training mode and the monitor is not
        itself running the VAE; :meth:`observe` consumes what they collected. Call
        :meth:`detach` to remove them.
        """
        self.collector.attach(model)

    def detach(self) -> None:
        """Remove the hooks registered by :meth:`attach` and drop anything they collected."""
        self.collector.detach()

    def observe(
        self,
        latents: Tensor | None = None,
        images: Tensor | None = None,
        outputs: Any = None,
        *,
        step: int | None = None,
    ) -> int:
        """Record one training step: insert its latents into the bank; refresh the index if due.

        Args:
            latents: (B, ...) latents of the step's images (any ``latent_source``; detached here).
            images: (B, C, H, W) images of the step, for ``latent_source="encode"`` and for
                ``exact_bank`` (then aligned with ``latents``).
            outputs: the training step's outputs; ``latents = outputs[outputs_key]``.
            step: the global (optimizer) step; default: one more than the last observed.

        Returns:
            The number of latents inserted.

        Raises:
            KeyError: ``outputs`` lacks ``outputs_key`` (the message lists the keys it has).
            ValueError: nothing to insert (no latents given, none collected by the hooks), or
                ``exact_bank`` without the matching images.
        """
        latents, images = self.collector.gather(
            latents,
            images,
            outputs,
            self._subsample,
            self.eval_set.check_training_latents,
        )
        self.collector.insert(latents, images, self.schedule.next_step(step))
        self.metric.bank = self.collector.bank
        self.schedule.observed(step)
        if self.schedule.refresh_due():
            self.refresh_index()
        return int(latents.shape[0])

    # ------------------------------------------------------------------ index
    def refresh_index(self) -> int:
        """Rebuild the neighbour index from the bank (of all ranks); returns its number of rows.

        With ``exact_bank`` the bank's source images are re-encoded with the evaluated weights
        (``eval_vae``, default the training VAE) first. Collective under torch.distributed.
        """
        return self.index.refresh(self._adapter(""))

    def _adapter(self, suffix: str) -> VAEAdapter | None:
        source = self.weights[suffix]
        adapter = source.adapter() if source is not None else None
        self.placement.check(adapter, "eval_vae" if not suffix else f"extra_vaes[{suffix[1:]!r}]")
        return adapter

    # ------------------------------------------------------------------ evaluation
    def due(self, step: int | None = None) -> bool:
        """Whether :meth:`maybe_evaluate` would evaluate at ``step`` (default: the last step)."""
        return self.schedule.eval_due(step)

    def maybe_evaluate(self, step: int | None = None) -> dict[str, float] | None:
        """Evaluate when ``eval_every_n_steps`` steps have passed since the last evaluation.

        Returns:
            The metrics of :meth:`evaluate`, or None when no evaluation was due.
        """
        if self.eval_every_n_steps is None:
            raise ValueError(
                "maybe_evaluate() needs eval_every_n_steps=<int>; or call evaluate() yourself."
            )
        if not self.due(step):
            return None
        return self.evaluate(step)

    def evaluate(self, step: int | None = None) -> dict[str, float]:
        """Compute iFID and rFID (and every other number the metric gives) on the evaluation set.

        Runs under no_grad with the VAE's modules in eval mode (their modes are restored after).
        The index is rebuilt first when ``refresh_every_n_steps`` is None or it was never built
        (with ``exact_bank``: also for each other set of weights evaluated). Collective under
        torch.distributed (every rank must call it; each processes its share).

        Args:
            step: the current global step (default: the last observed step).

        Returns:
            The metric's numbers as floats (``"ifid"``, ``"rfid"``, ...; lower is better), those
            of ``extra_vaes`` with their suffix (``"ifid_ema"``, ...), and the bookkeeping entries
            ``"step"``, ``"bank_size"`` (rows searched, all ranks) and ``"num_eval_images"``;
            ``"neighbor_age_median"`` and ``"neighbor_age_p90"``: how many steps before ``step``
            the neighbours used entered the bank (:mod:`~ifid_callback.monitor.freshness`).
            From the second evaluation on (with the standard errors on): ``"ifid_vs_best"``,
            this iFID minus the lowest earlier one (negative: an improvement), and
            ``"ifid_vs_best_std"``, its paired standard error over the shared evaluation images
            (:mod:`~ifid_callback.monitor.best`).

        Raises:
            ValueError: the bank is empty (no training step observed yet).
        """
        adapters = {suffix: self._adapter(suffix) for suffix in self.weights}  # checked first
        if step is not None:
            self.step = int(step)
        values = evaluate_weights(self, adapters)
        rows, images = self.index.rows, self.num_eval_images
        result = self.results.record(values, step=self.step, bank_size=rows, num_eval_images=images)
        self.schedule.last_eval_step = int(self.step)
        return result

    def measure(self, vae: Any = None) -> dict[str, float]:
        """The metric's numbers for one set of weights as they are now, without recording an
        evaluation (no history entry; the index is rebuilt as :meth:`evaluate` would).

        For weights that are only in place for a moment (a framework swapping averaged weights
        in and out); :meth:`evaluate` is the usual call. Collective under torch.distributed.

        Args:
            vae: the weights, of any kind ``eval_vae`` takes; default: the training VAE.
        """
        world, rank = world_and_rank()
        source = WeightsSource(vae, self.metric.vae.sample_posterior) if vae is not None else None
        adapter = source.adapter() if source is not None else None
        self.placement.check(adapter, "the weights given to measure()")
        self.index.prepare_measure(adapter, world)
        return self.evaluator.run(adapter, rank, world, self.placement.place())

    @property
    def last_result(self) -> dict[str, float] | None:
        """The metrics of the latest evaluation, or None before the first."""
        return self.results.last

    # ------------------------------------------------------------------ looking at it
    def render_grid(self, num_rows: int | None = None, labels: bool = True) -> Tensor:
        """Rows of x | NN(x) | interpolant | reconstruction for the first evaluation images.

        NN(x) is the decoded nearest bank latent; the weights are ``eval_vae``'s. Uses the
        current index (built if missing; collective under torch.distributed only in that case).

        Args:
            num_rows: rows (default ``grid_rows``).
            labels: write the column titles above the columns (see :func:`image_grid`).

        Returns:
            (3, H', W') float32 tensor in [0, 1] (see :func:`ifid_callback.grid.image_grid`).
        """
        return monitor_grid(self, num_rows or self.grid_rows, labels)

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Bank, counters, cached real statistics, history and the best evaluation's per-image
        influences (for ``ifid_vs_best``), as plain types and CPU tensors.

        The random state is the counters: every random choice is keyed by the seed and a
        position, an id or ``steps_observed``, so a restored monitor draws what an uninterrupted
        one would.

        No collectives: under DDP each rank returns its own bank (frameworks save rank 0's).
        """
        return monitor_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; missing entries keep their defaults.

        A bank saved with another capacity keeps its newest rows. Cached real statistics are
        dropped (with a warning) when the evaluation set differs from the saved one. The index is
        rebuilt at the next refresh or evaluation.
        """
        load_monitor_state(self, state)

    def __repr__(self) -> str:
        return (
            f"IFIDMonitor(latent_source={self.latent_source!r}, bank={len(self.bank)}/"
            f"{self.bank_capacity}, eval_images={self.num_eval_images}, step={self.step}, "
            f"evaluations={len(self.history)})"
        )
