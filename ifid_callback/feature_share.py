"""One Inception per process and device, shared by every metric that asks for ``"inception"``.

``InterpolatedFID(feature="inception")`` (and so ``IFIDMonitor``) takes its network from
:func:`shared_inception`: metrics of one process on one device hold the same module, one copy of
the ~87 MB of weights, read from disk once. Moving a metric (``.to(device)``) swaps in the shared
module of the new device instead of moving the one the others hold.

torchmetrics' convention is followed: :class:`~ifid_callback.metric.InterpolatedFID` names its
network in ``feature_network = "feature_net"``, so it works inside
``torchmetrics.wrappers.FeatureShare``; :class:`TorchmetricsFeatures` hands the shared Inception
to torchmetrics' ``FrechetInceptionDistance`` (or KID), which then needs no second network.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from ifid_callback.inception import InceptionFeatures
from ifid_callback.inception_weights import resolve_weights
from ifid_callback.preprocessing import check_input_range, check_preprocessing, resolve_quantize

# (weights source, input range, precision, preprocessing, quantize, device) -> the module. Weak:
# a network lives as long as a metric holds it, and one a holder moved is never handed out again.
_SHARED: weakref.WeakValueDictionary[tuple, InceptionFeatures] = weakref.WeakValueDictionary()


def _device_of(module: nn.Module) -> torch.device:
    first = next(iter(module.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def shared_inception(
    input_range: tuple[float, float] = (-1.0, 1.0),
    precision: str = "fp32",
    device: torch.device | str | None = None,
    weights: str | os.PathLike | None = None,
    quantize: bool | None = None,
    preprocessing: str = "standard",
) -> InceptionFeatures:
    """The process' :class:`InceptionFeatures` for these settings on ``device`` (default CPU).

    Built on first use, then returned to every caller while any holds it. Holders must not
    move it themselves (``module.to`` moves it for all of them): metrics swap it on ``.to()``.
    Callers that differ in any argument (e.g. ``preprocessing``) never share a network.

    Args:
        input_range: ``(low, high)`` of the images given to it.
        precision: ``"fp32"`` or ``"bf16"`` (see :class:`InceptionFeatures`).
        device: where it lives.
        weights: a weights file, or None for the offline default source.
        quantize: as in :class:`InceptionFeatures` (None: the preprocessing's own choice).
        preprocessing: ``"standard"`` (torch-fidelity's) or ``"official"`` (the iFID authors'),
            as in :class:`InceptionFeatures`.
    """
    low, high = check_input_range(input_range)
    preprocessing = check_preprocessing(preprocessing)
    quantize = resolve_quantize(preprocessing, quantize)
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (resolve_weights(weights)[0], low, high, precision, preprocessing, quantize, str(device))
    net = _SHARED.get(key)
    if net is None or _device_of(net) != device:  # moved by a holder: never hand it out again
        net = InceptionFeatures(
            weights=weights,
            input_range=(low, high),
            precision=precision,
            quantize=quantize,
            preprocessing=preprocessing,
        ).to(device)
        net._shared_key = key  # type: ignore[attr-defined]
        net._shared_args = {  # type: ignore[attr-defined]
            "input_range": (low, high),
            "precision": precision,
            "weights": weights,
            "quantize": quantize,
            "preprocessing": preprocessing,
        }
        _SHARED[key] = net
    return net


def is_shared(module: Any) -> bool:
    """Whether ``module`` is a network handed out by :func:`shared_inception`."""
    key = getattr(module, "_shared_key", None)
    return key is not None and _SHARED.get(key) is module


def apply_keeping_shared(
    owner: nn.Module, name: str, apply: Callable[[], nn.Module], fn: Callable[[Tensor], Tensor]
) -> nn.Module:
    """Run ``apply()`` (an ``nn.Module._apply``) without touching the shared network in
    ``owner.<name>``, then give the owner the shared network of the device ``fn`` moves to.

    Dtype changes (``.half()``) leave the shared network as it is: its precision is its own.
    """
    net = owner._modules.get(name)
    if not is_shared(net):
        return apply()
    del owner._modules[name]
    try:
        out = apply()
    finally:
        owner._modules[name] = net
    target = fn(torch.zeros((), device=_device_of(net))).device
    if target != _device_of(net):
        owner._modules[name] = shared_inception(**net._shared_args, device=target)  # type: ignore[union-attr]
    return out


class TorchmetricsFeatures(nn.Module):
    """A feature network for torchmetrics' FID/KID, reading their inputs, holding a shared one.

    ``FrechetInceptionDistance(feature=TorchmetricsFeatures(), normalize=True)`` computes the
    standard FID features with the process' shared Inception (the one ``InterpolatedFID``
    uses), so FID and iFID hold one network. torchmetrics passes a custom network the images as
    given to ``update``: uint8 in [0, 255] (``normalize=False``) or float in [0, 1]
    (``normalize=True``); both are mapped to the network's input range here.

    The network's weights are kept out of ``state_dict`` (rebuilt from the same weights).

    Args:
        net: the network, taking images in its ``input_range`` attribute (without one:
            (-1, 1)); default ``shared_inception()``, the one metrics with the default
            ``input_range`` hold.

    Shape:
        forward: (B, 3, H, W) uint8 or float images -> (B, num_features) float32.
    """

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else shared_inception()
        # A module without `input_range` takes what InterpolatedFID gives it by default.
        low, high = getattr(self.net, "input_range", (-1.0, 1.0))
        self.input_range = (float(low), float(high))
        self.num_features = int(getattr(self.net, "num_features", 2048))
        self._register_state_dict_hook(_drop_net_keys)
        self.register_load_state_dict_post_hook(_ignore_missing_net_keys)

    def forward(self, images: Tensor) -> Tensor:
        if images.dtype == torch.uint8:
            x = images.to(torch.float32) / 255.0
        elif images.is_floating_point():
            x = images.to(torch.float32)
        else:
            raise TypeError(
                f"images must be uint8 in [0, 255] or float in [0, 1], got {images.dtype}."
            )
        low, high = self.input_range
        return self.net(x * (high - low) + low)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> nn.Module:
        parent = super()._apply
        return apply_keeping_shared(self, "net", lambda: parent(fn, *args, **kwargs), fn)


def _drop_net_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "net.")]:
        del state_dict[key]


def _ignore_missing_net_keys(module: nn.Module, incompatible_keys: Any) -> None:
    missing = incompatible_keys.missing_keys
    for key in [k for k in missing if k.startswith("net.") or ".net." in f".{k}"]:
        missing.remove(key)
