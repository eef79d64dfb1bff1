"""RGB patches cut from real photographs that ship inside installed packages.

`EmbeddedPatches` reads scikit-image's sample photos and matplotlib's sample data from their
package directories (nothing is downloaded) and cuts them into patches with a fixed train/val
split that shares no source pixel, so a small VAE can be trained and evaluated with no network.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ifid_callback.image_folder import to_unit_range

__all__ = ["PHOTOS", "EmbeddedPatches", "PhotoSource"]


@dataclass(frozen=True)
class PhotoSource:
    """One photograph shipped inside an installed Python package.

    Attributes:
        name: short name used to select the photo (`EmbeddedPatches(photos=[...])`).
        package: the importable distribution that ships the file.
        file: path of the file relative to the package directory.
        licence: the licence or copyright note given by the shipping package.
    """

    name: str
    package: str
    file: str
    licence: str

    def path(self) -> Path | None:
        """Location of the file on this machine, or None when the package or file is absent.

        The package is located without importing it, and nothing is ever downloaded.
        """
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        for root in spec.submodule_search_locations:
            candidate = Path(root) / self.file
            if candidate.is_file():
                return candidate
        return None


# Colour photographs only. Left out on purpose: skimage's grayscale images (camera, coins, moon,
# ...), its synthetic ones (color wheel, phantom, chessboards, logo, horse silhouette) and the
# right view of the motorcycle stereo pair (the same scene as the left view, so it would leak
# content across splits).
PHOTOS: tuple[PhotoSource, ...] = (
    PhotoSource(
        "astronaut",
        "skimage",
        "data/astronaut.png",
        "NASA photograph of Eileen Collins; public domain (no known copyright restrictions)",
    ),
    PhotoSource(
        "chelsea",
        "skimage",
        "data/chelsea.png",
        "Chelsea the cat; CC0 by the photographer (Stefan van der Walt)",
    ),
    PhotoSource(
        "coffee",
        "skimage",
        "data/coffee.png",
        "coffee cup, courtesy of Pikolo Espresso Bar; CC0 by the photographer (Rachel Michetti)",
    ),
    PhotoSource(
        "rocket",
        "skimage",
        "data/rocket.jpg",
        "Falcon 9 / DSCOVR launch by SpaceX; released into the public domain",
    ),
    PhotoSource(
        "motorcycle",
        "skimage",
        "data/motorcycle_left.png",
        "left view of the Middlebury 2014 stereo 'Motorcycle' scene (Scharstein et al., GCPR "
        "2014), as redistributed by scikit-image; no licence stated beyond that",
    ),
    PhotoSource(
        "hubble_deep_field",
        "skimage",
        "data/hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field, NASA/ESA; public domain",
    ),
    PhotoSource(
        "ihc",
        "skimage",
        "data/ihc.png",
        "immunohistochemistry micrograph, CMMI; no known copyright restrictions",
    ),
    PhotoSource(
        "retina",
        "skimage",
        "data/retina.jpg",
        "fundus photograph by Mikael Häggström (Wikimedia Commons); CC0 1.0",
    ),
    PhotoSource(
        "grace_hopper",
        "matplotlib",
        "mpl-data/sample_data/grace_hopper.jpg",
        "official U.S. Navy portrait of Grace M. Hopper; public domain (U.S. government work)",
    ),
)

_SPLITS = ("train", "val")
# Every photo is first resized so its longer side is this many pixels: the photos range from
# 451 to 1411 px, and without this the largest one (a mostly smooth retina) would dominate.
_BASE_SIDE = 512
# JPEG codes 16x16 blocks (with 4:2:0 chroma); a split border on a block border means no
# compressed block carries pixels of both splits.
_BORDER_ALIGN = 16


@cache
def _load_photo(source: PhotoSource) -> np.ndarray:
    """Decode one photo once per process: (H, W, 3) uint8, read-only."""
    path = source.path()
    if path is None:
        raise FileNotFoundError(f"photo {source.name!r} not found in package {source.package!r}")
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    array.setflags(write=False)
    return array


def _split_column(width: int, val_fraction: float) -> int:
    """First column of the val band (the right-hand `val_fraction` of the photo), block aligned."""
    col = int(round(width * (1.0 - val_fraction) / _BORDER_ALIGN)) * _BORDER_ALIGN
    return min(max(col, _BORDER_ALIGN), width - _BORDER_ALIGN)


def _resize(region: np.ndarray, factor: float) -> np.ndarray:
    """Antialiased bicubic resize of an (H, W, 3) uint8 region by `factor`."""
    h, w = region.shape[:2]
    new_h, new_w = max(1, round(h * factor)), max(1, round(w * factor))
    if (new_h, new_w) == (h, w):
        return region
    resized = Image.fromarray(region).resize((new_w, new_h), Image.Resampling.BICUBIC)
    return np.asarray(resized, dtype=np.uint8)


def _grid(length: int, size: int, stride: int) -> np.ndarray:
    """Start offsets of patches along one axis, the unused margin split evenly on both ends."""
    if length < size:
        return np.zeros(0, dtype=np.int64)
    count = (length - size) // stride + 1
    margin = (length - size - (count - 1) * stride) // 2
    return margin + stride * np.arange(count, dtype=np.int64)


def _cut_region(
    region: np.ndarray,
    origin_x: int,
    factor: float,
    size: int,
    stride: int,
    min_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut one split's region of one photo into patches.

    Args:
        region: (H, W, 3) uint8 pixels of the split's band, at native resolution.
        origin_x: column of the band's left edge in the native photo.
        factor: resize factor applied to the band before cutting.

    Returns:
        patches (n, size, size, 3) uint8, and boxes (n, 4) int64 holding (y0, x0, y1, x1): the
        patch footprint in native photo pixels, rounded outwards and clipped to the band.
    """
    scaled = _resize(region, factor)
    ys, xs = _grid(scaled.shape[0], size, stride), _grid(scaled.shape[1], size, stride)
    if len(ys) == 0 or len(xs) == 0:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 4), np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(scaled, (size, size), axis=(0, 1))
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    yy, xx = yy.ravel(), xx.ravel()
    # sliding_window_view puts the window axes last: (n, 3, size, size) -> (n, size, size, 3).
    patches = np.ascontiguousarray(windows[yy, xx].transpose(0, 2, 3, 1))
    if min_std > 0:
        # std in [-1, 1] units is twice the std in [0, 1] units.
        std = patches.reshape(len(patches), -1).std(axis=1, dtype=np.float32) * (2.0 / 255.0)
        keep = std >= min_std
        patches, yy, xx = patches[keep], yy[keep], xx[keep]
    sy = region.shape[0] / scaled.shape[0]
    sx = region.shape[1] / scaled.shape[1]
    boxes = np.stack(
        [
            np.floor(yy * sy),
            np.floor(xx * sx) + origin_x,
            np.minimum(np.ceil((yy + size) * sy), region.shape[0]),
            np.minimum(np.ceil((xx + size) * sx), region.shape[1]) + origin_x,
        ],
        axis=1,
    ).astype(np.int64)
    return patches, boxes


def _cut_photo(
    photo: np.ndarray,
    split: str,
    val_fraction: float,
    factors: Sequence[float],
    size: int,
    stride: int,
    min_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    """All patches of one split of one photo, over all scale factors.

    The photo is split into a train band and a val band (the right-hand `val_fraction` of its
    width) *before* any resizing, so the resize filter of one split never reads the other split's
    pixels: no val patch depends on any train pixel, and the reverse.
    """
    col = _split_column(photo.shape[1], val_fraction)
    region, origin_x = (photo[:, :col], 0) if split == "train" else (photo[:, col:], col)
    all_patches, all_boxes = [], []
    for factor in factors:
        patches, boxes = _cut_region(region, origin_x, factor, size, stride, min_std)
        all_patches.append(patches)
        all_boxes.append(boxes)
    return np.concatenate(all_patches), np.concatenate(all_boxes)


@lru_cache(maxsize=32)
def _cut_cached(
    source: PhotoSource,
    split: str,
    val_fraction: float,
    factors: tuple[float, ...],
    size: int,
    stride: int,
    min_std: float,
) -> tuple[np.ndarray, np.ndarray]:
    photo = _load_photo(source)
    base = _BASE_SIDE / max(photo.shape[:2])
    patches, boxes = _cut_photo(
        photo, split, val_fraction, [base * f for f in factors], size, stride, min_std
    )
    patches.setflags(write=False)
    boxes.setflags(write=False)
    return patches, boxes


class EmbeddedPatches(Dataset):
    """RGB patches cut deterministically from photographs shipped inside installed packages.

    Each photo (see `PHOTOS`) is read with PIL from its package directory (nothing is
    downloaded) and split into two vertical bands: the right-hand `val_fraction` of its width is
    the "val" split, the rest is "train". The bands are cut apart at native resolution, before any
    resizing, so the two splits share no source pixel and no patch crosses the border. Each band
    is resized (antialiased bicubic) so that the whole photo's longer side would be 512 px times a
    factor from `scale`, then cut on a regular grid of `size` x `size` windows with step `stride`.
    Nearly flat patches (std below `min_std`: black sky, the black frame of the retina photo) are
    dropped.

    With the defaults and all nine photos installed, "train" holds 6077 patches of 32x32 and
    1347 of 64x64, "val" 1706 and 316. Building a split takes a few hundred milliseconds the first
    time and milliseconds afterwards (decoded photos and cut patches are cached in the process).

    Args:
        split: "train" or "val".
        size: patch side in pixels (e.g. 32 or 64; at least 4).
        stride: grid step in pixels of the resized photo; None means `size // 2` (half overlap).
        scale: one resize factor or a sequence of them (each in (0, 4]) relative to the 512 px
            base; several factors give a pyramid. Smaller factors make each patch cover more of
            the scene (whole objects rather than flat skin).
        max_items: keep at most this many patches, a seeded random subset in grid order; None
            keeps all.
        seed: seed of the `max_items` subset; nothing else is random.
        photos: names of the photos to use (default all of `PHOTOS` whose package is installed).
        val_fraction: fraction of each photo's width, on the right, reserved for "val".
        min_std: drop patches whose value std (in [-1, 1] units, over all pixels and channels)
            is below this; 0 keeps every patch.
        hflip: if True, the dataset doubles: items `len // 2` onwards are the left-right mirror
            images of the first half, in the same order.

    Attributes:
        sources: the `PhotoSource` records used, in order; `boxes[:, 0]` indexes this tuple.
        boxes: (N, 5) int64 tensor of (source index, y0, x0, y1, x1) per item: the footprint of
            the patch in the source photo's native pixels (end exclusive, rounded outwards).
        scales: the resize factors used, as a tuple.

    Items are float32 tensors of shape (3, size, size) with values in [-1, 1].
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 32,
        stride: int | None = None,
        scale: float | Sequence[float] = (1.0, 0.5),
        max_items: int | None = None,
        seed: int = 0,
        photos: Sequence[str] | None = None,
        val_fraction: float = 0.25,
        min_std: float = 0.04,
        hflip: bool = False,
    ) -> None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        if isinstance(size, bool) or not isinstance(size, int) or size < 4:
            raise ValueError(f"size must be an int >= 4 (e.g. 32 or 64), got {size!r}")
        if stride is None:
            stride = max(1, size // 2)
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            raise ValueError(f"stride must be a positive int or None, got {stride!r}")
        factors = (scale,) if isinstance(scale, (int, float)) else tuple(scale)
        if not factors or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 4 for f in factors
        ):
            raise ValueError(
                f"scale must be a factor in (0, 4] or a non-empty sequence of them, got {scale!r}"
            )
        factors = tuple(float(f) for f in factors)
        if max_items is not None and (
            isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1
        ):
            raise ValueError(f"max_items must be a positive int or None, got {max_items!r}")
        if not 0.05 <= val_fraction <= 0.5:
            raise ValueError(f"val_fraction must be in [0.05, 0.5], got {val_fraction!r}")
        if not min_std >= 0:
            raise ValueError(f"min_std must be >= 0, got {min_std!r}")

        self.split = split
        self.size = size
        self.stride = stride
        self.scales = factors
        self.seed = seed
        self.val_fraction = float(val_fraction)
        self.min_std = float(min_std)
        self.hflip = bool(hflip)
        self.sources = _select_sources(photos)

        chunks, box_chunks = [], []
        for index, source in enumerate(self.sources):
            patches, boxes = _cut_cached(
                source, split, self.val_fraction, factors, size, stride, self.min_std
            )
            chunks.append(patches)
            ids = np.full((len(boxes), 1), index, dtype=np.int64)
            box_chunks.append(np.concatenate([ids, boxes], axis=1))
        patches = torch.from_numpy(np.concatenate(chunks)).permute(0, 3, 1, 2).contiguous()
        boxes = torch.from_numpy(np.concatenate(box_chunks))
        if len(patches) == 0:
            raise ValueError(
                f"no {size}x{size} patches fit the {split!r} split at scale {factors}: "
                "use a smaller size, a larger scale, or a smaller min_std"
            )
        if max_items is not None and max_items < len(patches):
            gen = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(patches), generator=gen)[:max_items].sort().values
            patches, boxes = patches[keep], boxes[keep]
        if self.hflip:
            patches = torch.cat([patches, patches.flip(-1)])
            boxes = torch.cat([boxes, boxes])
        self._patches = patches  # (N, 3, size, size) uint8
        self.boxes = boxes

    def __len__(self) -> int:
        return len(self._patches)

    def __getitem__(self, index: int) -> Tensor:
        """Patch `index` as a float32 tensor (3, size, size) in [-1, 1]."""
        return to_unit_range(self._patches[index])

    def as_tensor(self) -> Tensor:
        """The whole split as one float32 tensor (N, 3, size, size) in [-1, 1]."""
        return to_unit_range(self._patches)

    def describe(self) -> str:
        """One line: split, patch size, count and the photos used."""
        names = ", ".join(s.name for s in self.sources)
        flip = ", with mirror images" if self.hflip else ""
        return (
            f"EmbeddedPatches(split={self.split!r}, size={self.size}, stride={self.stride}, "
            f"scale={self.scales}): {len(self)} patches{flip} from {len(self.sources)} photos "
            f"({names})"
        )

    def __repr__(self) -> str:
        return self.describe()


def _select_sources(photos: Sequence[str] | None) -> tuple[PhotoSource, ...]:
    """The requested photos that exist here; missing ones are skipped with a warning."""
    by_name = {s.name: s for s in PHOTOS}
    if photos is None:
        wanted = list(PHOTOS)
    else:
        if isinstance(photos, str):
            photos = [photos]
        unknown = [p for p in photos if p not in by_name]
        if unknown:
            raise ValueError(f"unknown photos {unknown}; choose from {sorted(by_name)}")
        if not photos:
            raise ValueError(f"photos must name at least one of {sorted(by_name)}, or be None")
        wanted = [by_name[p] for p in dict.fromkeys(photos)]
    available = tuple(s for s in wanted if s.path() is not None)
    missing = [f"{s.name} ({s.package})" for s in wanted if s.path() is None]
    if not available:
        raise RuntimeError(
            f"none of the embedded photos are installed (missing: {', '.join(missing)}); "
            "install scikit-image and matplotlib, e.g. `pip install ifid-callback[data,probes]`"
        )
    if missing:
        warnings.warn(
            f"embedded photos not installed, skipped: {', '.join(missing)}; patch counts are "
            "smaller than documented (install scikit-image and matplotlib for all of them)",
            stacklevel=3,
        )
    return available
