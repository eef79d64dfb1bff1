"""The InterpolatedFID metric: iFID and rFID of a VAE from one pass over the query images."""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.distributed import gather_all_tensors

from ifid_callback.bank import LatentBank
from ifid_callback.distributed import (
    all_reduce_int,
    all_reduce_sum,
    gather_objects,
    world_and_rank,
)
from ifid_callback.feature_share import apply_keeping_shared
from ifid_callback.features import InceptionFeatures, feature_dim, resolve_feature
from ifid_callback.functional import frechet
from ifid_callback.functional.channel_norm import (
    ChannelStatistics,
    candidate_mse,
    channel_statistics,
    standardize,
)
from ifid_callback.functional.frechet import frechet_distance, gaussian_statistics
from ifid_callback.functional.interpolation import INTERPOLATIONS, interpolate
from ifid_callback.functional.kid import DEFAULT_SUBSET_SIZE, kernel_inception_distances
from ifid_callback.functional.knn_manifold import precision_recall as manifold_precision_recall
from ifid_callback.functional.neighbors import pick_neighbor
from ifid_callback.functional.reconstruction import reconstruction_sums
from ifid_callback.functional.uncertainty import frechet_influence
from ifid_callback.index import NeighborIndex
from ifid_callback.perceptual import lpips_distances, resolve_lpips
from ifid_callback.randomness import keyed_generators
from ifid_callback.vae import VAEAdapter

# What runs when neither an argument nor a preset says otherwise (the paper's main setting).
DEFAULTS: dict[str, Any] = {
    "interpolation": "slerp",
    "alpha": 0.5,
    "k": 1,
    "pick": "uniform",
    "sample_posterior": False,
    "search_norm": None,
}
PRESETS: dict[str, dict[str, Any]] = {
    # The official protocol: posterior sample, top-10 neighbours, one picked with probability
    # softmax(-MSE) (MSE per latent element, raw latents), slerp at alpha 0.5.
    "paper": {
        "sample_posterior": True,
        "k": 10,
        "pick": "softmax_mse",
        "interpolation": "slerp",
        "alpha": 0.5,
    },
}
_DISTANCES = ("cosine", "sqeuclidean")
_PICKS = ("uniform", "softmax_mse", "softmax_distance")
# The sums behind iFID and rFID (one triple per fake set).
_FID_SUMS = tuple(
    f"{name}_{part}"
    for name in ("interp", "recon")
    for part in ("features_sum", "features_cov_sum", "num_samples")
)
# Per-image feature rows (float32) and positions: row i of every set belongs to the same query.
_ROW_STATES = (
    "real_feature_rows",
    "real_row_positions",
    "interp_feature_rows",
    "recon_feature_rows",
)
# SSIM's 11 x 11 window needs at least this many pixels per side.
_SSIM_MIN_SIDE = 6
# Neighbourhood size of the manifold precision and recall (Kynkäänniemi et al.).
_PR_K = 3
# How latents are normalised for the neighbour search and the pick weights (None: raw latents).
SEARCH_NORMS = (None, "bn_channel")


def resolve_settings(
    preset: str | None = None,
    *,
    interpolation: str | None = None,
    alpha: float | None = None,
    k: int | None = None,
    pick: str | None = None,
    sample_posterior: bool | None = None,
    distance: str | None = None,
    search_norm: str | None = None,
) -> dict[str, Any]:
    """The protocol settings that run for these arguments (None: not given).

    A preset fills the settings it defines; an argument given together with a preset must agree
    with it. Unset settings take :data:`DEFAULTS`; the distance follows the interpolation
    (squared L2 for linear, cosine otherwise). :class:`InterpolatedFID` resolves its arguments
    with this function, and reports should record its result.

    Returns:
        ``{"preset", "interpolation", "alpha", "k", "pick", "sample_posterior", "search_norm",
        "distance"}``.

    Raises:
        ValueError: unknown preset or values, or arguments that contradict the preset.
    """
    given = {
        "interpolation": interpolation,
        "alpha": alpha,
        "k": k,
        "pick": pick,
        "sample_posterior": sample_posterior,
        "search_norm": search_norm,
    }
    given = {key: value for key, value in given.items() if value is not None}
    settings = dict(DEFAULTS)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}.")
        fixed = PRESETS[preset]
        conflicts = {key: value for key, value in given.items() if value != fixed.get(key, value)}
        if conflicts:
            got = ", ".join(f"{key}={value!r}" for key, value in conflicts.items())
            sets = ", ".join(f"{key}={fixed[key]!r}" for key in conflicts)
            raise ValueError(
                f"preset={preset!r} sets {sets} but got {got}; drop those arguments to run the "
                f"preset, or drop preset= to choose every setting yourself."
            )
        settings.update(fixed)
    settings.update(given)
    if settings["pick"] == "softmax":
        raise ValueError(
            "pick='softmax' is ambiguous: use 'softmax_mse' (the official protocol: probability "
            "softmax(-MSE) on the raw latents) or 'softmax_distance' (softmax of minus the "
            "search distance)."
        )
    if settings["interpolation"] not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {INTERPOLATIONS}, got {settings['interpolation']!r}."
        )
    alpha = settings["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}.")
    settings["alpha"] = float(alpha)
    k = settings["k"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}.")
    if settings["pick"] not in _PICKS:
        raise ValueError(f"pick must be one of {_PICKS}, got {settings['pick']!r}.")
    if distance is None:
        distance = "sqeuclidean" if settings["interpolation"] == "linear" else "cosine"
    if distance not in _DISTANCES:
        raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}.")
    settings["sample_posterior"] = bool(settings["sample_posterior"])
    if settings["search_norm"] not in SEARCH_NORMS:
        raise ValueError(
            f"search_norm must be one of {SEARCH_NORMS}, got {settings['search_norm']!r}: "
            "'bn_channel' standardises latents per channel with the reference's statistics for "
            "the neighbour search and the pick weights; None searches the raw latents."
        )
    return {"preset": preset, **settings, "distance": distance}


class InterpolatedFID(Metric):
    r"""Interpolated FID (iFID) and reconstruction FID (rFID) of a VAE.

    For each query image :math:`x` with latent :math:`z = E(x)`, the metric finds the nearest
    neighbour :math:`n` of :math:`z` in a reference bank of latents (never :math:`z` itself),
    forms :math:`\hat z = \mathrm{interp}(z, n; \alpha)` and decodes it. iFID is the FID between
    the real query images and the decoded interpolants; rFID is the FID between the real images and
    the reconstructions :math:`D(z)`, which are decoded in the same batched call.

    States are float64 feature sums, outer-product sums and counts (``dist_reduce_fx="sum"``), so
    DDP synchronisation is exact and memory is constant in the number of images; each rank
    processes only its own queries. The standard errors, KID and precision/recall also hold each
    query's feature rows until ``reset()`` (``"cat"`` states, gathered in the same rank order
    for every set, so row i of each set belongs to the same query). The feature network is not
    part of ``state_dict``.

    Args:
        encoder: callable images (B, C, H, W) -> latents or a posterior (see :class:`VAEAdapter`).
        decoder: callable latents -> images (B, C, H, W) in ``input_range`` (clamped).
        vae: instead of encoder/decoder, an object with ``encode``/``decode`` such as
            ``diffusers.AutoencoderKL``, ``AutoencoderTiny``, ``AutoencoderDC`` or ``VQModel``.
        feature: ``"inception"`` for the standard FID Inception-v3 pool3 features (2048-d, offline
            weights; one network per process and device, shared by every metric that asks for
            it: see :mod:`ifid_callback.feature_share`), or an ``nn.Module`` mapping images in
            ``input_range`` to (B, d) (pass one module to several metrics to share it).
        interpolation: ``"slerp"`` (default), ``"linear"`` or ``"mask"``.
        alpha: interpolation weight in [0, 1] (default 0.5); 0 gives iFID == rFID.
        k: number of nearest neighbours to pick one from (default 1; k > 1: a seeded random
            pick).
        pick: how one of the k is picked: ``"uniform"`` (default); ``"softmax_mse"``, the
            official rule: candidate j with probability softmax(-MSE_j), MSE_j the mean squared
            difference per latent element between the query and candidate j on the raw latents
            (whatever distance found the k); or ``"softmax_distance"``: softmax of minus the
            search distance (cosine distances in [0, 2] make it nearly uniform).
        search_norm: ``None`` (default): neighbours are searched on the raw latents.
            ``"bn_channel"`` (the authors' newer code): the search, and the ``softmax_mse`` /
            ``softmax_distance`` pick weights, see latents standardised per channel with the
            mean and standard deviation (population, +1e-5 variance) of the indexed reference
            rows, gathered at each index refresh; the interpolation still mixes the raw latents.
            The index then keeps a standardised float32 copy of the reference rows.
        bank: a :class:`LatentBank` of reference latents, or None to use the query images
            themselves as the reference (all latents are kept until ``compute``; self excluded).
            Under torch.distributed the reference is the union of the banks of all ranks
            (each rank may hold its share), gathered at each index refresh, so the result is
            the same on any world size; a row held by several ranks under the same id (e.g. a
            bank restored from one checkpoint on every rank) counts once. The refresh is a
            collective: change the banks on all ranks together and call ``update`` on every
            rank (or :meth:`refresh_index` on every rank).
        index: nearest-neighbour index: ``"auto"``, ``"exact"``, a faiss kind (``"ivf"``,
            ``"hnsw"``, ...) or a faiss factory string (see :class:`NeighborIndex`).
        distance: ``"cosine"`` or ``"sqeuclidean"``; default cosine for slerp/mask, squared L2 for
            linear.
        compute_rfid: also compute rFID (one batched decode of 2B latents instead of B).
        input_range: (low, high) value range of the images; decodes are clamped to it.
        sample_posterior: use a posterior sample instead of its mean (default False).
        preset: ``"paper"`` sets the official protocol (posterior sample, k=10,
            ``pick="softmax_mse"``, slerp, alpha 0.5). An argument that contradicts the preset is
            an error; :attr:`settings` records what runs.
        reset_real_features: when False, the real-image statistics of the first round that
            was computed are kept across ``reset()``: caching starts at the reset that ends that
            round (never mid-round), and later rounds skip the real feature pass, so they must
            use the same query images.
        seed: seed of the random choices (posterior sampling, mask positions, top-k pick).
        range_tolerance: how far outside ``input_range`` input images may stray before an error.
        auto_refresh_index: rebuild the neighbour index whenever the bank changed since it was
            built; when False, call :meth:`refresh_index` yourself (a training monitor does).
        num_features: dimension d of a custom feature module's output, when the module has no
            ``num_features`` attribute (otherwise found by one forward pass on (1, 3, 64, 64)).
        uncertainty: also report the sampling standard error of iFID and rFID (``"ifid_std"``,
            ``"rfid_std"``, FID units): the spread of the number over independent draws of as
            many query images, from each query's closed-form influence on FID (infinitesimal
            jackknife, :func:`~ifid_callback.functional.frechet_influence`). Needs >= 3 queries
            (with fewer, a warning and no standard errors).
        reconstruction_metrics: with ``compute_rfid``, also report the per-image means of PSNR
            (dB), SSIM and MSE of the reconstructions ``D(z)`` against the query images
            (``"psnr"``, ``"ssim"``, ``"mse"``; torchmetrics' definitions, data range
            ``input_range``), from the decode already done for rFID. SSIM needs images of at
            least 6 x 6 pixels; smaller images get PSNR and MSE only. A pixel-exact
            reconstruction has PSNR +inf (lossless), so the mean PSNR is +inf when any image is
            reconstructed exactly; MSE (0 then) stays finite.
        kid: also report the Kernel Inception Distance of the interpolants and of the
            reconstructions (``"ikid"``, ``"rkid"``, torchmetrics' unbiased polynomial-kernel
            MMD on the same features, subsets of ``min(1000, N)`` rows) and torchmetrics'
            ``kid_std``, the spread over its 100 subsets (``"ikid_std"``, ``"rkid_std"``; 0 when
            N <= 1000, where every subset holds all rows; not a standard error).
        precision_recall: also report the k-NN manifold precision and recall (k = 3) of the
            decoded interpolants against the real images (``"iprecision"``, ``"irecall"``,
            fractions in [0, 1]). Needs >= 4 queries.
        lpips: also report the per-image mean LPIPS of the reconstructions against the query
            images (``"lpips"``), from the decode already done for rFID (needs
            ``compute_rfid``). A module or callable mapping (reconstructions, images), both
            (B, C, H, W) in ``input_range``, to (B,) or (B, 1, 1, 1) distances, e.g.
            ``lpips.LPIPS(net="alex")`` built from local weights (it takes [-1, 1]); it runs in
            eval mode, moves with the metric and is left out of ``state_dict``. ``True`` builds
            the standard LPIPS from local files only (the ``lpips`` package and torchvision's
            AlexNet weights in the torch hub cache; never downloaded) and otherwise raises,
            saying how to enable it. Default None: off.

        ``uncertainty``, ``kid`` and ``precision_recall`` hold each query's real, interpolant and
        reconstruction feature rows until ``reset()`` (float32, 3 x N x d x 4 bytes: 49 MB for
        2000 images of 2048-d Inception features); under DDP they are gathered at ``compute``.

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
    # torchmetrics' convention (FeatureShare): the attribute that holds the feature network.
    feature_network: str = "feature_net"

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
        uncertainty: bool = True,
        reconstruction_metrics: bool = True,
        kid: bool = False,
        precision_recall: bool = False,
        lpips: bool | torch.nn.Module | Callable[[Tensor, Tensor], Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        settings = resolve_settings(
            preset,
            interpolation=interpolation,
            alpha=alpha,
            k=k,
            pick=pick,
            sample_posterior=sample_posterior,
            distance=distance,
            search_norm=search_norm,
        )
        low, high = (float(v) for v in input_range)
        if not low < high:
            raise ValueError(f"input_range must be (low, high) with low < high, got {input_range}.")
        if not isinstance(reset_real_features, bool):
            raise ValueError(
                f"reset_real_features must be True or False, got {reset_real_features!r}."
            )
        extras = {
            "uncertainty": uncertainty,
            "reconstruction_metrics": reconstruction_metrics,
            "kid": kid,
            "precision_recall": precision_recall,
        }
        for name, value in extras.items():
            if not isinstance(value, bool):
                raise ValueError(
                    f"{name} must be True or False, got {value!r}; e.g. {name}=False to skip it."
                )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int, got {seed!r}; e.g. seed=0.")
        if not float(range_tolerance) >= 0.0:
            raise ValueError(
                f"range_tolerance must be >= 0 (how far images may stray outside input_range), "
                f"got {range_tolerance!r}."
            )
        if lpips not in (None, False) and not compute_rfid:
            raise ValueError(
                "lpips scores the reconstructions, which compute_rfid=False skips; pass "
                "compute_rfid=True or drop lpips."
            )
        lpips_net = resolve_lpips(lpips, (low, high))
        # An unknown index kind is named now, not at the first update().
        NeighborIndex(index=index, distance=settings["distance"], seed=seed)

        self.vae = VAEAdapter(
            vae=vae,
            encoder=encoder,
            decoder=decoder,
            sample_posterior=settings["sample_posterior"],
        )
        self.feature_net = resolve_feature(feature, (low, high))
        self.interpolation = settings["interpolation"]
        self.alpha = settings["alpha"]
        self.k = settings["k"]
        self.pick = settings["pick"]
        self.search_norm = settings["search_norm"]
        # Per-channel statistics of the indexed rows (search_norm="bn_channel"), set at refresh.
        self._search_statistics: ChannelStatistics | None = None
        # Median norm of the indexed reference latents (a sample of rows), to catch a bank on
        # another scale than the queries (e.g. latents multiplied by a scaling_factor).
        self._reference_scale: float | None = None
        self._scale_warned = False
        self.bank = bank
        self.index = index
        self.distance = settings["distance"]
        self.compute_rfid = bool(compute_rfid)
        self.input_range = (low, high)
        self.preset = preset
        self.reset_real_features = reset_real_features
        self.seed = int(seed)
        self.range_tolerance = float(range_tolerance)
        self.auto_refresh_index = bool(auto_refresh_index)
        self.uncertainty = uncertainty
        self.reconstruction_metrics = reconstruction_metrics
        self.kid = kid
        self.precision_recall = precision_recall
        # A module is a child (it follows .to(device)); its weights stay out of state_dict.
        self.lpips_net = lpips_net
        # Whether per-image feature rows are held (the extras that pair real and fake rows).
        self._per_image = uncertainty or kid or precision_recall
        # Real rows kept from an earlier round (or loaded), paired with later rounds by position.
        self._rows_cached = False
        self._warned_ssim = False
        # Only for calls without positions (e.g. neighbors() on its own); update() draws every
        # random choice from generators keyed by each query's position.
        self._generator = torch.Generator().manual_seed(self.seed)
        self._queries_seen = 0  # queries of this round on this process (default positions)
        self._round_low = math.inf  # the lowest pixel value of this round's images
        self._channels: int | None = None
        self._real_cached = False
        self._round_computed = False
        # (real covariance, its square root) of the last compute(): iFID and rFID share it and
        # later rounds with cached real statistics reuse it.
        self._sqrt_cache: tuple[Tensor, Tensor] | None = None
        self._index: NeighborIndex | None = None
        # positions (B,) -> reference latents (B, D): the rows a built index's search found.
        self._rows: Callable[[Tensor], Tensor] | None = None
        self._external_reference = False

        d = num_features or _feature_dim(self.feature_net)
        self.num_features = d
        for name in ("real", "interp", "recon"):
            self.add_state(
                f"{name}_features_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(
                f"{name}_features_cov_sum",
                torch.zeros(d, d, dtype=torch.float64),
                dist_reduce_fx="sum",
            )
            self.add_state(
                f"{name}_num_samples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum"
            )
        # Only used without a bank: the queries are their own reference, searched at compute().
        self.add_state("query_latents", [], dist_reduce_fx="cat")
        # Their positions, which seed each query's random choices (see update()); with a bank
        # only kept for the per-image extras (the positions of the fake rows).
        self.add_state("query_positions", [], dist_reduce_fx="cat")
        # Per-image rows for the extras, appended in query order on each rank, so the gathered
        # concatenations stay aligned across the sets ("cat" keeps the rank order for all).
        for name in _ROW_STATES:
            self.add_state(name, [], dist_reduce_fx="cat")
        # Reconstruction scores: sums over images (averaged per image at compute()).
        for name in ("psnr", "ssim", "mse"):
            self.add_state(
                f"recon_{name}_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )
        self.add_state(
            "recon_lpips_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        for name in ("recon_scored", "recon_ssim_scored", "recon_lpips_scored"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        # Keep the feature network's weights out of checkpoints of whatever holds this metric.
        self._register_state_dict_hook(_drop_feature_net_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_feature_net_keys)

    @property
    def settings(self) -> dict[str, Any]:
        """The settings that run (for logs, hparams and JSON reports): preset, interpolation,
        alpha, k, pick, sample_posterior, search_norm, distance, index, seed, compute_rfid,
        input_range, reset_real_features, the feature network's name and which extras are
        reported."""
        return {
            "preset": self.preset,
            "interpolation": self.interpolation,
            "alpha": self.alpha,
            "k": self.k,
            "pick": self.pick,
            "sample_posterior": self.vae.sample_posterior,
            "search_norm": self.search_norm,
            "distance": self.distance,
            "index": self.index,
            "seed": self.seed,
            "compute_rfid": self.compute_rfid,
            "input_range": list(self.input_range),
            "reset_real_features": self.reset_real_features,
            "feature": _feature_name(self.feature_net),
            "uncertainty": self.uncertainty,
            "reconstruction_metrics": self.reconstruction_metrics,
            "kid": self.kid,
            "precision_recall": self.precision_recall,
            "lpips": _lpips_name(self.lpips_net),
        }

    # ------------------------------------------------------------------ torchmetrics API
    def update(
        self, images: Tensor, ids: Tensor | None = None, positions: Tensor | None = None
    ) -> None:
        """Encode a batch of query images, interpolate with their neighbours, decode, accumulate.

        Args:
            images: (B, C, H, W) float images in ``input_range``, on the metric's device.
            ids: optional (B,) int64 ids of these images in the bank, so that a bank that
                contains the queries never returns a query as its own neighbour.
            positions: optional (B,) int64 global positions (or any unique ids) of these images
                in the query set, e.g. dataset indices. A query's random choices (posterior
                sample, top-k pick, mask positions) are drawn from ``(seed, position)`` alone, so
                they do not depend on batching, rank, world size or resumes. Default: the
                query's running position in this round, dealt across ranks as
                ``DistributedSampler`` deals a dataset (rank r's j-th image is position
                ``j * world_size + r``).
        """
        lowest = self._check_images(images)
        batch = images.shape[0]
        ids = _as_ids("ids", ids, batch)
        positions = _as_ids("positions", positions, batch)
        if positions is None:
            positions = self._next_positions(batch)
        with torch.no_grad():
            z = self._encode(images, positions)
            if not self._self_reference:
                self._check_latents_fit_bank(images, z)
            # Everything below is computed before any state changes, so a failure leaves it intact.
            new: dict[str, Tensor] = {}
            rows: dict[str, Tensor] = {}
            need_rows = self._per_image and not self._rows_cached
            if not self._real_cached or need_rows:
                f_real = self._features(images)
                if not self._real_cached:
                    new.update(self._feature_sums("real", f_real))
                if need_rows:
                    rows["real_feature_rows"] = f_real.to(torch.float32)
                    rows["real_row_positions"] = positions.to(self.device)
            channels = images.shape[1]
            if self._self_reference:
                # The reconstructions need no neighbour: decoded now, with the images at hand
                # for PSNR/SSIM; the interpolants are decoded at compute().
                if self.compute_rfid:
                    sums, fake_rows = self._decode_and_featurize(
                        z, channels=channels, targets=images
                    )
                    new.update(sums)
                    rows.update(fake_rows)
                self._accumulate(new)
                self._append_rows(rows)
                self.query_latents.append(z.detach().to(torch.float32).reshape(batch, -1))
                self.query_positions.append(positions.to(self.device))
                self._latent_shape = tuple(z.shape[1:])
            else:
                z_nn, _ = self.neighbors(
                    z, exclude=ids, generator=self._generators(positions, "pick")
                )
                self._warn_if_reference_scale_differs(z)
                sums, fake_rows = self._decode_and_featurize(
                    z, z_nn, self._generators(positions, "mask"), channels, targets=images
                )
                new.update(sums)
                rows.update(fake_rows)
                self._accumulate(new)
                self._append_rows(rows)
                if self._per_image:
                    self.query_positions.append(positions.to(self.device))
        # Learned only now that the whole batch went through.
        self._channels = images.shape[1]
        self._queries_seen += batch
        self._round_low = min(self._round_low, lowest)

    def _next_positions(self, batch: int) -> Tensor:
        """Running positions of the next ``batch`` queries of this round, dealt across ranks."""
        world, rank = world_and_rank() if self.sync_on_compute else (1, 0)
        local = torch.arange(self._queries_seen, self._queries_seen + batch, dtype=torch.long)
        return local * world + rank

    def _generators(self, positions: Tensor, stream: str) -> list[torch.Generator] | None:
        """Per-query generators for one kind of choice, or None when that choice is not random."""
        needed = {
            "pick": self.k > 1,
            "mask": self.interpolation == "mask",
            "posterior": self.vae.sample_posterior,
        }[stream]
        return keyed_generators(self.seed, positions, stream) if needed else None

    def _sync_dist(
        self, dist_sync_fn: Callable = gather_all_tensors, process_group: Any | None = None
    ) -> None:
        # A rank that saw no images (more ranks than evaluation images, an empty shard) holds
        # empty "cat" lists, which torchmetrics gathers as 1-d float32 empties against the other
        # ranks' (n, ...) rows of another dtype: a collective mismatch that aborts or hangs.
        # Such lists first get the row layout of the ranks that hold rows.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            layouts = {
                attr: (tuple(value[0].shape[1:]), value[0].dtype) if value else None
                for attr in self._reductions
                if isinstance(value := getattr(self, attr), list)
            }
            everyone = gather_objects(layouts, process_group or self.process_group)
            for attr, layout in layouts.items():
                known = next((o[attr] for o in everyone if o[attr] is not None), None)
                if layout is None and known is not None:
                    shape, dtype = known
                    setattr(self, attr, [torch.empty((0, *shape), dtype=dtype, device=self.device)])
        super()._sync_dist(dist_sync_fn, process_group)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"ifid": FID(real, interpolants), "rfid": FID(real, reconstructions)}`` and
        the extras that are on.

        Keys: ``"ifid"``, ``"rfid"`` (with ``compute_rfid``); ``"ifid_std"``, ``"rfid_std"``
        (``uncertainty``); ``"psnr"``, ``"ssim"``, ``"mse"`` (``reconstruction_metrics`` with
        ``compute_rfid``); ``"ikid"``, ``"ikid_std"``, ``"rkid"``, ``"rkid_std"`` (``kid``);
        ``"iprecision"``, ``"irecall"`` (``precision_recall``); ``"lpips"`` (``lpips``). Values are float64 scalars.
        Raises when fewer than two images were seen (or fewer than an extra needs).
        """
        if int(self.real_num_samples) < 2:
            raise ValueError(
                f"iFID needs at least 2 query images, got {int(self.real_num_samples)}; call "
                "update() with more images before compute()."
            )
        self._warn_if_only_upper_half()
        sums = {key: getattr(self, key) for key in _FID_SUMS}
        interp_rows = None
        if self._self_reference:
            interp = {key: value for key, value in sums.items() if key.startswith("interp_")}
            found, interp_rows = self._compute_self_reference(interp)
            sums.update(found)
        mu_r, sigma_r = gaussian_statistics(
            self.real_features_sum, self.real_features_cov_sum, self.real_num_samples
        )
        # The real statistics of this round are complete only when the round ends: reset()
        # starts caching them, so updates after a mid-round compute() still add real images.
        self._round_computed = True
        out = {}
        root = self._real_sqrt(sigma_r)
        mu_i, sigma_i = gaussian_statistics(
            sums["interp_features_sum"], sums["interp_features_cov_sum"], sums["interp_num_samples"]
        )
        out["ifid"] = frechet_distance(mu_r, sigma_r, mu_i, sigma_i, sqrt_sigma1=root)
        if self.compute_rfid:
            mu_c, sigma_c = gaussian_statistics(
                sums["recon_features_sum"],
                sums["recon_features_cov_sum"],
                sums["recon_num_samples"],
            )
            out["rfid"] = frechet_distance(mu_r, sigma_r, mu_c, sigma_c, sqrt_sigma1=root)
        if self.compute_rfid and self.reconstruction_metrics:
            out.update(self._reconstruction_means())
        if self.lpips_net is not None and int(self.recon_lpips_scored) > 0:
            out["lpips"] = self.recon_lpips_sum / int(self.recon_lpips_scored)
        if self._per_image:
            extras = self._per_image_extras(interp_rows)
            out.update({key: value.to(out["ifid"]) for key, value in extras.items()})
        return out

    def _reconstruction_means(self) -> dict[str, Tensor]:
        """Per-image means of PSNR, SSIM (when every image was scored) and MSE."""
        count = int(self.recon_scored)
        if count < 1:
            return {}
        out = {"psnr": self.recon_psnr_sum / count}
        if int(self.recon_ssim_scored) == count:
            out["ssim"] = self.recon_ssim_sum / count
        out["mse"] = self.recon_mse_sum / count
        return out

    def _per_image_extras(self, interp_rows: Tensor | None) -> dict[str, Tensor]:
        """Standard errors, KID and precision/recall from the paired per-image feature rows."""
        positions = _cat_state(self.query_positions, torch.long)
        n = positions.shape[0]
        if interp_rows is None:
            interp_rows = _cat_state(self.interp_feature_rows, torch.float32)
        fakes = {"ifid": interp_rows}
        if self.compute_rfid:
            fakes["rfid"] = _cat_state(self.recon_feature_rows, torch.float32)
        for name, rows in fakes.items():
            if rows.shape[0] != n:  # an internal invariant: say so rather than misalign
                raise RuntimeError(
                    f"{rows.shape[0]} per-image {name} feature rows for {n} queries; the rows of "
                    "one round are out of step (please report this)."
                )
        real = self._aligned_real_rows(positions)
        real = real.to(torch.float64)
        fakes = {name: rows.to(real.device, torch.float64) for name, rows in fakes.items()}
        out: dict[str, Tensor] = {}
        if self.uncertainty and n < 3:
            # On by default: FID itself is defined from 2 images, so say it rather than fail.
            warnings.warn(
                f"The standard errors of iFID/rFID need at least 3 query images, got {n}: "
                "ifid_std/rfid_std are not reported; evaluate more images or pass "
                "uncertainty=False.",
                UserWarning,
                stacklevel=3,
            )
        elif self.uncertainty:
            for name, result in frechet_influence(real, fakes).items():
                out[f"{name}_std"] = result.std_error
        if self.kid:
            # All subsets hold every row when N <= 1000: one subset gives the same numbers.
            subsets = 1 if n <= DEFAULT_SUBSET_SIZE else 100
            kid_fakes = {name[0] + "kid": rows for name, rows in fakes.items()}
            generator = torch.Generator().manual_seed(self.seed)
            found = kernel_inception_distances(
                real, kid_fakes, subsets=subsets, generator=generator
            )
            for name, result in found.items():
                out[name] = result.mean
                out[f"{name}_std"] = result.std
        if self.precision_recall:
            if n <= _PR_K:
                raise ValueError(
                    f"Precision and recall (k={_PR_K}) need at least {_PR_K + 1} query images, "
                    f"got {n}; evaluate more images or pass precision_recall=False."
                )
            result = manifold_precision_recall(real, fakes["ifid"], k=_PR_K)
            out["iprecision"], out["irecall"] = result.precision, result.recall
        return out

    def _aligned_real_rows(self, positions: Tensor) -> Tensor:
        """The real feature rows in the order of the fake rows (the queries at ``positions``).

        Rows of this round are paired by construction (appended by the same update calls);
        rows cached from an earlier round are paired by the queries' positions.
        """
        real = _cat_state(self.real_feature_rows, torch.float32)
        real_positions = _cat_state(self.real_row_positions, torch.long).to(positions.device)
        n = positions.shape[0]
        if real_positions.shape == positions.shape and torch.equal(real_positions, positions):
            return real
        if self._rows_cached and real.shape[0] == n:
            order_real, order_fake = real_positions.argsort(), positions.argsort()
            sorted_real = real_positions[order_real]
            unique = bool((sorted_real[1:] != sorted_real[:-1]).all())
            if unique and torch.equal(sorted_real, positions[order_fake]):
                aligned = torch.empty_like(real)
                aligned[order_fake.to(real.device)] = real[order_real.to(real.device)]
                return aligned
        raise ValueError(
            f"The real-image feature rows ({real.shape[0]}) are not those of this round's {n} "
            "queries (the per-image extras pair each query's real and decoded features by its "
            "position). With reset_real_features=False every round must evaluate the same "
            "images at the same positions; evaluate the same query set, or pass "
            "uncertainty=False, kid=False and precision_recall=False."
        )

    def _real_sqrt(self, sigma_r: Tensor) -> Tensor:
        """Square root of the real covariance, recomputed only when that covariance changed.

        The cache is keyed on the covariance itself (compared exactly), so no path that changes
        the real statistics (updates, a load, a DDP sync) can leave a stale root.
        """
        sigma = sigma_r.detach().to("cpu", torch.float64)
        cached = self._sqrt_cache
        if cached is not None and cached[0].shape == sigma.shape and torch.equal(cached[0], sigma):
            return cached[1]
        root = frechet.psd_sqrt(sigma)
        self._sqrt_cache = (sigma.clone(), root)
        return root

    def reset(self) -> None:
        """Clear the accumulated queries (and the per-image rows they hold); real statistics
        and real rows survive when ``reset_real_features=False``."""
        self._channels = None
        self._queries_seen = 0
        self._round_low = math.inf
        keep_real = not self.reset_real_features and (self._real_cached or self._round_computed)
        keep_rows = keep_real and self._per_image and (self._rows_cached or self._round_computed)
        self._round_computed = False
        if not keep_real:
            super().reset()
            self._real_cached = self._rows_cached = False
            return
        self._real_cached = True
        names = list(self.REAL_STATES)
        if keep_rows:
            names += ["real_feature_rows", "real_row_positions"]
        # Lists are copied: torchmetrics' reset() clears list states in place.
        kept = {key: _copy_state(getattr(self, key)) for key in names}
        super().reset()
        for key, value in kept.items():
            setattr(self, key, value)
        self._rows_cached = keep_rows

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> torch.nn.Module:
        # A shared Inception is swapped for the target device's, never moved under its holders.
        parent = super()._apply
        return apply_keeping_shared(self, "feature_net", lambda: parent(fn, *args, **kwargs), fn)

    def forward(self, *args: Any, **kwargs: Any) -> None:
        """Calling the metric accumulates like :meth:`update`; a per-batch FID is not meaningful."""
        self.update(*args, **kwargs)

    # ------------------------------------------------------------------ real statistics
    REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_num_samples")

    def real_statistics(self, per_image: bool = False) -> dict[str, Tensor]:
        """Copies of this process's real-image sums: feature sum (d,), outer-product sum (d, d)
        and count, keyed by state name (what :meth:`load_real_statistics` takes back).

        With ``per_image`` (for the metric's per-image extras), also this process's real feature
        rows ``"real_feature_rows"`` (n, d) float32 and their query positions
        ``"real_row_positions"`` (n,) int64. Sums add over ranks; rows do not: under DDP
        concatenate the ranks' rows (and positions) instead.
        """
        out = {key: getattr(self, key).detach().clone() for key in self.REAL_STATES}
        if per_image:
            d = self.num_features
            out["real_feature_rows"] = _cat_state(self.real_feature_rows, torch.float32, d)
            out["real_row_positions"] = _cat_state(self.real_row_positions, torch.long)
            out = {key: value.detach().clone() for key, value in out.items()}
        return out

    def load_real_statistics(self, stats: dict[str, Tensor] | None) -> None:
        """Install real-image sums and mark them cached (later updates skip the real pass).

        ``None`` clears them and turns caching off, so the next round recomputes them. Under DDP
        give the global sums to one rank and zeros to the others: states are summed at sync.

        The per-image rows of :meth:`real_statistics` (``per_image=True``) are installed with the
        sums when present (under DDP: all rows on one rank, ``(0, d)`` and ``(0,)`` tensors on
        the others, since rows are concatenated at sync). Without them, a metric with per-image
        extras computes the real rows again in its next round (one pass of the feature network
        over the real images, the sums staying cached) and keeps them from then on.
        """
        if stats is None:
            self._real_cached = self._round_computed = self._rows_cached = False
            for key in self.REAL_STATES:
                setattr(self, key, torch.zeros_like(getattr(self, key)))
            self.real_feature_rows, self.real_row_positions = [], []
            return
        missing = set(self.REAL_STATES) - set(stats)
        if missing:
            raise ValueError(
                f"real statistics are missing {sorted(missing)}; pass the dict that "
                f"real_statistics() returns (keys {list(self.REAL_STATES)})."
            )
        values = {key: torch.as_tensor(stats[key]) for key in self.REAL_STATES}
        expected = {key: getattr(self, key).shape for key in self.REAL_STATES}
        for key, value in values.items():
            if value.shape != expected[key]:
                raise ValueError(
                    f"{key} has shape {tuple(value.shape)}, expected {tuple(expected[key])}: the "
                    "statistics come from a feature network of another dimension; load statistics "
                    "computed with this metric's feature network."
                )
        rows = self._check_real_rows(stats)
        for key, value in values.items():
            setattr(self, key, value.to(self.device, getattr(self, key).dtype))
        self._real_cached = True
        if rows is None or not self._per_image:
            self.real_feature_rows, self.real_row_positions = [], []
            self._rows_cached = False
        else:
            self.real_feature_rows = [rows[0].to(self.device, torch.float32)]
            self.real_row_positions = [rows[1].to(self.device, torch.long)]
            self._rows_cached = True

    def _check_real_rows(self, stats: dict[str, Tensor]) -> tuple[Tensor, Tensor] | None:
        """The (rows, positions) pair in ``stats``, validated; None when absent."""
        present = [key for key in ("real_feature_rows", "real_row_positions") if key in stats]
        if not present:
            return None
        if len(present) != 2:
            raise ValueError(
                "real statistics hold only one of 'real_feature_rows' and 'real_row_positions'; "
                "pass both (real_statistics(per_image=True)) or neither."
            )
        rows = torch.as_tensor(stats["real_feature_rows"])
        positions = torch.as_tensor(stats["real_row_positions"])
        if rows.ndim != 2 or rows.shape[1] != self.num_features:
            raise ValueError(
                f"real_feature_rows has shape {tuple(rows.shape)}, expected (n, "
                f"{self.num_features}); load rows computed with this metric's feature network."
            )
        if positions.shape != (rows.shape[0],) or positions.is_floating_point():
            raise ValueError(
                f"real_row_positions must be ({rows.shape[0]},) integers (one per row), got "
                f"{tuple(positions.shape)} {positions.dtype}."
            )
        if not bool(torch.isfinite(rows).all()):
            raise ValueError("real_feature_rows contains NaN or Inf.")
        return rows, positions

    # ------------------------------------------------------------------ neighbours
    @property
    def bank(self) -> LatentBank | None:
        """The reference bank; assigning another one drops the index built from the previous."""
        return self._bank

    @bank.setter
    def bank(self, bank: LatentBank | None) -> None:
        if bank is not None and not isinstance(bank, LatentBank):
            raise TypeError(
                f"bank must be a LatentBank or None, got {type(bank).__name__}; put reference "
                "latents in one with bank = LatentBank(capacity=n); bank.add(latents)."
            )
        if bank is not getattr(self, "_bank", None):
            self._index = None
            self._index_source = None
            self._search_statistics = None
        self._bank = bank

    def refresh_index(self, vectors: Tensor | None = None, ids: Tensor | None = None) -> int:
        """(Re)build the neighbour index from the bank, or from given vectors and ids.

        ``vectors``: (N, D) flattened latents, or (N, C, ...) latents (required shape with
        ``search_norm="bn_channel"``, which needs the channel count).

        An index built from the bank answers for the rows the bank held at this refresh: with
        ``auto_refresh_index`` the next search after any bank change refreshes it; without, later
        insertions are not seen until the next refresh (rows the bank overwrites meanwhile are
        kept aside, one copy per overwritten row). Either way it is rebuilt once the metric holds
        another bank, or once its bank was cleared or restored (``load_state_dict``).

        Under torch.distributed the bank rows of all ranks are gathered (a collective: every
        rank must call it, with a non-empty bank); rows repeated with the same id and values
        (the same bank on several ranks) are kept once, so every world size indexes the same
        reference. Given ``vectors`` are used as they are (no gathering).

        Memory: the previous index is released first; an exact index over a bank searches the
        bank's rows in place (a copy only without ``auto_refresh_index``), a compressed index
        keeps its codes and reads the found rows from the bank. Under torch.distributed each
        rank keeps the gathered rows. Given ``vectors`` are kept (not copied) as the rows to
        interpolate with: do not modify them afterwards.

        Returns:
            The number of rows indexed.
        """
        world = world_and_rank()[0] if vectors is None else 1
        if vectors is None:
            if self.bank is None:
                raise ValueError("This metric has no bank; pass vectors= to refresh_index().")
            # Under DDP every rank must agree before the gather, or the others would wait forever.
            smallest = all_reduce_int(len(self.bank), "min") if world > 1 else len(self.bank)
            if smallest == 0:
                where = "" if world == 1 else " on at least one rank"
                raise ValueError(
                    f"The latent bank is empty{where}: add reference latents with "
                    "bank.add(latents) before evaluating iFID."
                )
        elif vectors.shape[0] < 1:
            raise ValueError("The reference set is empty; add latents first.")
        channels = self._reference_channels(vectors)
        if vectors is not None and vectors.ndim > 2:
            vectors = vectors.reshape(vectors.shape[0], -1)
        # Never hold two indexes (or an old snapshot's kept rows) while building the next one.
        self._index = self._rows = self._index_source = None
        self._search_statistics = None
        index = NeighborIndex(index=self.index, distance=self.distance, seed=self.seed)
        source = None
        if vectors is None and world > 1:
            bank = self.bank
            vectors, ids = _drop_repeated_rows(*bank.gather())
            rows = _snapshot_rows(vectors)  # the gathered rows are this rank's own copy
            source = (bank, bank.lineage, bank.token, False)
        elif vectors is None:
            bank = self.bank
            live = self.auto_refresh_index  # rebuilt before any search that follows a change
            vectors, ids = bank.vectors, bank.ids.clone()
            exact = index.kind_for(vectors) == "exact"
            if live:
                rows = _snapshot_rows(vectors)
            elif exact:
                vectors = vectors.clone()  # the index searches its own frozen rows
                rows = _snapshot_rows(vectors)
            else:
                rows = bank.snapshot().rows  # codes in the index, rows read from the bank
            source = (bank, bank.lineage, bank.token, live)
        else:
            if ids is None:
                ids = torch.arange(vectors.shape[0], device=vectors.device)
            rows = _snapshot_rows(vectors)
        statistics = None
        if channels is not None:
            # Statistics of exactly the rows indexed (after any gather); the index searches
            # their standardised copy, while `rows` keep returning the raw latents.
            statistics = channel_statistics(vectors, channels)
            vectors = standardize(vectors.to(torch.float32), statistics)
        self._reference_scale = _median_norm(rows(_spread_positions(vectors.shape[0])))
        index.build(vectors, ids)
        self._index, self._index_source, self._rows = index, source, rows
        self._search_statistics = statistics
        return len(index)

    def _reference_channels(self, vectors: Tensor | None) -> int | None:
        """Channel count of the reference latents when the search standardises them, else None."""
        if self.search_norm is None:
            return None
        if vectors is None:
            assert self.bank is not None
            return int(self.bank.latent_shape[0])
        if vectors.ndim > 2:
            return int(vectors.shape[1])
        raise ValueError(
            f"search_norm={self.search_norm!r} standardises each channel, so refresh_index() "
            f"needs latents shaped (N, C, ...), got flattened rows {tuple(vectors.shape)}; pass "
            "vectors.reshape(N, C, H, W)."
        )

    def _index_is_stale(self) -> bool:
        """Whether the index must be rebuilt from the bank before the next search."""
        if self._index is None:
            return True
        if self._index_source is None:  # built from given vectors: kept until the next refresh
            return False
        bank, lineage, token, live = self._index_source
        if bank is not self.bank or lineage is not bank.lineage:
            return True  # another bank, or this one cleared or restored
        return (live or self.auto_refresh_index) and token is not bank.token

    def set_reference(self, index: NeighborIndex, lookup: Callable[[Tensor], Tensor]) -> None:
        """Use a prebuilt index (e.g. ``NeighborIndex.build_streaming`` over a reference set too
        large for memory) and a function that returns the latents of given ids.

        Args:
            index: a built :class:`NeighborIndex` over flattened reference latents.
            lookup: maps (B,) int64 ids to their (B, D) or (B, ...) latents, e.g. by re-encoding the
                reference images with those dataset indices (nothing else has to stay in memory).
        """
        if not isinstance(index, NeighborIndex) or len(index) == 0:
            raise ValueError("set_reference needs a built, non-empty NeighborIndex.")
        if not callable(lookup):
            raise TypeError("lookup must be callable: ids (B,) -> latents (B, ...).")
        if self.bank is not None:
            raise ValueError("This metric has a bank; set_reference replaces it: pass bank=None.")
        if self.search_norm is not None:
            raise ValueError(
                f"search_norm={self.search_norm!r} needs the reference's per-channel statistics, "
                "which a prebuilt index does not carry; use a bank (or refresh_index(latents)) "
                "or search_norm=None with set_reference()."
            )
        self._index, self._index_source = index, None
        self._search_statistics = None
        self._reference_scale = None
        self._rows = lambda positions: lookup(index.ids_of(positions))
        self._external_reference = True

    @property
    def _self_reference(self) -> bool:
        """True when the queries are their own reference (no bank, no prebuilt index)."""
        return self.bank is None and not self._external_reference

    def neighbors(
        self, z: Tensor, exclude: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Nearest reference latent of each latent in ``z`` (one of k, picked when k > 1).

        Args:
            z: latents (B, ...), flattened per sample for the search.
            exclude: optional (B,) ids that each latent must not be matched to (itself).
            generator: random source for the top-k pick (default: the metric's seeded one).

        Returns:
            ``(z_nn, ids)``: neighbour latents shaped and typed like ``z``, and their (B,) ids.
        """
        if self.bank is not None and self._index_is_stale():
            if len(self.bank) and self.bank.latent_shape != tuple(z.shape[1:]):
                raise ValueError(
                    f"The bank holds latents of shape {self.bank.latent_shape} but the encoder "
                    f"returns {tuple(z.shape[1:])}; fill the bank with this VAE's latents."
                )
            self.refresh_index()
        if self._index is None:
            raise ValueError("No neighbour index: call refresh_index() first.")
        flat = z.reshape(z.shape[0], -1)
        if flat.shape[1] != self._index.dim:
            raise ValueError(
                f"Latents have {flat.shape[1]} values per sample but the reference has "
                f"{self._index.dim}; use a bank filled by the same encoder."
            )
        available = len(self._index) - (1 if exclude is not None else 0)
        if self.k > available:
            raise ValueError(
                f"k={self.k} neighbours requested but the reference holds only {available} "
                "candidates per query; lower k or add more latents to the bank."
            )
        stats = self._search_statistics
        if stats is not None:  # bn_channel: search in the reference's standardised space
            flat = standardize(flat.detach().to(torch.float32), stats)
        # Positions name the rows found; ids are only labels (they may repeat).
        dist, found = self._index.search_rows(flat, k=self.k, exclude=exclude)
        if self.k > 1:
            choice = self._pick(z, dist, found, generator or self._generator)
        else:
            choice = found[:, 0].cpu()
        z_nn = self._rows(choice).to(z.device, z.dtype).reshape(z.shape)
        return z_nn, self._index.ids_of(choice)

    def _pick(self, z: Tensor, dist: Tensor, found: Tensor, generator: Any) -> Tensor:
        """One of the k candidates ``found`` (B, k) of each latent, by ``self.pick``."""
        if self.pick != "softmax_mse":
            rule = "softmax" if self.pick == "softmax_distance" else "uniform"
            return pick_neighbor(dist.cpu(), found.cpu(), pick=rule, generator=generator)
        # The official weights: mean squared difference per latent element on the raw latents
        # (bn_channel: on the latents standardised with the reference's statistics).
        batch, k = found.shape
        flat = z.reshape(batch, 1, -1).to(torch.float32)
        candidates = self._rows(found.reshape(-1)).to(flat.device, torch.float32)
        stats = self._search_statistics
        if stats is not None:
            mse = candidate_mse(flat[:, 0], candidates.reshape(batch, k, -1), stats)
        else:
            mse = (candidates.reshape(batch, k, -1) - flat).pow(2).mean(dim=2)
        return pick_neighbor(mse.cpu(), found.cpu(), pick="softmax", generator=generator)

    # ------------------------------------------------------------------ internals
    def _check_images(self, images: Tensor) -> float:
        if not isinstance(images, Tensor):
            raise TypeError(
                f"images must be a torch.Tensor, got {type(images).__name__}; convert them with "
                "torch.as_tensor(...) (shape (B, C, H, W), float, in input_range)."
            )
        if images.ndim != 4:
            hint = (
                "; add the batch dimension with images.unsqueeze(0)"
                if images.ndim == 3
                else "; stack single images into one (B, C, H, W) batch"
            )
            raise ValueError(
                f"images must have shape (B, C, H, W), got {tuple(images.shape)}{hint}."
            )
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch (B = 0); skip empty batches.")
        if not images.is_floating_point():
            raise TypeError(
                f"images must be floating point in input_range={self.input_range}, got "
                f"{images.dtype}; convert uint8 images with images.float() / 127.5 - 1."
            )
        # (B, H, W, C): a last axis of 1/3/4 channels behind two image-sized axes.
        if images.shape[-1] in (1, 3, 4) and min(images.shape[1:3]) > 4:
            raise ValueError(
                f"images of shape {tuple(images.shape)} look channels-last (B, H, W, C); the "
                "metric takes (B, C, H, W): use images.permute(0, 3, 1, 2)."
            )
        if self._channels is not None and images.shape[1] != self._channels:
            raise ValueError(
                f"images have {images.shape[1]} channels but earlier batches of this round had "
                f"{self._channels}; pass images of one channel count per round (reset() starts a "
                "new round)."
            )
        if images.device != self.device:
            raise ValueError(
                f"images are on {images.device} but the metric is on {self.device}; move the metric "
                f"with metric.to({str(images.device)!r})."
            )
        vae_device = self.vae.device()
        if vae_device is not None and vae_device != images.device:
            raise ValueError(
                f"images are on {images.device} but the VAE is on {vae_device}; move the VAE "
                f"(vae.to({str(images.device)!r})) or the images and the metric to {vae_device}."
            )
        if not torch.isfinite(images).all():
            bad = int((~torch.isfinite(images)).flatten(1).any(1).sum())
            raise ValueError(
                f"images contain NaN or Inf ({bad} of {images.shape[0]} images); fix or drop those "
                "images (check the data loading and normalisation) before update()."
            )
        low, high = self.input_range
        lo, hi = float(images.min()), float(images.max())
        if lo < low - self.range_tolerance or hi > high + self.range_tolerance:
            raise ValueError(
                f"images span [{lo:.4g}, {hi:.4g}] but input_range is {self.input_range}; rescale "
                "them (e.g. x * 2 - 1 for [0, 1] images) or set input_range."
            )
        return lo

    def _warn_if_only_upper_half(self) -> None:
        """Images in [0, 1] fit inside the default (-1, 1) and pass every check, but the VAE and
        the features then see them shifted and compressed. A whole round of images without one
        value below 0 is the mark of that mistake (natural images have dark pixels)."""
        low, high = self.input_range
        if self._queries_seen and low < 0 < high and self._round_low >= 0:
            warnings.warn(
                f"No image of this round has a value below 0, but input_range is "
                f"{self.input_range}: images in [0, 1] (e.g. from ToTensor) must be rescaled with "
                "x * 2 - 1, or pass input_range=(0, 1). If your images really are that bright, "
                "ignore this warning.",
                UserWarning,
                stacklevel=4,  # the caller of compute(), through torchmetrics' wrapper
            )

    def _warn_if_reference_scale_differs(self, z: Tensor) -> None:
        """Reference latents on another scale than the queries' (a bank filled with latents
        multiplied by a diffusion ``scaling_factor``, or from another VAE) pass every shape check,
        but slerp and linear mixing then blend vectors of unlike size. Warned once."""
        reference = self._reference_scale
        if self._scale_warned or reference is None or not reference > 0:
            return
        ratio = _median_norm(z.reshape(z.shape[0], -1)) / reference
        if 0.5 <= ratio <= 2.0:
            return
        self._scale_warned = True
        sampled = (
            " The queries are posterior samples (sample_posterior=True): a bank of posterior "
            "means from a VAE with a wide posterior differs from them in the same way."
            if self.vae.sample_posterior
            else ""
        )
        warnings.warn(
            f"The query latents are {ratio:.3g}x the size of the reference latents (median norms "
            f"{ratio * reference:.4g} and {reference:.4g}): the bank holds latents on another scale "
            "than this VAE's encode() gives, e.g. latents multiplied by a diffusion scaling_factor "
            "or made by other weights. Fill the bank with the raw latents "
            f"(vae.encode(x).latent_dist.mean for a diffusers VAE), as the queries are.{sampled}",
            UserWarning,
            stacklevel=4,  # the caller of update(), through torchmetrics' wrapper
        )

    def _check_latents_fit_bank(self, images: Tensor, z: Tensor) -> None:
        """Latents of another shape than the bank's: say whether the image size is the cause."""
        bank = self.bank
        if bank is None or len(bank) == 0 or bank.latent_shape == tuple(z.shape[1:]):
            return
        size = tuple(images.shape[-2:])
        raise ValueError(
            f"images of size {size[0]}x{size[1]} give latents of shape {tuple(z.shape[1:])} but "
            f"the bank holds latents of shape {bank.latent_shape}: evaluate images of the size "
            "(and channels) the bank's latents were made from (resize or crop them), or fill the "
            "bank with this VAE's latents of images like these."
        )

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
        z = self.vae.encode(images, generator=generator)
        if not isinstance(z, Tensor) or z.ndim < 2 or z.shape[0] != images.shape[0]:
            raise ValueError(
                f"The encoder must return one latent per image, shape (B, ...); got "
                f"{getattr(z, 'shape', type(z).__name__)} for {images.shape[0]} images; return "
                "the latents (or a posterior) batched like the images."
            )
        if not torch.isfinite(z).all():
            raise ValueError(
                "The encoder returned NaN or Inf latents; check the VAE's weights and inputs."
            )
        return z

    def _decode(self, z: Tensor, channels: int | None = None) -> Tensor:
        x = self.vae.decode(z)
        if x.ndim != 4 or x.shape[0] != z.shape[0]:
            raise ValueError(
                f"The decoder must return one image per latent, (B, C, H, W); got "
                f"{tuple(x.shape)} for {z.shape[0]} latents; return the decoded images batched "
                "(or a diffusers DecoderOutput)."
            )
        channels = channels if channels is not None else self._channels
        if channels is not None and x.shape[1] != channels:
            raise ValueError(
                f"The decoder returns {x.shape[1]} channels but the images have {channels}; "
                "use a decoder that returns images like the encoder takes."
            )
        if not torch.isfinite(x).all():
            raise ValueError("The decoder returned NaN or Inf; check the VAE's weights.")
        return x.clamp(*self.input_range)

    def _features(self, images: Tensor) -> Tensor:
        f = self.feature_net(images)
        if f.ndim != 2 or f.shape != (images.shape[0], self.num_features):
            raise ValueError(
                f"The feature network must return (B, {self.num_features}) = "
                f"({images.shape[0]}, {self.num_features}); got {tuple(f.shape)}; return one "
                "flat feature vector per image, and pass num_features= (or a num_features "
                "attribute) equal to its length."
            )
        if not torch.isfinite(f).all():
            raise ValueError(
                "The feature network returned NaN or Inf; check its weights and that it takes "
                f"images in input_range={self.input_range}."
            )
        return f.to(torch.float64)

    def _decode_and_featurize(
        self,
        z: Tensor,
        z_nn: Tensor | None = None,
        generator: Any = None,
        channels: int | None = None,
        targets: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Decode the interpolants (with ``z_nn``) and, with ``targets`` (the query images) and
        ``compute_rfid``, the reconstructions, in one call; extract features in one pass.

        Returns the sums to add to the states and the per-image rows to append (features of the
        extras, float32).
        """
        batch = z.shape[0]
        with_recon = targets is not None and self.compute_rfid
        latents = [z] if with_recon else []
        if z_nn is not None:
            latents.append(
                interpolate(z, z_nn, self.interpolation, self.alpha, generator=generator)
            )
        decoded = self._decode(torch.cat(latents) if len(latents) > 1 else latents[0], channels)
        feats = self._features(decoded)
        sums: dict[str, Tensor] = {}
        rows: dict[str, Tensor] = {}
        if z_nn is not None:
            sums.update(self._feature_sums("interp", feats[-batch:]))
            if self._per_image:
                rows["interp_feature_rows"] = feats[-batch:].to(torch.float32)
        if with_recon:
            sums.update(self._feature_sums("recon", feats[:batch]))
            if self._per_image:
                rows["recon_feature_rows"] = feats[:batch].to(torch.float32)
            if self.reconstruction_metrics:
                sums.update(self._reconstruction_scores(decoded[:batch], targets))
            if self.lpips_net is not None:
                sums.update(self._lpips_scores(decoded[:batch], targets))
        return sums, rows

    def _lpips_scores(self, recon: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Sum of the per-image LPIPS of one batch and its image count."""
        low, high = self.input_range
        targets = targets.detach().clamp(low, high)  # scored as shown, as PSNR/SSIM
        total = lpips_distances(self.lpips_net, recon.to(targets.dtype), targets)
        count = torch.tensor(targets.shape[0], dtype=torch.long, device=self.device)
        return {"recon_lpips_sum": total, "recon_lpips_scored": count}

    def _reconstruction_scores(self, recon: Tensor, targets: Tensor) -> dict[str, Tensor]:
        """Sums of per-image PSNR, SSIM and MSE of one batch (torchmetrics' definitions)."""
        low, high = self.input_range
        # Images may stray range_tolerance outside input_range: score them as shown (clamped).
        targets = targets.detach().clamp(low, high)
        with_ssim = min(targets.shape[-2:]) >= _SSIM_MIN_SIDE
        if not with_ssim and not self._warned_ssim:
            self._warned_ssim = True
            warnings.warn(
                f"SSIM needs images of at least {_SSIM_MIN_SIDE}x{_SSIM_MIN_SIDE} pixels, got "
                f"{tuple(targets.shape[-2:])}: only PSNR and MSE are reported.",
                UserWarning,
                stacklevel=4,
            )
        found = reconstruction_sums(
            recon.to(targets.dtype), targets, self.input_range, ssim=with_ssim
        )
        count = found.count.to(self.device)
        return {
            "recon_psnr_sum": found.psnr,
            "recon_ssim_sum": found.ssim if with_ssim else torch.zeros_like(found.psnr),
            "recon_mse_sum": found.mse,
            "recon_scored": count,
            "recon_ssim_scored": count if with_ssim else torch.zeros_like(count),
        }

    def _append_rows(self, rows: dict[str, Tensor]) -> None:
        for key, value in rows.items():
            getattr(self, key).append(value.detach().to(self.device))

    @staticmethod
    def _feature_sums(name: str, f: Tensor) -> dict[str, Tensor]:
        return {
            f"{name}_features_sum": f.sum(0),
            f"{name}_features_cov_sum": f.T @ f,
            f"{name}_num_samples": torch.tensor(f.shape[0], dtype=torch.long, device=f.device),
        }

    def _accumulate(self, new: dict[str, Tensor]) -> None:
        for key, value in new.items():
            setattr(self, key, getattr(self, key) + value.to(self.device))

    def _compute_self_reference(
        self, sums: dict[str, Tensor]
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        """bank=None: search all queries among all queries (self excluded), sharded over ranks.

        Returns the interpolants' sums and, with the per-image extras, their (N, d) float32
        feature rows in the order of the (gathered) queries.
        """
        latents = self.query_latents
        if isinstance(latents, list):
            latents = torch.cat(latents) if latents else torch.empty(0)
        n = latents.shape[0]
        if n < 2:
            raise ValueError(
                f"Without a bank the queries are their own reference; need >= 2, got {n}."
            )
        positions = self.query_positions
        if isinstance(positions, list):
            positions = torch.cat(positions) if positions else torch.empty(0, dtype=torch.long)
        shape = getattr(self, "_latent_shape", (latents.shape[1],))
        ids = torch.arange(n, device=latents.device)
        try:
            return self._search_own_queries(latents, ids, positions.cpu(), shape, sums)
        finally:
            # The index and its snapshot hold a copy of every query latent: free them now.
            self._index = self._rows = self._index_source = None
            self._search_statistics = None

    def _search_own_queries(
        self,
        latents: Tensor,
        ids: Tensor,
        positions: Tensor,
        shape: tuple[int, ...],
        sums: dict[str, Tensor],
    ) -> tuple[dict[str, Tensor], Tensor | None]:
        n = latents.shape[0]
        # Shaped (N, C, ...) so that bn_channel finds the channels; flat latents (N, D) have
        # one channel per element, as in a bank of such latents.
        self.refresh_index(
            latents.reshape(-1, *shape) if len(shape) > 1 else latents[..., None], ids
        )
        world, rank = world_and_rank() if self._is_synced else (1, 0)
        chunk = 64
        partial = {key: torch.zeros_like(value) for key, value in sums.items()}
        rows = None
        if self._per_image:
            # Each rank fills its chunks' rows; the others stay 0, so a sum over ranks is exact.
            rows = torch.zeros(n, self.num_features, dtype=torch.float32, device=self.device)
        # Chunk c goes to rank c % world; each query's random choices come from its position,
        # so the results depend neither on the world size nor on the order of the gathered rows.
        for c, start in enumerate(range(0, n, chunk)):
            if c % world != rank:
                continue
            part = positions[start : start + chunk]
            z = latents[start : start + chunk].to(self.device).reshape(-1, *shape)
            z_nn, _ = self.neighbors(
                z, exclude=ids[start : start + chunk], generator=self._generators(part, "pick")
            )
            mask = self._generators(part, "mask")
            found, found_rows = self._decode_and_featurize(z, z_nn, mask)
            for key, value in found.items():
                partial[key] = partial[key] + value.to(partial[key].device)
            if rows is not None:
                rows[start : start + z.shape[0]] = found_rows["interp_feature_rows"]
        if world > 1:
            partial = {key: all_reduce_sum(value) for key, value in partial.items()}
            if rows is not None:
                rows = all_reduce_sum(rows)
        return partial, rows


def _drop_repeated_rows(vectors: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Keep the first of rows that repeat an earlier row with the same id and the same values.

    Rows that share an id but differ are all kept (ids may repeat); only exact repeats, such as
    one bank present on several ranks, go. Returns the inputs themselves when nothing repeats.
    """
    if len(ids) < 2:
        return vectors, ids
    sorted_ids, order = torch.sort(ids, stable=True)  # a group keeps its rows' original order
    counts = torch.unique_consecutive(sorted_ids, return_counts=True)[1]
    if int(counts.max()) < 2:
        return vectors, ids
    keep = torch.ones(len(ids), dtype=torch.bool, device=ids.device)
    step = max(1, 2**20 // max(vectors.shape[1], 1))
    for offset in range(1, int(counts.max())):  # compare each row with every earlier one of its id
        pairs = (sorted_ids[offset:] == sorted_ids[:-offset]).nonzero().squeeze(1)
        for start in range(0, len(pairs), step):
            p = pairs[start : start + step]
            later, earlier = order[p + offset], order[p]
            same = (vectors[later] == vectors[earlier]).all(dim=1)
            keep[later[same]] = False
    if bool(keep.all()):
        return vectors, ids
    return vectors[keep], ids[keep]


def _snapshot_rows(vectors: Tensor) -> Callable[[Tensor], Tensor]:
    """positions -> rows of the snapshot an index was built from (exactly the rows it found)."""

    def rows(positions: Tensor) -> Tensor:
        return vectors[positions.to(vectors.device)]

    return rows


def _spread_positions(n: int, most: int = 4096) -> Tensor:
    """Up to ``most`` positions spread evenly over ``n`` rows."""
    return torch.linspace(0, n - 1, min(n, most)).round().long().unique()


def _median_norm(rows: Tensor) -> float:
    """Median Euclidean norm of the rows (B, D), in float32."""
    return float(torch.linalg.vector_norm(rows, dim=1, dtype=torch.float32).median())


def _cat_state(state: Any, dtype: torch.dtype, dim: int | None = None) -> Tensor:
    """A ``"cat"`` list state as one tensor (a list before sync, a tensor after)."""
    if isinstance(state, Tensor):
        return state
    if state:
        return torch.cat(state)
    return torch.empty((0,) if dim is None else (0, dim), dtype=dtype)


def _copy_state(state: Any) -> Any:
    return list(state) if isinstance(state, list) else state


def _as_ids(name: str, values: Any, batch: int) -> Tensor | None:
    """(B,) int64 CPU tensor of per-image ids or positions, or None."""
    if values is None:
        return None
    values = torch.as_tensor(values)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(
            f"{name} must be integers (int64), got {values.dtype}; convert with {name}.long()."
        )
    values = values.reshape(-1).to("cpu", torch.long)
    if values.numel() != batch:
        raise ValueError(
            f"got {values.numel()} {name} for {batch} images; pass one per image, shape ({batch},)."
        )
    return values


def _feature_name(net: torch.nn.Module) -> str:
    net = getattr(net, "network", net)  # inside torchmetrics' FeatureShare (a NetworkCache)
    return "inception" if isinstance(net, InceptionFeatures) else type(net).__name__


def _feature_dim(net: torch.nn.Module) -> int:
    try:
        return feature_dim(net, (1, 3, 64, 64))
    except Exception as exc:  # any failure of the probe forward pass means: ask the user
        raise ValueError(
            "Cannot tell the feature dimension of the feature module: give it a `num_features` "
            f"attribute or pass num_features= to InterpolatedFID ({exc})."
        ) from exc


# Child networks whose weights are the user's, not the metric's state: kept out of state_dict.
_NETWORK_CHILDREN = ("feature_net", "lpips_net")


def _lpips_name(net: Any) -> str | None:
    if net is None:
        return None
    net = getattr(net, "net", net)  # the standard LPIPS inside its input-range wrapper
    return (
        type(net).__name__
        if isinstance(net, torch.nn.Module)
        else getattr(net, "__name__", type(net).__name__)
    )


def _drop_feature_net_keys(
    module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any
) -> None:
    prefixes = tuple(f"{prefix}{name}." for name in _NETWORK_CHILDREN)
    for key in [k for k in state_dict if k.startswith(prefixes)]:
        del state_dict[key]


def _ignore_missing_feature_net_keys(module: torch.nn.Module, incompatible_keys: Any) -> None:
    missing = incompatible_keys.missing_keys
    for key in list(missing):
        if any(f".{name}." in f".{key}" for name in _NETWORK_CHILDREN):
            missing.remove(key)
