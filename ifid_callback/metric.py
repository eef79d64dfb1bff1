"""The InterpolatedFID metric: iFID and rFID of a VAE from one pass over the query images.

The class is the torchmetrics face of small parts: :mod:`~ifid_callback.settings` (options),
:mod:`~ifid_callback.reference` (the rows neighbours come from), :mod:`~ifid_callback.
interpolation_pass` (encode, neighbours, interpolate, decode, features),
:mod:`~ifid_callback.fid_state` (FID sums and per-image rows) and :mod:`~ifid_callback.extras`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from ifid_callback import batch_terms, fid_state
from ifid_callback import interpolation_pass as step
from ifid_callback.bank import LatentBank
from ifid_callback.distributed import world_and_rank
from ifid_callback.extras import build_extras
from ifid_callback.extras import uncertainty as per_image
from ifid_callback.feature_share import apply_keeping_shared
from ifid_callback.features import resolve_feature, resolve_spaces, split_features
from ifid_callback.image_checks import (
    as_ids,
    check_images,
    warn_if_only_upper_half,
)
from ifid_callback.index import NeighborIndex
from ifid_callback.metric_networks import (
    DeviceMove,
    drop_network_keys,
    feature_dimension,
    ignore_missing_network_keys,
)
from ifid_callback.network_cache import check_shared_network, is_network_cache
from ifid_callback.randomness import keyed_generators
from ifid_callback.reference import Reference
from ifid_callback.self_reference import search_own_queries
from ifid_callback.settings import (
    DEFAULTS,
    PRESETS,
    SEARCH_NORMS,
    check_options,
    describe,
    resolve_settings,
)
from ifid_callback.vae import VAEAdapter

__all__ = ["DEFAULTS", "PRESETS", "SEARCH_NORMS", "InterpolatedFID", "resolve_settings"]


class InterpolatedFID(Metric):
    r"""Interpolated FID (iFID) and reconstruction FID (rFID) of a VAE.

    For each query image :math:`x` with latent :math:`z = E(x)`, the metric finds the nearest
    neighbour :math:`n` of :math:`z` in a reference bank (never :math:`z` itself), decodes
    :math:`\hat z = \mathrm{interp}(z, n; \alpha)` and computes the FID between the real query
    images and these interpolants (iFID), and between the real images and the reconstructions
    :math:`D(z)`, decoded in the same call (rFID). States are float64 feature sums (``"sum"``,
    exact under DDP, constant memory; each rank does its own queries); the per-image extras also
    keep each query's float32 feature rows until ``reset()`` (3 x N x d x 4 bytes).

    Copies are independent: ``clone()``, ``deepcopy``, ``pickle`` and ``torch.save`` copy the bank,
    the index and the rows it points into together. ``.to(dtype)``, ``.half()``, ``.double()`` and
    ``set_dtype`` only move the metric between devices: the states keep their dtypes (float64
    sums) and the networks (feature network, shared or not, and LPIPS) keep their precision (set
    Inception's with ``InceptionFeatures(precision=...)``). Networks are not in ``state_dict``.

    Args:
        encoder, decoder: callables images (B, C, H, W) -> latents or a posterior, latents ->
            images in ``input_range`` (see :class:`~ifid_callback.vae.VAEAdapter`).
        vae: instead, an object with ``encode``/``decode`` (``diffusers.AutoencoderKL``, ...).
        feature: ``"inception"`` (the standard FID Inception-v3 pool3, 2048-d, offline weights,
            one per process and device: :mod:`~ifid_callback.feature_share`), ``"dinov2"``
            (FD_DINOv2: EDM2's DINOv2 features, ViT-B/14; ``"dinov2-vitl14"``, ... other
            sizes; local weights only, :mod:`~ifid_callback.dinov2`), or an ``nn.Module``
            mapping images in ``input_range`` to (B, d). Inside torchmetrics' ``FeatureShare``,
            a network that takes another input range is refused. A tuple, e.g.
            ``("inception", "dinov2")``: the first gives ``ifid``/``rfid`` (and the extras),
            each other ``ifid_<space>``/``rfid_<space>`` (``ifid_dinov2``), from the same
            encode and decode, each network once per image.
        interpolation, alpha: ``"slerp"`` (default), ``"linear"`` or ``"mask"``; weight in
            [0, 1] (default 0.5; 0 gives iFID == rFID).
        k, pick: neighbours to pick one from (default 1) and how: ``"uniform"``,
            ``"softmax_mse"`` (the official rule: softmax(-MSE) on the raw latents) or
            ``"softmax_distance"``; seeded per query.
        search_norm: ``None`` (raw latents) or ``"bn_channel"``: search and pick weights on
            latents standardised per channel with the indexed rows' statistics.
        preprocessing: how decodes reach ``"inception"``: ``"standard"`` (default; clamped to
            ``input_range``, uint8 levels, TF1 resize: torch-fidelity's) or ``"official"`` (the
            authors' ``evalvae.py``: unclamped floats, bilinear 299, ``2x - 1``). PSNR/SSIM/MSE
            and LPIPS score clamped reconstructions in both.
        bank: a :class:`LatentBank`, or None: the queries are their own reference (self
            excluded, and with it every pixel-identical copy of the query; their count is
            ``last_duplicate_queries`` after compute()). Under DDP the banks of all ranks are gathered at each index refresh (a
            collective; a row repeated under one id counts once).
        index: ``"auto"``, ``"exact"``, a faiss kind or factory string (:class:`NeighborIndex`).
        distance: ``"cosine"`` (default for slerp/mask) or ``"sqeuclidean"`` (for linear).
        compute_rfid: also rFID (one decode of 2B latents instead of B).
        input_range: (low, high) of the images; decodes are clamped to it.
        sample_posterior: a posterior sample instead of its mean (default False).
        preset: ``"paper"``: the official protocol (posterior sample, k=10, softmax_mse, slerp
            0.5, ``"official"`` preprocessing); a contradicting argument is an error;
            :attr:`settings` records what runs. Fill the bank with posterior samples too.
        reset_real_features: False keeps the real statistics of the first completed round
            across ``reset()`` (later rounds must use the same query images).
        seed: seed of every random choice (posterior samples, mask, top-k pick), per query.
        range_tolerance: how far images may stray outside ``input_range``.
        auto_refresh_index: rebuild the index whenever the bank changed since it was built;
            False: call :meth:`refresh_index` yourself (a training monitor does).
        num_features: d of a custom feature module without a ``num_features`` attribute.
        uncertainty: ``"ifid_std"``, ``"rfid_std"``: sampling standard errors (FID units) from
            each query's influence (:func:`~ifid_callback.functional.frechet_influence`).
        reconstruction_metrics: ``"psnr"`` (dB; +inf for a lossless image), ``"ssim"`` (images
            >= 6 x 6), ``"mse"``: per-image means of the reconstructions, from the rFID decode.
        kid: ``"ikid"``, ``"rkid"`` (unbiased polynomial-kernel MMD) and their subset spreads.
        precision_recall: ``"iprecision"``, ``"irecall"``: k-NN (k = 3) manifold precision and
            recall of the interpolants. Needs >= 4 queries.
        lpips: ``"lpips"`` of the reconstructions: a module or callable (recon, images) ->
            (B,), or True for the standard LPIPS from local files only (never downloaded).
        latent_spectrum: ``"latent_hf_energy"``: the fraction of the query latents' energy at or
            above half the Nyquist frequency (2-D DCT per channel), from the iFID encode.
        equivariance: ``"equivariance_error"``: EQ-VAE's scale-equivariance error, the relative
            MSE of the decoded 2x-pooled query latents against the 2x-pooled images (one more
            decode, of latents a quarter the size).

    Example:
        >>> metric = InterpolatedFID(vae=vae, bank=bank)  # doctest: +SKIP
        >>> metric.update(images)                           # doctest: +SKIP
        >>> metric.compute()                                # doctest: +SKIP
        {'ifid': tensor(...), 'rfid': tensor(...)}
    """

    is_differentiable = False
    higher_is_better = False
    full_state_update = False
    plot_lower_bound = 0.0
    feature_network: str = "feature_net"  # torchmetrics' FeatureShare convention

    def __init__(
        self,
        encoder: Callable[[Tensor], Any] | None = None,
        decoder: Callable[[Tensor], Any] | None = None,
        *,
        vae: Any = None,
        feature: str | torch.nn.Module = "inception",
        interpolation: str | None = None,
        alpha: float | None = None,
        k: int | None = None,
        pick: str | None = None,
        bank: LatentBank | None = None,
        index: str = "auto",
        distance: str | None = None,
        compute_rfid: bool = True,
        input_range: tuple[float, float] = (-1.0, 1.0),
        sample_posterior: bool | None = None,
        preset: str | None = None,
        reset_real_features: bool = True,
        seed: int = 0,
        range_tolerance: float = 1e-3,
        auto_refresh_index: bool = True,
        num_features: int | None = None,
        search_norm: str | None = None,
        preprocessing: str | None = None,
        uncertainty: bool = True,
        reconstruction_metrics: bool = True,
        kid: bool = False,
        precision_recall: bool = False,
        lpips: bool | torch.nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
        latent_spectrum: bool = False,
        equivariance: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        given = dict(interpolation=interpolation, alpha=alpha, k=k, pick=pick)
        given.update(sample_posterior=sample_posterior, distance=distance, search_norm=search_norm)
        given.update(preprocessing=preprocessing)
        settings = resolve_settings(preset, **given)
        switches = dict(uncertainty=uncertainty, reconstruction_metrics=reconstruction_metrics)
        switches.update(kid=kid, precision_recall=precision_recall)
        switches.update(latent_spectrum=latent_spectrum, equivariance=equivariance)
        self.input_range = check_options(
            input_range=input_range,
            reset_real_features=reset_real_features,
            seed=seed,
            range_tolerance=range_tolerance,
            compute_rfid=compute_rfid,
            lpips=lpips,
            **switches,
        )
        # An unknown index kind is named now, not at the first update().
        NeighborIndex(index=index, distance=settings["distance"], seed=seed)
        self.vae = VAEAdapter(vae, encoder, decoder, sample_posterior=settings["sample_posterior"])
        # A preset's preprocessing applies to the networks that declare one; a plain module
        # does its own (an explicit preprocessing= must match it).
        feature, spaces = split_features(feature)
        declared = preprocessing is not None or hasattr(feature, "preprocessing")
        # A preset's preprocessing reaches "dinov2" only when the user asked for it.
        implied = isinstance(feature, str) and not feature.lower().startswith("dinov2")
        self.feature_net = resolve_feature(
            feature,
            self.input_range,
            settings["preprocessing"] if declared or implied else None,
        )
        self.preprocessing: str | None = getattr(self.feature_net, "preprocessing", None)
        # The authors' path feeds the features unclamped decodes.
        self._clamp_decodes = self.preprocessing != "official"
        self.preset, self.seed, self.index = preset, int(seed), index
        for key in ("interpolation", "alpha", "k", "pick", "search_norm", "distance"):
            setattr(self, key, settings[key])
        self.compute_rfid, self.reset_real_features = bool(compute_rfid), reset_real_features
        self.range_tolerance, self.auto_refresh_index = float(range_tolerance), auto_refresh_index
        for key, value in switches.items():
            setattr(self, key, value)
        self.reference = Reference(
            index, self.distance, self.seed, self.search_norm, self.auto_refresh_index
        )
        self.reference.bank = bank
        self.extras = build_extras(
            switches, lpips, self.input_range, self.seed, self.compute_rfid,
            resolve_spaces(spaces, self.input_range, self.feature_net),
        )  # fmt: skip
        self._per_image = any(extra.uses_rows for extra in self.extras.values())
        self._generator = torch.Generator().manual_seed(self.seed)  # only for position-less calls
        self._real_root = fid_state.RealRoot()
        self._scale_warned = False
        self._rows_cached = self._real_cached = self._round_computed = False
        self._extra_real_cached = False  # the further feature spaces' real statistics
        # (n,) int64 insertion steps of the neighbours of the last computed round (-1: unknown).
        self.last_neighbor_steps = torch.empty(0, dtype=torch.long)
        # Without a bank: queries of the last computed round that repeat an earlier one's pixels.
        self.last_duplicate_queries = 0
        self._new_round()
        self.num_features = num_features or feature_dimension(self.feature_net)
        for name, default in fid_state.sum_states(self.num_features).items():
            self.add_state(name, default, dist_reduce_fx="sum")
        # The queries' latents and pixel digests (only without a bank: searched at compute())
        # and positions.
        states = ("query_latents", "query_digests", "query_positions", "neighbor_steps")
        for name in (*states, *fid_state.ROW_STATES):
            self.add_state(name, [], dist_reduce_fx="cat")
        for extra in self.extras.values():
            for name, default in extra.states().items():
                self.add_state(name, default, dist_reduce_fx="sum")
        self._register_state_dict_hook(drop_network_keys)
        self.register_load_state_dict_post_hook(ignore_missing_network_keys)

    def _new_round(self) -> None:
        self._channels: int | None = None
        self._queries_seen = 0  # queries of this round on this process (default positions)
        self._round_low = math.inf  # the lowest pixel value of this round's images

    @property
    def lpips_net(self) -> Any:
        """The LPIPS network or callable (``lpips=``), or None when LPIPS is off."""
        return self.extras["lpips"].net if "lpips" in self.extras else None

    @property
    def settings(self) -> dict[str, Any]:
        """The settings that run (for logs, hparams and JSON reports)."""
        return describe(self)

    # ------------------------------------------------------------------ torchmetrics API
    def update(
        self, images: Tensor, ids: Tensor | None = None, positions: Tensor | None = None
    ) -> None:
        """Encode a batch of query images, interpolate with their neighbours, decode, accumulate.

        Args:
            images: (B, C, H, W) float images in ``input_range``, on the metric's device.
            ids: optional (B,) int64 ids of these images in the bank (never their own neighbour).
            positions: optional (B,) int64 global positions of these images (e.g. dataset
                indices): each query's random choices come from ``(seed, position)`` alone.
                Default: the running position, dealt across ranks as ``DistributedSampler``
                deals a dataset (rank r's j-th image is position ``j * world_size + r``).
        """
        lowest = check_images(
            images,
            input_range=self.input_range,
            tolerance=self.range_tolerance,
            channels=self._channels,
            device=self.device,
            vae_device=self.vae.device(),
        )
        batch = images.shape[0]
        ids, positions = as_ids("ids", ids, batch), as_ids("positions", positions, batch)
        if positions is None:
            world, rank = world_and_rank() if self.sync_on_compute else (1, 0)
            positions = torch.arange(self._queries_seen, self._queries_seen + batch) * world + rank
        with torch.no_grad():
            new, rows = batch_terms.update_terms(self, images, ids, positions)
        # Learned only now that the whole batch went through.
        for key, value in new.items():
            setattr(self, key, getattr(self, key) + value.to(self.device))
        for key, value in rows.items():
            getattr(self, key).append(value.detach().to(self.device))
        self._channels = images.shape[1]
        self._queries_seen += batch
        self._round_low = min(self._round_low, lowest)

    def _decode(self, z: Tensor, channels: int | None = None) -> Tensor:
        """Images decoded from ``z`` (B, ...), checked and clamped to ``input_range``."""
        channels = channels if channels is not None else self._channels
        return step.decode(self.vae, z, channels, self.input_range)

    def _generators(self, positions: Tensor, stream: str) -> list[torch.Generator] | None:
        """Per-query generators for one kind of choice, or None when that choice is not random."""
        needed = {
            "pick": self.k > 1,
            "mask": self.interpolation == "mask",
            "posterior": self.vae.sample_posterior,
        }[stream]
        return keyed_generators(self.seed, positions, stream) if needed else None

    def _encode(
        self, images: Tensor, positions: Tensor | None = None, stream: str = "posterior"
    ) -> Tensor:
        """Latents of ``images``; posterior samples drawn per image from ``(seed, stream,
        position)`` (or, without positions, from the metric's running generator)."""
        if not self.vae.sample_posterior:
            generator = None
        elif positions is None:
            generator = self._generator
        else:
            generator = keyed_generators(self.seed, positions, stream)
        return step.encode(self.vae, images, generator)

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        fid_state.shape_empty_lists(self, process_group or self.process_group)
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> dict[str, Tensor]:
        """``{"ifid", "rfid"}`` (float64 scalars) and the extras that are on (see the class).
        Raises when fewer than two images were seen (or fewer than an extra needs)."""
        if int(self.real_num_samples) < 2:
            raise ValueError(
                f"iFID needs at least 2 query images, got {int(self.real_num_samples)}; call "
                "update() with more images before compute()."
            )
        if self._queries_seen:
            warn_if_only_upper_half(self.input_range, self._round_low)
        sums = {key: getattr(self, key) for key in fid_state.FAKE_SUMS}
        interp_rows = None
        if self.reference.is_self:
            found, interp_rows = search_own_queries(self)
            sums.update(found)
        # The real statistics are complete only when the round ends: reset() starts caching them.
        self._round_computed = True
        self.last_neighbor_steps = fid_state.cat_state(self.neighbor_steps, torch.long).cpu()
        names = ("interp", "recon") if self.compute_rfid else ("interp",)
        out = fid_state.fids(self, sums, self._real_root, names)
        rows = None
        if self._per_image:
            rows = fid_state.paired_rows(self, interp_rows, self.compute_rfid, self._rows_cached)
        for extra in self.extras.values():
            state = {name: sums.get(name, getattr(self, name)) for name in extra.states()}
            found = extra.compute(state, rows if extra.uses_rows else None)
            out.update({key: value.to(out["ifid"]) for key, value in found.items()})
        return out

    def reset(self) -> None:
        """Clear the accumulated queries; real statistics (and rows) survive when
        ``reset_real_features=False``."""
        self._new_round()
        fid_state.reset_keeping_real(self, super().reset)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> torch.nn.Module:
        # Only device moves apply: states keep their dtypes (float64 sums) and networks their
        # precision. A shared Inception is swapped for the target device's, never moved.
        target = fn(torch.zeros((), device=self.device)).device
        move = DeviceMove(target)
        parent = super()._apply
        return apply_keeping_shared(
            self, "feature_net", lambda: parent(move, *args, **kwargs), move
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "feature_net" and is_network_cache(value):  # torchmetrics' FeatureShare
            check_shared_network(value, self.input_range, getattr(self, "preprocessing", None))
        super().__setattr__(name, value)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Calling the metric accumulates like :meth:`update`; a per-batch FID is not meaningful."""
        self.update(*args, **kwargs)

    # ------------------------------------------------------------------ real statistics
    REAL_STATES = fid_state.REAL_STATES

    def real_statistics(self, per_image: bool = False) -> dict[str, Tensor]:
        """Copies of this process's real-image sums (feature sum (d,), outer-product sum (d, d),
        count), keyed by state name, for :meth:`load_real_statistics`; with ``per_image`` also
        the real rows ``"real_feature_rows"`` (n, d) float32 and ``"real_row_positions"`` (n,)
        int64. Sums add over ranks; rows concatenate."""
        return fid_state.copy_real_statistics(self, per_image)

    def load_real_statistics(self, stats: dict[str, Tensor] | None) -> None:
        """Install real-image sums (and rows, when given) and mark them cached: later updates
        skip the real pass. ``None`` clears them. Under DDP give the global sums (and all rows)
        to one rank and zeros (``(0, d)`` rows) to the others. Without rows, a metric with
        per-image extras computes them again in its next round and keeps them from then on."""
        fid_state.install_real_statistics(self, stats)

    # ------------------------------------------------------------------ neighbours
    @property
    def bank(self) -> LatentBank | None:
        """The reference bank; assigning another one drops the index built from the previous."""
        return self.reference.bank

    @bank.setter
    def bank(self, bank: LatentBank | None) -> None:
        self.reference.bank = bank

    def refresh_index(self, vectors: Tensor | None = None, ids: Tensor | None = None) -> int:
        """(Re)build the neighbour index from the bank, or from given vectors (N, D) or
        (N, C, ...) (the shape ``search_norm="bn_channel"`` needs) and ids.

        An index built from the bank answers for the rows it held at this refresh: with
        ``auto_refresh_index`` the next search after a bank change refreshes it; without, later
        insertions are not seen until the next refresh (overwritten rows are kept aside). It is
        rebuilt once the metric holds another bank, or its bank was cleared or restored. Under
        torch.distributed the banks of all ranks are gathered (a collective; repeated rows with
        the same id and values are kept once). Given ``vectors`` are kept, not copied, and not
        gathered. Returns the number of rows indexed.
        """
        return self.reference.refresh(vectors, ids)

    def set_reference(self, index: NeighborIndex, lookup: Callable[[Tensor], Tensor]) -> None:
        """Search a prebuilt index (e.g. ``NeighborIndex.build_streaming`` over a reference too
        large for memory); ``lookup`` maps (B,) int64 ids to their (B, D) or (B, ...) latents
        (e.g. re-encoding those reference images). A picklable lookup keeps the metric
        picklable."""
        self.reference.use_prebuilt(index, lookup)

    def neighbors(
        self, z: Tensor, exclude: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Nearest reference latent of each latent in ``z`` (B, ...) (one of k when k > 1),
        never the row whose id is ``exclude`` (B,); ``generator`` draws the pick (default: the
        metric's seeded one). Returns ``(z_nn, ids)``: neighbours shaped like ``z``, their ids."""
        return step.neighbor_latents(
            self.reference, z, self.k, self.pick, exclude, generator or self._generator
        )

    # ------------------------------------------------------------------ paired comparisons
    def influences(self) -> per_image.EvaluationInfluences:
        """Each query's influence on iFID and rFID in the current round (computed now if needed)
        or the last computed one, with the queries' positions: what
        :func:`~ifid_callback.functional.paired_difference` takes. Needs ``uncertainty=True``."""
        return per_image.influences(self)

    def compare(self, other: Any) -> dict[str, Any]:
        """``{"ifid": PairedDifference, "rfid": ...}``: this evaluation minus ``other`` (an earlier
        :meth:`influences`, or a metric) on the same images, with the paired standard error."""
        return per_image.compare(self.influences(), other)
