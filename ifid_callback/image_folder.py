"""A user's images on disk: `ImageFolder` reads a folder of them, `save_image_folder` writes one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["IMAGE_EXTENSIONS", "ImageFolder", "save_image_folder"]


def to_unit_range(uint8_chw: Tensor) -> Tensor:
    """uint8 0..255 -> float32 -1..1 (0 -> -1, 255 -> 1)."""
    return uint8_chw.to(torch.float32).div_(127.5).sub_(1.0)


# PIL modes of single-channel 16-bit images; some readers give them as 32-bit integers ("I").
_GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_GREY16_MAX = 65535.0

IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".tif",
    ".tiff",
    ".webp",
    ".ppm",
)


class ImageFolder(Dataset):
    """Images found recursively under a folder, in sorted path order.

    Files are matched by extension (case-insensitive) and listed by their path relative to `root`,
    sorted, so the order is the same on every machine; hidden files and folders (names starting
    with ".") are skipped.

    Each image is loaded with PIL. 8-bit images are converted to RGB as torch-fidelity's and
    clean-fid's folder loaders do (``convert("RGB")``): grey is replicated to three channels,
    palettes are expanded, and an alpha channel is dropped, not composited (a fully transparent
    pixel keeps its colour). Single-channel 16-bit images (PIL modes ``I;16`` and ``I``, e.g.
    16-bit grey PNG or TIFF) are read at full range: value / 65535, replicated to three channels.
    PIL reads 16-bit colour PNGs at 8 bits per channel (each value's high byte): their range is
    kept, their precision is 8 bits. Images without a known range (32-bit float, or integers
    outside 0..65535) are refused with a ValueError.

    Args:
        root: the folder.
        size: if given, resize (antialiased bicubic) so the shorter side is `size` pixels, then
            center crop to `size` x `size` when `center_crop`. If None, images are returned at
            their own size, and all of them must share one size (checked on construction from
            the file headers).
        center_crop: crop to a square after resizing; ignored when `size` is None.
        extensions: file name endings to accept.

    Items are float32 tensors (3, H, W) with values in [-1, 1].
    """

    def __init__(
        self,
        root: str | os.PathLike,
        size: int | None = None,
        center_crop: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive int or None, got {size!r}")
        if isinstance(extensions, str):
            extensions = (extensions,)
        exts = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
        if not exts:
            raise ValueError("extensions must name at least one file ending, e.g. ('.png',)")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.size = size
        self.center_crop = bool(center_crop)
        self.extensions = exts
        self.paths = self._scan()
        if not self.paths:
            raise ValueError(f"no images with extensions {exts} found under {str(self.root)!r}")
        if size is None:
            self._check_same_size()

    def _scan(self) -> list[Path]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if not name.startswith(".") and name.lower().endswith(self.extensions):
                    found.append(Path(dirpath) / name)
        return sorted(found, key=lambda p: p.relative_to(self.root).as_posix())

    def _check_same_size(self) -> None:
        sizes: dict[tuple[int, int], Path] = {}
        for path in self.paths:
            with Image.open(path) as im:  # reads the header only
                sizes.setdefault(im.size, path)
            if len(sizes) > 1:
                (a, pa), (b, pb) = list(sizes.items())[:2]
                raise ValueError(
                    f"images under {str(self.root)!r} have different sizes ({pa.name}: {a[0]}x"
                    f"{a[1]}, {pb.name}: {b[0]}x{b[1]}); pass size= to resize and crop them"
                )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        """Image `index` as a float32 tensor (3, H, W) in [-1, 1]."""
        path = self.paths[index]
        with Image.open(path) as im:
            if im.mode in _GREY16_MODES:
                return self._grey16(im, path)
            if im.mode == "F":
                raise ValueError(
                    f"{str(path)!r} is a 32-bit float image (PIL mode 'F'), which has no standard "
                    "value range; save it as an 8- or 16-bit image (PNG) to read it here."
                )
            im = im.convert("RGB")  # grey replicated, palette expanded, alpha dropped
            if self.size is not None:
                im = _resize_and_crop(im, self.size, self.center_crop)
            array = np.asarray(im, dtype=np.uint8)
        return to_unit_range(torch.from_numpy(array.copy()).permute(2, 0, 1))

    def _grey16(self, im: Image.Image, path: Path) -> Tensor:
        """A single-channel 16-bit image: value / 65535, replicated to (3, H, W) in [-1, 1]."""
        values = np.asarray(im).astype(np.float32)  # exact: integers below 2**24
        low, high = float(values.min()), float(values.max())
        if low < 0 or high > _GREY16_MAX:
            raise ValueError(
                f"{str(path)!r} holds integer values in [{low:.0f}, {high:.0f}] (PIL mode "
                f"{im.mode!r}); only 16-bit values 0..65535 have a known range. Save it as an 8- "
                "or 16-bit image (PNG) to read it here."
            )
        unit = values / _GREY16_MAX
        if self.size is not None:
            # Resampled in float ("F" mode) at full precision; bicubic overshoot is clipped as
            # the 8-bit path clips it.
            resized = _resize_and_crop(Image.fromarray(unit), self.size, self.center_crop)
            unit = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
        grey = torch.from_numpy(unit * 2.0 - 1.0)
        return grey.unsqueeze(0).expand(3, -1, -1).contiguous()

    def __repr__(self) -> str:
        crop = ", center_crop=True" if self.size is not None and self.center_crop else ""
        return f"ImageFolder({str(self.root)!r}, size={self.size}{crop}): {len(self)} images"


def _resize_and_crop(im: Image.Image, size: int, center_crop: bool) -> Image.Image:
    """Resize so the shorter side is `size`, then optionally center crop to size x size."""
    w, h = im.size
    factor = size / min(w, h)
    new_w, new_h = max(size, round(w * factor)), max(size, round(h * factor))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    if center_crop:
        left, top = (new_w - size) // 2, (new_h - size) // 2
        im = im.crop((left, top, left + size, top + size))
    return im


def save_image_folder(images: Tensor, root: str | os.PathLike, prefix: str = "img") -> list[Path]:
    """Write images as PNG files `root/{prefix}_{i:05d}.png` (more digits past 99999).

    Args:
        images: (N, 3, H, W) or (N, 1, H, W) tensor with values in [-1, 1]; mapped to 0..255 by
            rounding (x + 1) * 127.5, the inverse of how `ImageFolder` reads them (so a round trip
            is exact for values on that grid and within 1/255 otherwise).
        root: the folder, created if missing.
        prefix: file name prefix.

    Returns:
        The paths written, in index order (which is also their sorted order).
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must have shape (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise TypeError(f"images must be a float tensor in [-1, 1], got dtype {images.dtype}")
    values = images.detach().to("cpu", torch.float64)
    if not torch.isfinite(values).all():
        raise ValueError("images contain NaN or Inf values")
    if len(values) == 0:
        raise ValueError("images is empty (N = 0); nothing to write")
    lo, hi = values.min().item(), values.max().item()
    if lo < -1.0 - 1e-6 or hi > 1.0 + 1e-6:
        raise ValueError(
            f"images must be in [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            "clamp them first with images.clamp(-1, 1)"
        )
    if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix):
        raise ValueError(f"prefix must be a non-empty file name prefix, got {prefix!r}")
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(len(values) - 1)))
    arrays = ((values + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    arrays = arrays.permute(0, 2, 3, 1).numpy()
    paths = []
    for i, array in enumerate(arrays):
        path = out / f"{prefix}_{i:0{digits}d}.png"
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
        paths.append(path)
    return paths
