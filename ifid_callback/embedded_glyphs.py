"""Glyphs rendered from the fonts that ship with matplotlib: an embedded data set of any size.

Each image is one character (digits and Latin letters) drawn in one of matplotlib's bundled
text fonts (DejaVu Sans / Serif / Mono and STIX in their weights and slants, and Computer
Modern), at a random size, slant-free rotation and offset, antialiased by rendering at 4x and
averaging down. Image ``i`` of a split depends only on ``(seed, split, i)``: any number of
images, random access, the same on every machine with the same matplotlib fonts and Pillow. Nothing
is downloaded; matplotlib (the ``probes`` extra) is needed only to find its font files.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["GLYPH_CHARACTERS", "GLYPH_FONTS", "GLYPH_SPLITS", "EmbeddedGlyphs", "glyph_fonts"]

#: The characters drawn (62).
GLYPH_CHARACTERS = string.digits + string.ascii_uppercase + string.ascii_lowercase

#: matplotlib's bundled fonts with Latin glyphs, in a fixed order (symbol-only fonts left out).
GLYPH_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)

#: Each split is its own random stream (train and reference images never coincide with val).
GLYPH_SPLITS = {"train": 0, "val": 1, "reference": 2}

_SUPERSAMPLE = 4


@functools.lru_cache(maxsize=1)
def glyph_fonts() -> tuple[Path, ...]:
    """Paths of :data:`GLYPH_FONTS` in matplotlib's data directory (those present)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is in the probes extra
        raise ImportError(
            "EmbeddedGlyphs renders matplotlib's bundled fonts: pip install "
            "'ifid-callback[probes]' (or matplotlib)"
        ) from exc
    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    found = tuple(folder / name for name in GLYPH_FONTS if (folder / name).is_file())
    if not found:
        raise FileNotFoundError(
            f"none of matplotlib's text fonts found in {folder}; reinstall matplotlib"
        )
    return found


@functools.lru_cache(maxsize=512)
def _font(path: Path, pixels: int):  # noqa: ANN202 - a PIL FreeTypeFont
    from PIL import ImageFont

    return ImageFont.truetype(str(path), pixels)


def _render(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """One glyph as float32 (channels, size, size) in [-1, 1], every choice drawn from ``rng``."""
    from PIL import Image, ImageDraw

    fonts = glyph_fonts()
    char = GLYPH_CHARACTERS[int(rng.integers(len(GLYPH_CHARACTERS)))]
    path = fonts[int(rng.integers(len(fonts)))]
    big = size * _SUPERSAMPLE
    pixels = max(4, int(round(big * rng.uniform(0.55, 0.9))))
    angle = float(rng.uniform(-15.0, 15.0))
    shift = rng.uniform(-0.1, 0.1, size=2) * big
    canvas = Image.new("L", (2 * big, 2 * big), 0)
    draw = ImageDraw.Draw(canvas)
    font = _font(path, pixels)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    x = big - (left + right) / 2 + shift[0]
    y = big - (top + bottom) / 2 + shift[1]
    draw.text((x, y), char, fill=255, font=font)
    canvas = canvas.rotate(angle, resample=Image.BILINEAR, center=(big, big))
    crop = canvas.crop((big // 2, big // 2, big // 2 + big, big // 2 + big))
    ink = np.asarray(crop, dtype=np.float32).reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE)
    ink = ink.mean(axis=(1, 3)) / 255.0  # (size, size) coverage in [0, 1]
    if channels == 1:
        return (2.0 * ink - 1.0)[None]
    fg, bg = rng.uniform(-1.0, 1.0, size=(2, channels)).astype(np.float32)
    return bg[:, None, None] + (fg - bg)[:, None, None] * ink[None]


class EmbeddedGlyphs(Dataset):
    """``num`` glyph images of one split, rendered on access (deterministic given ``seed``).

    Args:
        split: ``"train"``, ``"val"`` or ``"reference"``: independent streams.
        num: number of images (any positive int).
        size: side in pixels (at least 8; 32 is the design size).
        channels: 1 (white ink on black) or 3 (a random ink and background colour per image).
        seed: seeds every image (image ``i`` depends only on ``seed``, ``split`` and ``i``).

    Items are float32 tensors (channels, size, size) with values in [-1, 1].
    """

    def __init__(
        self,
        split: str = "train",
        num: int = 10_000,
        size: int = 32,
        channels: int = 1,
        seed: int = 0,
    ) -> None:
        if split not in GLYPH_SPLITS:
            raise ValueError(f"split must be one of {sorted(GLYPH_SPLITS)}, got {split!r}")
        for name, value, low in (("num", num, 1), ("size", size, 8), ("seed", seed, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        glyph_fonts()  # fail now, naming the fix, rather than at the first item
        self.split, self.num, self.size, self.channels, self.seed = split, num, size, channels, seed

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> Tensor:
        if not -self.num <= index < self.num:
            raise IndexError(f"index {index} out of range for {self.num} glyphs")
        index %= self.num
        rng = np.random.default_rng([self.seed, GLYPH_SPLITS[self.split], index])
        return torch.from_numpy(_render(rng, self.size, self.channels))

    def as_tensor(self) -> Tensor:
        """All images stacked, (num, channels, size, size)."""
        return torch.stack([self[i] for i in range(self.num)])
