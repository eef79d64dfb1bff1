"""One-call offline evaluation of a VAE: iFID and rFID over data loaders, with progress bars."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ifid_callback.bank import LatentBank
from ifid_callback.metric import InterpolatedFID
from ifid_callback.stats_cache import RealStatsSlot, loader_digest, resolve_stats_cache


def images_of(batch: Any) -> Tensor:
    """The image tensor of a batch: a tensor, the first item of a tuple/list, or a dict entry
    ``"pixel_values"``/``"images"``/``"image"``."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, Mapping):
        for key in ("pixel_values", "images", "image", "x"):
            if key in batch:
                return batch[key]
        raise KeyError(
            f"No image entry in batch keys {sorted(batch)}; use 'pixel_values' or 'images'."
        )
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    raise TypeError(f"Cannot find images in a batch of type {type(batch).__name__}.")


def evaluate_vae(
    vae: Any = None,
    query_loader: Iterable[Any] | None = None,
    reference_loader: Iterable[Any] | None = None,
    *,
    encoder: Any = None,
    decoder: Any = None,
    max_images: int | None = None,
    bank_capacity: int | None = None,
    bank_dtype: str = "fp32",
    device: torch.device | str | None = None,
    progress: bool = True,
    stream_reference: bool = False,
    memory_budget_bytes: int | None = None,
    exclude_self: bool = False,
    real_stats_cache: Any = None,
    **metric_kwargs: Any,
) -> dict[str, float]:
    """Evaluate iFID and rFID of a VAE over a query loader.

    Args:
        vae: object with ``encode``/``decode`` (e.g. diffusers ``AutoencoderKL``), or None when
            ``encoder``/``decoder`` callables are given.
        query_loader: iterable of image batches (B, C, H, W) in the metric's ``input_range``
            (tensors, tuples whose first item is the images, or dicts with ``pixel_values``).
        reference_loader: optional iterable of batches whose latents form the neighbour bank;
            None uses the query images themselves as the reference (self excluded).
        max_images: stop after this many query images.
        bank_capacity: bank rows (default: all reference images, up to 1,000,000).
        bank_dtype: bank storage dtype ("fp32", "fp16", "bf16").
        stream_reference: for a reference set too large for memory: stream its latents into a
            compressed nearest-neighbour index (``NeighborIndex.build_streaming``, within
            ``memory_budget_bytes``) and keep no latents; each query's neighbour is re-encoded
            from the reference dataset by index (one extra encode per query). Needs a map-style,
            unshuffled ``reference_loader.dataset``.
        memory_budget_bytes: byte budget of the streamed index (selects SQ8 or PQ codes).
        exclude_self: a reference set may contain the query images (found by their pixels): a
            query never takes a reference row with its own pixels as neighbour. Without it such
            a reference set is refused, since every query would find itself (iFID = rFID).
        device: where the metric runs (default: the VAE's device, else CPU).
        progress: show tqdm progress bars.
        real_stats_cache: keep the query images' real statistics on disk
            (:mod:`~ifid_callback.stats_cache`): a directory, a ``StatsCache``, True (the
            per-user default directory) or None (off). A later evaluation of the same images
            with the same feature network and settings skips their feature pass. The images are
            identified by their file bytes (an unshuffled loader over an ``ImageFolder``) or
            else by their pixels (one extra pass over the loader); a shuffling loader is refused.
            Only the first feature space's statistics are cached: further spaces
            (``feature=("inception", "dinov2")``) compute their real features in every run.
        **metric_kwargs: passed to :class:`InterpolatedFID` (feature, interpolation, alpha, k,
            index, preset, seed, uncertainty, reconstruction_metrics, kid, precision_recall, ...).

    Returns:
        Every number the metric computes (``"ifid"``, ``"rfid"`` and the extras that are on:
        ``"ifid_std"``, ``"rfid_std"``, ``"psnr"``, ``"ssim"``, ``"mse"`` by default (``"psnr"``
        is +inf for pixel-exact reconstructions; ``ifid eval --json`` writes that as ``null``
        with ``"psnr_lossless": true``, see :mod:`ifid_callback.json_numbers`);
        ``"ikid"``, ``"rkid"``, ... with ``kid=True``; ``"iprecision"``, ``"irecall"`` with
        ``precision_recall=True``), and ``"num_images"``, ``"bank_size"``, ``"self_matches"``,
        ``"exclude_self"``, ``"duplicate_queries"``: ``self_matches`` counts the queries whose
        pixels are also in the reference set; ``duplicate_queries`` (without a reference set)
        the queries whose pixels repeat an earlier query's: copies of one image are never each
        other's neighbour (they are one image), and every copy still counts in the FIDs; with
        ``real_stats_cache``, ``"real_stats_cached"`` (True when the real statistics came from
        the cache).

    Raises:
        ValueError: the reference set contains query images and ``exclude_self`` is False.
    """
    if query_loader is None:
        raise ValueError("query_loader is required: an iterable of image batches.")
    metric = InterpolatedFID(encoder=encoder, decoder=decoder, vae=vae, bank=None, **metric_kwargs)
    if device is None:
        device = metric.vae.device() or torch.device("cpu")
    metric = metric.to(device)
    slot = _real_stats_slot(real_stats_cache, metric, query_loader, max_images)
    bank = None
    # Reference images by content (digest -> id of the row with those pixels), to find queries
    # that are in the reference set.
    contents = _Contents()
    if reference_loader is not None and stream_reference:
        if metric.search_norm is not None:
            raise ValueError(
                f"search_norm={metric.search_norm!r} is not available with stream_reference "
                "(ifid eval --stream-reference): the streamed index keeps no per-channel "
                "statistics; drop one of the two."
            )
        index_kind = metric_kwargs.get("index", "auto")
        index = _stream_reference(
            metric, reference_loader, device, index_kind, memory_budget_bytes, progress, contents
        )
        metric.bank = None
        metric.set_reference(index, _reencoder(metric, reference_loader, device))
        bank_size = len(index)
    elif reference_loader is not None:
        bank = _encode_reference(
            metric, reference_loader, device, bank_capacity, bank_dtype, progress, contents
        )
        contents.keep(bank.ids)  # rows that a full FIFO pushed out are not in the reference
        metric.bank = bank
        bank_size = len(bank)
    seen = 0
    self_matches = 0
    bar = tqdm(total=max_images, desc="iFID queries", unit="img", disable=not progress)
    for batch in query_loader:
        images = images_of(batch).to(device)
        if max_images is not None:
            images = images[: max_images - seen]
        if images.shape[0] == 0:
            break
        own = contents.find(images)  # (B,) id of the reference row with these pixels, or -1
        found = int((own >= 0).sum())
        if found and not exclude_self:
            first = seen + int((own >= 0).nonzero()[0, 0])
            raise ValueError(
                f"Query image #{first} (and {found - 1} more of this batch) is also in the "
                "reference set (the same pixels): each such query would find itself as its "
                "nearest neighbour, so iFID would collapse towards rFID. Pass "
                "exclude_self=True (ifid eval --exclude-self) to never match a query with its "
                "own copy, or use a reference set without the query images."
            )
        if found and contents.repeated(images) and stream_reference:
            raise ValueError(
                "A query image appears more than once in the streamed reference set; only one "
                "copy can be excluded there. Remove duplicate images from the reference set, or "
                "evaluate without stream_reference."
            )
        positions = torch.arange(seen, seen + images.shape[0])  # keys the random choices
        metric.update(images, ids=own if found else None, positions=positions)
        self_matches += found
        seen += images.shape[0]
        bar.update(images.shape[0])
        if max_images is not None and seen >= max_images:
            break
    bar.close()
    result = {key: float(value) for key, value in metric.compute().items()}
    if slot is not None:
        slot.store(metric.real_statistics(per_image=slot.need_rows))
        result["real_stats_cached"] = slot.hit
    result["num_images"] = seen
    result["bank_size"] = bank_size if reference_loader is not None else seen
    result["self_matches"] = self_matches
    result["exclude_self"] = bool(exclude_self)
    result["duplicate_queries"] = metric.last_duplicate_queries if reference_loader is None else 0
    return result


def _real_stats_slot(spec: Any, metric: InterpolatedFID, loader: Any, max_images: int | None):
    """The query images' cache entry, installed in ``metric`` when present; None without a
    cache."""
    cache = resolve_stats_cache(spec)
    if cache is None:
        return None
    content, count = loader_digest(loader, images_of, max_images)
    # evaluate_vae gives the queries the positions 0, 1, ... in loader order.
    slot = RealStatsSlot(cache, metric, content, count, order="loader order")
    slot.install()
    return slot


def _encode_reference(metric, loader, device, capacity, dtype, progress, contents) -> LatentBank:
    """A bank of the reference set's latents; all of them unless ``capacity`` is given."""
    capacity = capacity or _num_images(loader)
    bank = LatentBank(capacity=capacity, dtype=dtype, device=device) if capacity else None
    held: list[tuple[Tensor, Tensor]] = []  # size unknown (a plain iterable): count first
    done = 0  # reference positions key the posterior samples, as in the streamed path
    with torch.no_grad():
        for batch in tqdm(loader, desc="encode reference", disable=not progress):
            images = images_of(batch)
            # Rows with the same pixels share one id, so excluding it excludes every copy.
            ids = contents.add(images, shared=True)
            keys = torch.arange(done, done + images.shape[0])
            z = metric._encode(images.to(device), keys, stream="reference")
            done += images.shape[0]
            if bank is None:
                held.append((z, ids))
            else:
                bank.add(z, ids=ids.to(bank.device))
    if bank is None:
        rows = sum(z.shape[0] for z, _ in held)
        if rows == 0:
            raise ValueError("reference_loader gave no images.")
        bank = LatentBank(capacity=rows, dtype=dtype, device=device)
        for z, ids in held:
            bank.add(z, ids=ids.to(bank.device))
    return bank


class _Contents:
    """Images identified by their pixels (a digest of the tensor's bytes) -> reference row id."""

    def __init__(self) -> None:
        self._ids: dict[bytes, int] = {}
        self._repeated: set[bytes] = set()
        self._rows = 0

    @staticmethod
    def _digests(images: Tensor) -> list[bytes]:
        flat = images.detach().to("cpu", torch.float32).contiguous().reshape(images.shape[0], -1)
        return [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in flat]

    def add(self, images: Tensor, shared: bool) -> Tensor:
        """Record a batch of reference images; returns their row ids (arrival positions, or,
        with ``shared``, the position of the first row with the same pixels)."""
        ids = []
        for digest in self._digests(images):
            if digest in self._ids:
                self._repeated.add(digest)
            else:
                self._ids[digest] = self._rows
            ids.append(self._ids[digest] if shared else self._rows)
            self._rows += 1
        return torch.tensor(ids, dtype=torch.long)

    def keep(self, present: Tensor) -> None:
        alive = set(present.tolist())
        self._ids = {d: i for d, i in self._ids.items() if i in alive}

    def find(self, images: Tensor) -> Tensor:
        if not self._ids:
            return torch.full((images.shape[0],), -1, dtype=torch.long)
        return torch.tensor([self._ids.get(d, -1) for d in self._digests(images)])

    def repeated(self, images: Tensor) -> bool:
        return bool(self._repeated) and any(d in self._repeated for d in self._digests(images))


def _stream_reference(metric, loader, device, index_kind, budget, progress, contents):
    from ifid_callback.index import NeighborIndex

    def latents():
        done = 0
        with torch.no_grad():
            for batch in tqdm(loader, desc="index reference", disable=not progress):
                images = images_of(batch)
                contents.add(images, shared=False)  # ids are dataset positions here
                # Keyed by dataset index: the re-encoding of a neighbour gives this very latent.
                keys = torch.arange(done, done + images.shape[0])
                z = metric._encode(images.to(device), keys, stream="reference")
                done += images.shape[0]
                yield z.reshape(z.shape[0], -1)

    index = NeighborIndex(
        index=index_kind, distance=metric.distance, memory_budget_bytes=budget, seed=metric.seed
    )
    return index.build_streaming(latents(), total=_num_images(loader))


def _reencoder(metric, loader, device):
    from torch.utils.data import SequentialSampler

    dataset = getattr(loader, "dataset", None)
    sampler = getattr(loader, "sampler", None)
    if (
        dataset is None
        or not hasattr(dataset, "__getitem__")
        or not isinstance(sampler, SequentialSampler)
    ):
        raise ValueError(
            "stream_reference=True re-encodes neighbours by dataset index: pass a DataLoader over a "
            "map-style dataset with shuffle=False."
        )

    def lookup(ids):
        images = torch.stack([images_of(_as_batch(dataset[int(i)])) for i in ids]).to(device)
        with torch.no_grad():
            # The same posterior sample as when the index was built (keyed by dataset index).
            return metric._encode(images, torch.as_tensor(ids).reshape(-1), stream="reference")

    return lookup


def _as_batch(item):
    return item if isinstance(item, Tensor) else images_of(item)


def _num_images(loader: Any) -> int | None:
    """Images a loader yields in all, when it says (its dataset's length); None otherwise (the
    length of a plain iterable counts batches, not images)."""
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else None
    except TypeError:
        return None
