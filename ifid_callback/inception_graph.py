"""The FID Inception-v3 graph (TF 2015-12-05): its layers under torch-fidelity's names.

Each convolution carries its BatchNorm folded in (``ConvBN``); :func:`build_trunk` registers the
layers on a module and :func:`pool3` runs them up to the 2048-d average pool. Weights are not
here: see ``ifid_callback.inception_weights``; the module users hold is
``ifid_callback.inception.InceptionFeatures``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ConvBN", "build_trunk", "fold_batchnorm", "pool3", "raw_state_dict_template"]

_BN_EPS = 1e-3  # the TensorFlow graph's BatchNorm epsilon


class ConvBN(nn.Module):
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
        fold_batchnorm(state_dict, prefix)
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


def fold_batchnorm(state_dict: dict, prefix: str) -> None:
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
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_features, 1)

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
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

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
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_2(self.branch7x7dbl_1(x))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(self.branch7x7dbl_3(d)))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class _BlockD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

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
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(c_in, 192, 1)

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


def build_trunk(module: nn.Module) -> None:
    """Register the layers on ``module`` under torch-fidelity's names, in graph order."""
    module.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
    module.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
    module.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
    module.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
    module.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
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


def raw_state_dict_template() -> dict[str, torch.Size]:
    """Keys and shapes of the unfolded (torch-fidelity layout) state_dict, in graph order."""
    shell = nn.Module()
    with torch.device("meta"):  # shapes only: no memory, no random init
        build_trunk(shell)
    out: dict[str, torch.Size] = {}
    for name, sub in shell.named_modules():
        if isinstance(sub, ConvBN):
            channels = sub.conv.out_channels
            out[f"{name}.conv.weight"] = sub.conv.weight.shape
            for stat in ("weight", "bias", "running_mean", "running_var"):
                out[f"{name}.bn.{stat}"] = torch.Size([channels])
    return out


def pool3(module: nn.Module, x: Tensor) -> Tensor:
    """Run the layers :func:`build_trunk` registered on ``module``: (B, 3, H, W) -> (B, 2048)."""
    x = module.Conv2d_2b_3x3(module.Conv2d_2a_3x3(module.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    x = module.Conv2d_4a_3x3(module.Conv2d_3b_1x1(x))
    x = F.max_pool2d(x, kernel_size=3, stride=2)
    for block in (
        module.Mixed_5b,
        module.Mixed_5c,
        module.Mixed_5d,
        module.Mixed_6a,
        module.Mixed_6b,
        module.Mixed_6c,
        module.Mixed_6d,
        module.Mixed_6e,
        module.Mixed_7a,
        module.Mixed_7b,
        module.Mixed_7c,
    ):
        x = block(x)
    return x.mean(dim=(2, 3))
