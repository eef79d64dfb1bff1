"""The images of a study: a data spec (``"embedded"``, ``"digits"``, ``"glyphs[:N]"`` or an image
folder) as a seeded subset of images only, and the DataLoader that streams it in order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from .study_config import StudyConfig

__all__ = ["ImagesOnly", "glyphs_dataset", "study_dataset", "study_loader"]


class ImagesOnly(Dataset):
    """Images only, whatever the underlying dataset's items are."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Tensor:
        from ..evaluate import images_of

        return images_of(self.dataset[index])


def glyphs_dataset(spec: str, split: str, size: int, limit: int | None) -> Dataset:
    """``"glyphs[:N]"`` (white ink on black) or ``"glyphs-rgb[:N]"`` (random colours): N
    training glyphs (default 10,000; the reference is drawn from them), and ``limit`` (default
    1,000) held-out ``"val"`` glyphs (see :class:`~ifid_callback.embedded_glyphs.EmbeddedGlyphs`)."""
    from ..embedded_glyphs import EmbeddedGlyphs

    kind, _, count = spec.partition(":")
    try:
        num = int(count) if count else 10_000
    except ValueError:
        num = 0
    if num < 1:
        raise ValueError(f"glyph data is 'glyphs' or 'glyphs:N' with N >= 1, got {spec!r}")
    channels = 3 if kind == "glyphs-rgb" else 1
    if split != "train":
        num = limit if limit is not None else 1000
    return EmbeddedGlyphs(split=split, num=num, size=size, channels=channels)


def study_dataset(spec: str, split: str, size: int, limit: int | None, seed: int) -> Dataset:
    if spec.partition(":")[0] in ("glyphs", "glyphs-rgb"):
        base: Dataset = glyphs_dataset(spec, split, size, limit)
    elif spec == "embedded":
        from ..data import EmbeddedPatches

        base = EmbeddedPatches(split=split, size=size)
    elif spec == "digits":
        from ..data import EmbeddedDigits

        if size != 8:
            raise ValueError(f"the digits are 8x8: set image_size=8, got {size!r}")
        base = EmbeddedDigits(split=split)
    else:
        from ..data import ImageFolder

        if not Path(spec).is_dir():
            raise ValueError(
                f"data must be 'embedded', 'digits', 'glyphs[:N]', 'glyphs-rgb[:N]' or an image "
                f"folder, got {spec!r}"
            )
        base = ImageFolder(spec, size=size)
    n = len(base)  # type: ignore[arg-type]
    if limit is not None and limit < n:
        # A seeded subset in index order (sequential reads stay sequential on disk).
        keep = np.sort(np.random.default_rng(seed).permutation(n)[:limit])
        base = Subset(base, keep.tolist())
    return ImagesOnly(base)


def study_loader(dataset: Dataset, config: StudyConfig) -> DataLoader:
    return DataLoader(
        dataset, batch_size=config.batch_size, shuffle=False, num_workers=config.num_workers
    )
