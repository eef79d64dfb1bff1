"""Running a metric's feature network inside torchmetrics' ``FeatureShare``, safely.

``FeatureShare`` hands the first metric's network, wrapped in a ``NetworkCache``, to every metric
of the collection, and caches the network's outputs with ``functools.lru_cache`` on the *input
tensor object*. Two things then go wrong for :class:`~ifid_callback.metric.InterpolatedFID`:

- a batch tensor refilled in place (a prefetcher's or a pinned buffer) is the same object with
  other pixels, so it gets the features of the first batch it held;
- the network handed over may take another input range than the metric's images (torchmetrics'
  FID network takes uint8 in [0, 255]), and only a generic warning says so.

This module replaces both: :func:`check_shared_network` refuses, when ``FeatureShare`` installs the
network, one whose input range differs from the metric's, naming both; :func:`cached_features`
looks features up under the tensor object *and* its version counter (bumped by every in-place
write), held in a per-collection cache that a copy of the collection starts empty. The
``lru_cache`` that ``NetworkCache`` put on the network's ``forward`` is removed again: the network
may be the process' shared Inception, and metrics outside the collection must not see its cache.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

try:  # torchmetrics >= 1.3
    from torchmetrics.wrappers.feature_share import NetworkCache
except ImportError:  # pragma: no cover - older torchmetrics has no FeatureShare
    NetworkCache = None  # type: ignore[assignment,misc]


def is_network_cache(module: Any) -> bool:
    """Whether ``module`` is the ``NetworkCache`` that torchmetrics' ``FeatureShare`` installs."""
    return NetworkCache is not None and isinstance(module, NetworkCache)


def network_input_range(net: Any) -> tuple[float, float] | str | None:
    """What ``net`` takes: a float ``(low, high)`` range, ``"uint8 [0, 255]"``, or None when the
    network does not say (a user's own module)."""
    from ifid_callback.feature_share import TorchmetricsFeatures

    if isinstance(net, TorchmetricsFeatures):
        return (0.0, 1.0)  # torchmetrics' FID/KID inputs: float [0, 1] (or uint8)
    module = type(net).__module__
    if module.startswith("torchmetrics.image") or module.startswith("torch_fidelity"):
        return "uint8 [0, 255]"  # torchmetrics' own Inception (NoTrainInceptionV3)
    found = getattr(net, "input_range", None)
    if found is None:
        return None
    low, high = found
    return (float(low), float(high))


def check_shared_network(
    cache: nn.Module, input_range: tuple[float, float], preprocessing: str | None = None
) -> None:
    """Accept the ``NetworkCache`` installed by ``FeatureShare`` for a metric whose images span
    ``input_range`` (and, when it records one, feed the features by ``preprocessing``), or raise
    naming both; undo its ``lru_cache`` on the network."""
    net = cache.network
    theirs = getattr(net, "preprocessing", None)
    if preprocessing is not None and theirs is not None and theirs != preprocessing:
        raise ValueError(
            f"FeatureShare gives this InterpolatedFID a {type(net).__name__} with "
            f"preprocessing={theirs!r}, but the metric runs preprocessing={preprocessing!r}: "
            "its numbers would follow the other pipeline. Share a network only among metrics "
            "with the same preprocessing."
        )
    takes = network_input_range(net)
    if takes is not None and takes != tuple(input_range):
        raise ValueError(
            f"FeatureShare gives this InterpolatedFID the network {type(net).__name__}, which takes "
            f"images in {takes}, but the metric's images are in input_range={tuple(input_range)}: "
            "its features would describe other images than the metric measures. Share a network "
            "only among metrics that feed it the same range, e.g. torchmetrics' FID with "
            "feature=ifid_callback.feature_share.TorchmetricsFeatures() next to InterpolatedFID "
            "(outside one FeatureShare, they already hold one network)."
        )
    # NetworkCache set `net.forward = lru_cache(net.forward)` on the instance: drop it, so that a
    # network shared with metrics outside this collection is not cached for them.
    patched = net.__dict__.get("forward")
    if patched is not None and hasattr(patched, "__wrapped__"):
        del net.__dict__["forward"]
    if not isinstance(getattr(cache, "_ifid_features", None), FeatureCache):
        cache._ifid_features = FeatureCache(getattr(cache, "max_size", 8))


class FeatureCache:
    """Features of recent input tensors, valid for the tensor object at one version.

    Entries hold the input tensor itself, so its id cannot be reused while cached. Copies and
    pickles start empty: a cached tensor of the source is never the copy's input.
    """

    def __init__(self, max_size: int) -> None:
        self.max_size = max(1, int(max_size))
        self._entries: OrderedDict[int, tuple[Tensor, int, Tensor]] = OrderedDict()

    def get(self, images: Tensor) -> Tensor | None:
        entry = self._entries.get(id(images))
        if entry is None or entry[0] is not images or entry[1] != images._version:
            return None
        return entry[2]

    def put(self, images: Tensor, features: Tensor) -> None:
        self._entries[id(images)] = (images, images._version, features)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_size": self.max_size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_size"])


def cached_features(cache: nn.Module, images: Tensor) -> Tensor:
    """Features of ``images`` from a ``NetworkCache`` checked by :func:`check_shared_network`."""
    store = cache._ifid_features
    found = store.get(images)
    if found is None:
        found = cache.network(images)
        store.put(images, found)
    return found
