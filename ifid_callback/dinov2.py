"""DINOv2 features for FD_DINOv2 (EDM2's Fréchet distance in DINOv2 space), local weights only.

:class:`DINOv2Features` maps images in a declared value range to the CLS token of a DINOv2
ViT (``transformers``' ``Dinov2Model``), preprocessed as EDM2's ``calculate_metrics.py`` does for
``fd_dinov2`` (its ``DINOv2Detector`` with the default ``resize_mode="torch"``, read in
NVlabs/edm2 at commit 32ecad3). The weights are read from local files only, never downloaded:
a directory written by ``save_pretrained`` (``weights=`` or ``$IFID_DINOV2_WEIGHTS``) or the
Hugging Face cache (``facebook/dinov2-{small,base,large,giant}``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ifid_callback.preprocessing import check_input_range

__all__ = [
    "DINOV2_ARCHS",
    "DINOV2_SIZE",
    "DINOV2_WEIGHTS_ENV",
    "DINOv2Features",
    "dinov2_arch",
    "dinov2_input",
]

# The environment variable naming a directory written by ``Dinov2Model.save_pretrained``.
DINOV2_WEIGHTS_ENV = "IFID_DINOV2_WEIGHTS"
# Size name -> (Hugging Face repository, feature dimension).
DINOV2_ARCHS: dict[str, tuple[str, int]] = {
    "vits14": ("facebook/dinov2-small", 384),
    "vitb14": ("facebook/dinov2-base", 768),
    "vitl14": ("facebook/dinov2-large", 1024),
    "vitg14": ("facebook/dinov2-giant", 1536),
}
DEFAULT_ARCH = "vitb14"
DINOV2_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dinov2_arch(spec: str) -> str | None:
    """The size a feature name asks for: ``"dinov2"`` -> None (the default, ViT-B/14, unless the
    weights given say otherwise), ``"dinov2-vitl14"`` -> ``"vitl14"``; ValueError otherwise."""
    name = spec.lower()
    if name == "dinov2":
        return None
    arch = name.removeprefix("dinov2-").removeprefix("dinov2_")
    if not name.startswith("dinov2") or arch not in DINOV2_ARCHS:
        sizes = ", ".join(f"'dinov2-{a}'" for a in DINOV2_ARCHS)
        raise ValueError(f"Unknown DINOv2 feature {spec!r}: use 'dinov2' (ViT-B/14) or {sizes}.")
    return arch


def dinov2_input(images: Tensor, input_range: tuple[float, float]) -> Tensor:
    """(B, C, H, W) float images in ``input_range`` -> (B, 3, 224, 224) float32 DINOv2 input.

    EDM2's path from uint8 images: clamp to ``input_range`` and map to 0..255 rounded like a
    saved PNG (``floor(v + 0.5)``: EDM2 takes uint8 images), one channel repeated to RGB,
    ``F.interpolate(size=(224, 224), mode="bicubic", antialias=True)`` on the 0..255 floats
    (always called, no clamp after it), ``/ 255``, minus the ImageNet mean
    (0.485, 0.456, 0.406), divided by the ImageNet std (0.229, 0.224, 0.225).
    """
    low, high = input_range
    x = images.to(torch.float32).clamp(low, high)
    x = torch.floor((x - low) * (255.0 / (high - low)) + 0.5)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(DINOV2_SIZE, DINOV2_SIZE), mode="bicubic", antialias=True)
    x = x / 255
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _hub_cache() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return "~/.cache/huggingface/hub"


def _missing(arch: str, tried: list[str], reason: str) -> FileNotFoundError:
    repo = DINOV2_ARCHS[arch][0]
    name = repo.split("/")[1]
    return FileNotFoundError(
        f"DINOv2 {arch} weights not found in local files ({reason}); they are never downloaded. "
        f"Looked in: {'; '.join(tried)}. Put them in place with either:\n"
        f'  (1) on a machine with network: python -c "from transformers import Dinov2Model; '
        f"Dinov2Model.from_pretrained('{repo}').save_pretrained('/models/{name}')\", copy "
        f"/models/{name} (config.json + model.safetensors) here and set "
        f"{DINOV2_WEIGHTS_ENV}=/models/{name} (or pass weights='/models/{name}'), or\n"
        f"  (2) `huggingface-cli download {repo}` into this machine's Hugging Face cache "
        f"({_hub_cache()}; set HF_HOME or HF_HUB_CACHE to move it)."
    )


def load_dinov2_model(weights: str | os.PathLike | None, arch: str | None) -> tuple[Any, str]:
    """A ``Dinov2Model`` in eval mode from local files only, and where it came from.

    ``weights`` (else ``$IFID_DINOV2_WEIGHTS``): a directory written by ``save_pretrained``;
    otherwise the Hugging Face cache's ``facebook/dinov2-*`` of ``arch`` (default ViT-B/14).
    """
    try:
        from transformers import Dinov2Model
    except ImportError as exc:
        raise ImportError(
            "DINOv2 features need transformers' Dinov2Model: pip install 'ifid-callback[dinov2]' "
            "(or transformers>=4.40)."
        ) from exc

    wanted = arch or DEFAULT_ARCH
    source = weights if weights is not None else os.environ.get(DINOV2_WEIGHTS_ENV) or None
    if source is not None:
        path = Path(source).expanduser()
        where = f"weights={str(path)!r}" if weights is not None else f"${DINOV2_WEIGHTS_ENV}={path}"
        if not (path / "config.json").is_file():
            raise _missing(wanted, [where], f"{path} holds no config.json")
        try:
            model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
        except OSError as exc:
            raise _missing(wanted, [where], str(exc).splitlines()[0]) from exc
        origin = str(path)
    else:
        repo = DINOV2_ARCHS[wanted][0]
        where = f"the Hugging Face cache ({_hub_cache()}) for {repo!r}"
        unset = f"${DINOV2_WEIGHTS_ENV} (unset)"
        try:
            model = Dinov2Model.from_pretrained(repo, local_files_only=True)
        except OSError as exc:
            raise _missing(wanted, [unset, where], "not cached") from exc
        origin = repo
    dim = int(model.config.hidden_size)
    if arch is not None and dim != DINOV2_ARCHS[arch][1]:
        raise ValueError(
            f"dinov2-{arch} has {DINOV2_ARCHS[arch][1]}-d features, but the weights at {origin} "
            f"are {dim}-d: point weights= / ${DINOV2_WEIGHTS_ENV} at {DINOV2_ARCHS[arch][0]}'s "
            "files, or ask for plain 'dinov2' to use whatever model they hold."
        )
    return model.eval(), origin


class DINOv2Features(nn.Module):
    """DINOv2 CLS-token features of images in ``input_range``, as EDM2 computes FD_DINOv2.

    Preprocessing (:func:`dinov2_input`), from EDM2's ``DINOv2Detector`` (``resize_mode=
    "torch"``, its default): images clamped to ``input_range`` and rounded to 0..255 levels (EDM2
    reads uint8 images), bicubic resize to 224x224 with ``antialias=True`` on the 0..255 values,
    ``/ 255``, ImageNet mean/std normalisation. Network: ``Dinov2Model`` in float32, output the
    CLS token of the last layer after the final layernorm (``pooler_output``; the hub model's
    ``forward`` that EDM2 calls returns the same token, ``x_norm_clstoken``): 384/768/1024/1536-d
    for ViT-S/B/L/g-14.

    Differences from EDM2, as far as known: EDM2 uses ViT-L/14 (``dinov2-vitl14``; the default
    here is ViT-B/14, cheaper during training: ask for ``"dinov2-vitl14"`` for numbers
    comparable with EDM2's FD_DINOv2); it loads the torch-hub model, here ``transformers``'
    port of the same weights, whose positional embeddings are resized from the 518-px grid to
    16x16 by ``F.interpolate(size=...)`` where the hub model uses a scale factor with a 0.1
    offset, so features may differ slightly (not checked against the hub model: no weights here).

    Parameters are frozen and the module stays in eval mode (``train()`` is a no-op).

    Args:
        arch: ``"vits14"``, ``"vitb14"``, ``"vitl14"``, ``"vitg14"``, or None: ViT-B/14 from the
            Hugging Face cache, or whatever model ``weights`` holds. Given together with
            ``weights``, the weights must be of that size.
        weights: a directory written by ``Dinov2Model.save_pretrained`` (``config.json`` and
            ``model.safetensors``); default ``$IFID_DINOV2_WEIGHTS``, else the Hugging Face
            cache (``facebook/dinov2-base`` for ViT-B/14). Local files only; a clear
            FileNotFoundError says what to put where when they are absent.
        input_range: ``(low, high)`` of the images given to ``forward``.

    Shape:
        forward: (B, C, H, W) float images in ``input_range``, C = 3 or 1, any H, W ->
        (B, num_features) float32.
    """

    space = "dinov2"  # the key suffix when it is a second feature space (``ifid_dinov2``)

    def __init__(
        self,
        arch: str | None = None,
        weights: str | os.PathLike | None = None,
        input_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        super().__init__()
        if arch is not None:
            arch = dinov2_arch(f"dinov2-{arch}")
        self.input_range = check_input_range(input_range)
        self.model, self.weights_source = load_dinov2_model(weights, arch)
        self.num_features = int(self.model.config.hidden_size)
        size = {dim: a for a, (_, dim) in DINOV2_ARCHS.items()}.get(self.num_features)
        patch = self.model.config.patch_size
        self.name = f"dinov2-{size}" if size and patch in (14, [14, 14], (14, 14)) else "dinov2"
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> DINOv2Features:
        """No-op: the extractor is frozen, whatever the trainer around it does."""
        return super().train(False)

    def preprocess(self, images: Tensor) -> Tensor:
        """Images in ``input_range`` -> (B, 3, 224, 224) float32 network input."""
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(
                f"DINOv2Features expects (B, C, H, W) images with C = 3 or 1, got {shape}."
            )
        device = next(self.model.parameters()).device
        return dinov2_input(images.to(device), self.input_range)

    def forward(self, images: Tensor) -> Tensor:
        """(B, C, H, W) images in ``input_range`` -> (B, num_features) float32 CLS features."""
        with torch.inference_mode(), torch.autocast(images.device.type, enabled=False):
            x = self.preprocess(images)
            dtype = next(self.model.parameters()).dtype
            out = self.model(pixel_values=x.to(dtype)).pooler_output
        # A normal tensor again, so callers may update it in place outside inference mode.
        return out.float().clone()
