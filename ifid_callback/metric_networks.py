"""The networks a metric holds are not its state: kept out of ``state_dict``, moved between
devices with the metric, never cast by its dtype changes, and named in its settings."""

from __future__ import annotations

import re
from typing import Any

import torch
from torch import Tensor

from ifid_callback.dinov2 import DINOv2Features
from ifid_callback.features import InceptionFeatures, feature_dim

# Child networks whose weights are the user's, not the metric's state: kept out of state_dict
# (the feature network, and the network ``net`` of any extra: LPIPS, a further feature space).
NETWORK_CHILDREN = ("feature_net", "extras.lpips.net")
_NETWORK_KEY = re.compile(r"(^|\.)(feature_net|extras\.[^.]+\.net)\.")


class DeviceMove:
    """The device part of an ``nn.Module._apply`` function: tensors keep their dtypes.

    A metric applies this instead of the function it was given, so that ``.to(dtype)``,
    ``.half()``, ``.double()`` and ``set_dtype`` round neither its float64 sums nor the
    networks' weights (whose precision is their own), while ``.to(device)`` still moves both.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __call__(self, t: Tensor) -> Tensor:
        return t.to(self.device)


def feature_name(net: torch.nn.Module) -> str:
    """``"inception"`` for the standard network, ``"dinov2-vitb14"`` (...) for DINOv2, else the
    module's class name."""
    net = getattr(net, "network", net)  # inside torchmetrics' FeatureShare (a NetworkCache)
    if isinstance(net, DINOv2Features):
        return net.name
    return "inception" if isinstance(net, InceptionFeatures) else type(net).__name__


def feature_dimension(net: torch.nn.Module) -> int:
    """d of the network's (B, d) features, or a ValueError saying how to give it."""
    try:
        return feature_dim(net, (1, 3, 64, 64))
    except Exception as exc:  # any failure of the probe forward pass means: ask the user
        raise ValueError(
            "Cannot tell the feature dimension of the feature module: give it a `num_features` "
            f"attribute or pass num_features= to InterpolatedFID ({exc})."
        ) from exc


def drop_network_keys(
    module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: Any
) -> None:
    """``state_dict`` hook: leave the networks' weights out."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if _NETWORK_KEY.match(key[len(prefix) :]):
            del state_dict[key]


def ignore_missing_network_keys(module: torch.nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` post hook: the networks' weights are not expected."""
    missing = incompatible_keys.missing_keys
    for key in list(missing):
        if _NETWORK_KEY.search(key):
            missing.remove(key)
