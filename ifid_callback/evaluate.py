"""One-call offline evaluation of a VAE: iFID and rFID over data loaders, with progress bars."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ifid_callback.bank import LatentBank
from ifid_callback.metric import InterpolatedFID


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
        device: where the metric runs (default: the VAE's device, else CPU).
        progress: show tqdm progress bars.
        **metric_kwargs: passed to :class:`InterpolatedFID` (feature, interpolation, alpha, k,
            index, preset, seed, ...).

    Returns:
        ``{"ifid", "rfid", "num_images", "bank_size"}`` as Python numbers.
    """
    if query_loader is None:
        raise ValueError("query_loader is required: an iterable of image batches.")
    metric = InterpolatedFID(encoder=encoder, decoder=decoder, vae=vae, bank=None, **metric_kwargs)
    if device is None:
        device = metric.vae.device() or torch.device("cpu")
    metric = metric.to(device)
    bank = None
    if reference_loader is not None and stream_reference:
        index_kind = metric_kwargs.get("index", "auto")
        index = _stream_reference(
            metric, reference_loader, device, index_kind, memory_budget_bytes, progress
        )
        metric.bank = None
        metric.set_reference(index, _reencoder(metric, reference_loader, device))
        bank_size = len(index)
    elif reference_loader is not None:
        capacity = bank_capacity or _length(reference_loader) or 1_000_000
        bank = LatentBank(capacity=capacity, dtype=bank_dtype, device=device)
        with torch.no_grad():
            done = 0  # reference positions key the posterior samples, as in the streamed path
            for batch in tqdm(reference_loader, desc="encode reference", disable=not progress):
                images = images_of(batch).to(device)
                keys = torch.arange(done, done + images.shape[0])
                bank.add(metric._encode(images, keys, stream="reference"))
                done += images.shape[0]
        metric.bank = bank
        bank_size = len(bank)
    seen = 0
    bar = tqdm(total=max_images, desc="iFID queries", unit="img", disable=not progress)
    for batch in query_loader:
        images = images_of(batch).to(device)
        if max_images is not None:
            images = images[: max_images - seen]
        if images.shape[0] == 0:
            break
        metric.update(images)
        seen += images.shape[0]
        bar.update(images.shape[0])
        if max_images is not None and seen >= max_images:
            break
    bar.close()
    result = {key: float(value) for key, value in metric.compute().items()}
    result["num_images"] = seen
    result["bank_size"] = bank_size if reference_loader is not None else seen
    return result


def _stream_reference(metric, loader, device, index_kind, budget, progress):
    from ifid_callback.index import NeighborIndex

    def latents():
        done = 0
        with torch.no_grad():
            for batch in tqdm(loader, desc="index reference", disable=not progress):
                images = images_of(batch).to(device)
                # Keyed by dataset index: the re-encoding of a neighbour gives this very latent.
                keys = torch.arange(done, done + images.shape[0])
                z = metric._encode(images, keys, stream="reference")
                done += images.shape[0]
                yield z.reshape(z.shape[0], -1)

    index = NeighborIndex(
        index=index_kind, distance=metric.distance, memory_budget_bytes=budget, seed=metric.seed
    )
    return index.build_streaming(latents(), total=_length(loader))


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


def _length(loader: Any) -> int | None:
    dataset = getattr(loader, "dataset", None)
    try:
        return len(dataset) if dataset is not None else len(loader)
    except TypeError:
        return None
