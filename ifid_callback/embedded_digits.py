"""scikit-learn's 1797 handwritten 8x8 digits with a fixed, seeded train/held-out split."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DIGITS_SPLIT", "EmbeddedDigits", "digits_split_indices"]


#: Sizes of the digits' train and held-out ("val") splits: 1400 + 397 = all 1797 images.
DIGITS_SPLIT: tuple[int, int] = (1400, 397)
_DIGITS_SPLITS = ("train", "val", "all")


@lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits once per process: (1797, 8, 8) uint8 0..16 and (1797,) int64."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # an optional extra
        raise ImportError(
            "EmbeddedDigits needs scikit-learn (it ships the digits; nothing is downloaded): "
            "pip install 'ifid-callback[data]'"
        ) from exc
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def digits_split_indices(split: str, split_seed: int = 0) -> np.ndarray:
    """Indices into scikit-learn's digits of one split, in increasing order.

    One seeded permutation of the 1797 images (``numpy.random.default_rng(split_seed)``): its
    first 1400 entries are "train", the other 397 "val"; "all" is every index.
    """
    if split not in _DIGITS_SPLITS:
        raise ValueError(f"split must be one of {_DIGITS_SPLITS}, got {split!r}")
    total = sum(DIGITS_SPLIT)
    if split == "all":
        return np.arange(total)
    perm = np.random.default_rng(split_seed).permutation(total)
    part = perm[: DIGITS_SPLIT[0]] if split == "train" else perm[DIGITS_SPLIT[0] :]
    return np.sort(part)


class EmbeddedDigits(Dataset):
    """The 1797 handwritten digits of ``sklearn.datasets.load_digits`` (8x8, grayscale).

    The images (UCI optical recognition of handwritten digits: 43 writers, each 32x32 bitmap
    counted into 4x4 blocks, giving integers 0..16) ship with scikit-learn, so nothing is
    downloaded. They are split once by a seeded permutation into 1400 "train" and 397 "val"
    (held-out) images; the split is the same on every machine for a given ``split_seed``.

    Args:
        split: "train" (1400), "val" (397) or "all" (1797).
        split_seed: seed of the train/val permutation (0 is the split every study uses).

    Attributes:
        labels: (N,) int64 tensor of the digit classes 0..9.
        indices: (N,) int64 tensor of the positions in scikit-learn's array.

    Items are float32 tensors of shape (1, 8, 8) with values in [-1, 1] (``v / 8 - 1``).
    """

    def __init__(self, split: str = "train", split_seed: int = 0) -> None:
        if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
            raise ValueError(f"split_seed must be an int >= 0, got {split_seed!r}")
        idx = digits_split_indices(split, split_seed)
        images, labels = _load_digits()
        self.split = split
        self.split_seed = split_seed
        self.indices = torch.from_numpy(idx.astype(np.int64))
        self._images = torch.from_numpy(images[idx].copy()).unsqueeze(1)  # (N, 1, 8, 8) uint8
        self.labels = torch.from_numpy(labels[idx].copy())

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> Tensor:
        """Digit ``index`` as a float32 tensor (1, 8, 8) in [-1, 1]."""
        return self._images[index].to(torch.float32) / 8.0 - 1.0

    def as_tensor(self) -> Tensor:
        """The whole split as one float32 tensor (N, 1, 8, 8) in [-1, 1]."""
        return self._images.to(torch.float32) / 8.0 - 1.0

    def describe(self) -> str:
        return f"EmbeddedDigits(split={self.split!r}): {len(self)} 8x8 grayscale digits"

    def __repr__(self) -> str:
        return self.describe()
