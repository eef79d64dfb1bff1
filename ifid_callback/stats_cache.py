"""Real-image statistics cached on disk, keyed by everything that changes their numbers.

The real images of an evaluation set give the same FID statistics (float64 feature sum (d,),
outer-product sum (d, d), count; and, for the per-image extras, float32 feature rows (n, d) with
their int64 positions (n,)) every time they go through the same feature network. As StyleGAN3 and
EDM2 do, they are computed once and kept in a file named by a hash of:

- the images' content: the bytes of their files plus how they are loaded (:class:`ImageFolder`'s
  ``size`` and ``center_crop``), or else their pixels after loading (float32, with shapes);
- the feature network: its class, its weights (a SHA-256 of every tensor of its ``state_dict``)
  and its simple settings (``preprocessing``, ``precision``, ``input_range``, a resize ``size``);
- the metric's settings that reach the real-image pass (``input_range``, ``preprocessing``,
  feature dimension) and the order that gives each image its position.

A changed image, network or setting is another key, so it can never read a stale entry. Entries
are ``.npz`` files written to a temporary file and renamed into place (``os.replace``), so a
reader never sees half a file; under torch.distributed only rank 0 reads and writes
(:func:`load_agreed`). :func:`save_adm_npz` / :func:`load_adm_npz` read and write the ``mu``,
``sigma`` reference files of ADM's (guided-diffusion's) evaluator, e.g. for the gFID reference.

The default directory is ``$IFID_STATS_CACHE``, else ``$XDG_CACHE_HOME/ifid_callback/stats``
(default ``~/.cache/ifid_callback/stats``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ifid_callback.distributed import all_reduce_int, world_and_rank

__all__ = [
    "CACHE_ENV",
    "StatsCache",
    "default_cache_dir",
    "images_digest",
    "load_adm_npz",
    "load_agreed",
    "loader_digest",
    "metric_stats_key",
    "network_identity",
    "resolve_stats_cache",
    "save_adm_npz",
    "stats_key",
]

CACHE_ENV = "IFID_STATS_CACHE"
# Bumped whenever the meaning of an entry changes, so older entries are never read as new ones.
FORMAT_VERSION = 1
SUM_KEYS = ("real_features_sum", "real_features_cov_sum", "real_num_samples")
ROW_KEYS = ("real_feature_rows", "real_row_positions")


def default_cache_dir() -> Path:
    """``$IFID_STATS_CACHE``, else ``$XDG_CACHE_HOME/ifid_callback/stats`` (default
    ``~/.cache/ifid_callback/stats``, next to the converted Inception weights)."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ifid_callback" / "stats"


class StatsCache:
    """A directory of real-image statistics, one ``<key>.npz`` per key (see the module).

    Args:
        directory: where the entries live; created at the first write.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory).expanduser()

    def __repr__(self) -> str:
        return f"StatsCache({str(self.directory)!r})"

    def path(self, key: str) -> Path:
        """The file of ``key`` (a hex digest from :func:`stats_key`)."""
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"a cache key is a lowercase hex digest (stats_key()), got {key!r}.")
        return self.directory / f"{key}.npz"

    def load(self, key: str, need_rows: bool = False) -> dict[str, Tensor] | None:
        """The statistics stored under ``key`` as tensors, or None when there are none (or only
        sums while ``need_rows`` asks for the per-image rows too, or the file is unreadable: a
        damaged entry is recomputed and overwritten, never trusted)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                names = [name for name in data.files if name != "meta"]
                stats = {name: torch.from_numpy(data[name].copy()) for name in names}
        except (OSError, ValueError, KeyError, EOFError, TypeError):
            return None
        if any(name not in stats for name in SUM_KEYS):
            return None
        if need_rows and any(name not in stats for name in ROW_KEYS):
            return None
        return stats

    def save(
        self, key: str, stats: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None
    ) -> Path:
        """Write ``stats`` (tensors by name) under ``key`` atomically: a temporary file in the
        same directory, renamed into place, so concurrent readers see the old entry or the
        whole new one. ``meta`` (JSON-able) is stored alongside for people reading the cache."""
        arrays = {name: _as_array(value) for name, value in stats.items()}
        arrays["meta"] = np.array(json.dumps(dict(meta or {}), sort_keys=True, default=str))
        return atomic_savez(self.path(key), arrays)

    def load_or_compute(
        self,
        key: str,
        compute: Callable[[], Mapping[str, Tensor]],
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Tensor]:
        """The entry of ``key``, computed by ``compute()`` and saved when absent.

        Under torch.distributed rank 0 alone computes and writes while the others wait at a
        barrier and then read its file (the directory must be shared by the ranks).
        """
        world, rank = world_and_rank()
        found = self.load(key) if rank == 0 else None
        if found is None and rank == 0:
            found = {name: torch.as_tensor(v) for name, v in compute().items()}
            self.save(key, found, meta)
        if world > 1:
            torch.distributed.barrier()
            if rank != 0:
                found = self.load(key)
                if found is None:
                    raise RuntimeError(
                        f"rank {rank} cannot read {self.path(key)} that rank 0 wrote: give every "
                        "rank the same stats cache directory on a shared file system."
                    )
        return found  # type: ignore[return-value]


def atomic_savez(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``np.savez`` to ``path`` through a temporary file in its directory and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def resolve_stats_cache(spec: Any) -> StatsCache | None:
    """A cache from ``spec``: None or False (no cache), True (:func:`default_cache_dir`), a
    directory (str or path) or a :class:`StatsCache`."""
    if spec is None or spec is False:
        return None
    if spec is True:
        return StatsCache(default_cache_dir())
    if isinstance(spec, StatsCache):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return StatsCache(spec)
    raise TypeError(
        f"real_stats_cache must be None, True, a directory or a StatsCache, got "
        f"{type(spec).__name__}; pass e.g. real_stats_cache='~/.cache/ifid_callback/stats'."
    )


# ---------------------------------------------------------------------------------- keys
def stats_key(**parts: Any) -> str:
    """SHA-256 hex digest of ``parts`` as canonical JSON (sorted keys) plus the format version."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def weights_digest(net: nn.Module) -> str:
    """SHA-256 of every tensor of ``net.state_dict()`` (names, dtypes, shapes and bytes)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        if not isinstance(tensor, Tensor) or tensor.is_meta:
            continue
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def network_identity(net: Any) -> dict[str, Any]:
    """What a feature network's numbers depend on: its class, its weights' digest and its plain
    public settings (``preprocessing``, ``precision``, ``input_range``, ``size``, ...); a
    ``FeatureShare`` wrapper is looked through. A callable that is no ``nn.Module`` is
    identified by its qualified name only."""
    net = getattr(net, "network", net) if type(net).__name__ == "NetworkCache" else net
    cls = type(net)
    identity: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    if isinstance(net, nn.Module):
        identity["weights"] = weights_digest(net)
        identity["settings"] = _plain_settings(net)
        # Layers' settings (strides, eps, ...) count too; one digest keeps the key readable.
        inner = {name: _plain_settings(m) for name, m in net.named_modules() if name}
        identity["layers"] = hashlib.sha256(
            json.dumps(inner, sort_keys=True, default=str).encode()
        ).hexdigest()
    return identity


def _plain_settings(module: nn.Module) -> dict[str, Any]:
    """A module's public attributes of plain types (its configuration, not its tensors)."""
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and name != "training" and _plain(value)
    }


def images_digest(batches: Iterable[Tensor]) -> tuple[str, int]:
    """SHA-256 of image batches (B, C, H, W) as float32 pixels with their shapes, in order, and
    the number of images."""
    digest, count = hashlib.sha256(), 0
    for images in batches:
        flat = images.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{tuple(flat.shape[1:])}|".encode())
        digest.update(flat.numpy().tobytes())
        count += flat.shape[0]
    return digest.hexdigest(), count


def _folder_and_indices(dataset: Any) -> tuple[Any, list[int]] | None:
    """The :class:`ImageFolder` under ``dataset`` (itself, or through ``Subset``s) and the file
    indices it reads, in order; None for any other dataset."""
    from torch.utils.data import Subset

    from ifid_callback.image_folder import ImageFolder

    indices: list[int] | None = None
    while isinstance(dataset, Subset):
        outer = indices
        inner = [int(i) for i in dataset.indices]
        indices = inner if outer is None else [inner[i] for i in outer]
        dataset = dataset.dataset
    if type(dataset) is not ImageFolder:  # a subclass may load its files otherwise
        return None
    return dataset, (indices if indices is not None else list(range(len(dataset))))


def folder_digest(dataset: Any, limit: int | None = None) -> tuple[str, int] | None:
    """SHA-256 of the files an :class:`ImageFolder` (or a ``Subset`` of one) reads, in order
    (their bytes, not their names), with its loading settings, and the number of images; None
    for another dataset. Reading file bytes is much cheaper than decoding the images."""
    found = _folder_and_indices(dataset)
    if found is None:
        return None
    folder, indices = found
    indices = indices[:limit] if limit is not None else indices
    digest = hashlib.sha256()
    loading = {"size": folder.size, "center_crop": folder.center_crop, "reader": "ImageFolder/1"}
    digest.update(json.dumps(loading, sort_keys=True).encode())
    for i in indices:
        data = folder.paths[i].read_bytes()
        digest.update(f"|{len(data)}|".encode())
        digest.update(data)
    return digest.hexdigest(), len(indices)


def loader_digest(
    loader: Any, images_of: Callable[[Any], Tensor], limit: int | None = None
) -> tuple[str, int]:
    """Content digest of the first ``limit`` images a loader yields (all without a limit), and
    their number: the file bytes of an unshuffled loader over an :class:`ImageFolder`, else
    the pixels of one pass over the loader (see :func:`images_digest`); ``images_of`` takes
    the image tensor (B, C, H, W) out of a batch.

    Raises:
        ValueError: the loader shuffles (its images would come in another order next time).
    """
    from torch.utils.data import SequentialSampler

    sampler = getattr(loader, "sampler", None)
    if sampler is not None and not isinstance(sampler, SequentialSampler):
        raise ValueError(
            f"the query loader draws with a {type(sampler).__name__}: its images come in "
            "another order each pass, so cached real statistics cannot be tied to them. Use "
            "shuffle=False, or real_stats_cache=None."
        )
    if sampler is not None:
        found = folder_digest(getattr(loader, "dataset", None), limit)
        if found is not None:
            return found

    def batches() -> Iterable[Tensor]:
        seen = 0
        for batch in loader:
            images = images_of(batch)
            if limit is not None:
                images = images[: limit - seen]
            if images.shape[0] == 0:
                return
            seen += images.shape[0]
            yield images

    return images_digest(batches())


def metric_stats_key(metric: Any, content: str, num_images: int, order: str) -> tuple[str, dict]:
    """The cache key of ``metric``'s real statistics for images of digest ``content``, and the
    description it hashes. ``order`` names how images get their positions (the per-image rows
    are paired with decodes by position), e.g. ``"loader order"``."""
    parts = {
        "content": content,
        "num_images": int(num_images),
        "order": order,
        "network": network_identity(metric.feature_net),
        "num_features": int(metric.num_features),
        "input_range": [float(v) for v in metric.input_range],
        "preprocessing": metric.preprocessing,
    }
    return stats_key(**parts), parts


# ---------------------------------------------------------------------------- metric glue
def load_agreed(
    cache: StatsCache, key: str, need_rows: bool, like: Mapping[str, Tensor] | None = None
) -> dict[str, Tensor] | None:
    """The entry of ``key`` as this rank should install it, or None on every rank when absent.

    Rank 0 reads the file and the ranks agree on hit or miss (a collective under
    torch.distributed); a hit gives rank 0 the whole statistics and every other rank zero sums
    and no rows, as :meth:`InterpolatedFID.load_real_statistics` wants them.
    """
    world, rank = world_and_rank()
    stats = cache.load(key, need_rows) if rank == 0 else None
    if world > 1:
        # Rank 0's answer decides: the other ranks vote yes, the minimum is rank 0's.
        hit = all_reduce_int(int(stats is not None) if rank == 0 else 1, op="min")
        if not hit:
            return None
        if rank != 0:
            return _empty_like(like, need_rows)
    return stats


def _empty_like(like: Mapping[str, Tensor] | None, need_rows: bool) -> dict[str, Tensor]:
    if like is None:
        raise ValueError("load_agreed needs `like` (the metric's real_statistics()) under DDP.")
    out = {name: torch.zeros_like(like[name]) for name in SUM_KEYS}
    if need_rows:
        d = like["real_features_sum"].shape[0]
        out["real_feature_rows"] = torch.zeros(0, d, dtype=torch.float32)
        out["real_row_positions"] = torch.zeros(0, dtype=torch.long)
    return out


# ------------------------------------------------------------------------- ADM .npz files
def save_adm_npz(path: str | os.PathLike, mu: Any, sigma: Any) -> Path:
    """Write a reference in ADM's (guided-diffusion ``evaluator.py``) layout: ``mu`` (d,) and
    ``sigma`` (d, d) float64, atomically."""
    mu_a, sigma_a = _as_array(mu).astype(np.float64), _as_array(sigma).astype(np.float64)
    _check_mu_sigma(mu_a, sigma_a, str(path))
    return atomic_savez(Path(path), {"mu": mu_a, "sigma": sigma_a})


def load_adm_npz(path: str | os.PathLike) -> tuple[Tensor, Tensor]:
    """``(mu (d,), sigma (d, d))`` float64 from an ADM-style ``.npz`` (other arrays, e.g. ADM's
    ``arr_0`` or spatial ``mu_s``/``sigma_s``, are ignored)."""
    with np.load(Path(path), allow_pickle=False) as data:
        missing = [name for name in ("mu", "sigma") if name not in data.files]
        if missing:
            raise ValueError(
                f"{path} has no {missing} (it holds {data.files}); an ADM reference batch "
                "stores the Inception statistics as 'mu' (d,) and 'sigma' (d, d)."
            )
        mu, sigma = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    _check_mu_sigma(mu, sigma, str(path))
    return torch.from_numpy(mu), torch.from_numpy(sigma)


def statistics_from_sums(stats: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
    """``(mu, sigma)`` (unbiased covariance) from cached sums, for :func:`save_adm_npz`."""
    from ifid_callback.functional.frechet import gaussian_statistics

    return gaussian_statistics(*(torch.as_tensor(stats[name]) for name in SUM_KEYS))


def _check_mu_sigma(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(
            f"{where}: mu must be (d,) and sigma (d, d), got {mu.shape} and {sigma.shape}."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{where}: mu or sigma contains NaN or Inf.")


def _as_array(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.detach().to("cpu").numpy()
    return np.asarray(value)


class RealStatsSlot:
    """One metric's real statistics under one cache key: installed on a hit, stored after the
    pass that computed them on a miss.

    Args:
        cache: the cache.
        metric: an :class:`~ifid_callback.metric.InterpolatedFID` (its feature network and
            settings go into the key; per-image rows are kept when its extras use them).
        content: the images' digest (:func:`loader_digest`, :func:`images_digest`).
        num_images: how many images the digest covers.
        order: how the images get their positions, e.g. ``"loader order"``.
    """

    def __init__(
        self, cache: StatsCache, metric: Any, content: str, num_images: int, order: str
    ) -> None:
        self.cache, self.metric, self.num_images = cache, metric, int(num_images)
        self.key, self.parts = metric_stats_key(metric, content, num_images, order)
        self.need_rows = bool(metric._per_image)
        self.hit = False

    def install(self) -> bool:
        """Load the entry into the metric (its next updates skip the real-image features);
        returns whether there was one. Collective under torch.distributed."""
        like = self.metric.real_statistics()
        stats = load_agreed(self.cache, self.key, self.need_rows, like)
        if stats is not None:
            self.metric.load_real_statistics(stats)
            self.hit = True
        return self.hit

    def store(self, stats: Mapping[str, Tensor]) -> Path | None:
        """Write the global real statistics of all ``num_images`` images (sums, and rows with
        their positions when the metric uses them), from rank 0 only; nothing on a hit."""
        if self.hit or world_and_rank()[1] != 0:
            return None
        count = int(torch.as_tensor(stats["real_num_samples"]))
        if count != self.num_images:  # an internal invariant: never store a partial set
            raise RuntimeError(
                f"real statistics of {count} images for a cache entry of {self.num_images}."
            )
        keys = SUM_KEYS + (ROW_KEYS if self.need_rows else ())
        return self.cache.save(self.key, {k: stats[k] for k in keys}, self.parts)
