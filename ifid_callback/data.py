"""Image data for tests, examples and the demo: embedded photo patches and image folders.

`EmbeddedPatches` cuts RGB patches from real photographs that ship inside installed packages
(scikit-image's sample photos and matplotlib's sample data), so a small VAE can be trained and
evaluated with no network. `EmbeddedDigits` holds scikit-learn's 1797 handwritten 8x8 digits
with a fixed train/held-out split. `EmbeddedGlyphs` renders any number of characters from
matplotlib's bundled fonts (deterministic given a seed). `ImageFolder` reads a user's images; `save_image_folder`
writes them. All images are float32 tensors of shape (C, H, W) with values in [-1, 1] (C = 3,
or 1 for the digits).

This module is where users import them from; each lives in its own module
(:mod:`ifid_callback.embedded_patches`, :mod:`ifid_callback.embedded_digits`,
:mod:`ifid_callback.image_folder`).
"""

from __future__ import annotations

from ifid_callback import embedded_patches as _patches
from ifid_callback.embedded_digits import DIGITS_SPLIT, EmbeddedDigits, digits_split_indices
from ifid_callback.embedded_glyphs import EmbeddedGlyphs
from ifid_callback.embedded_patches import PHOTOS, EmbeddedPatches, PhotoSource
from ifid_callback.image_folder import IMAGE_EXTENSIONS, ImageFolder, save_image_folder

__all__ = [
    "DIGITS_SPLIT",
    "PHOTOS",
    "EmbeddedDigits",
    "EmbeddedGlyphs",
    "EmbeddedPatches",
    "IMAGE_EXTENSIONS",
    "digits_split_indices",
    "ImageFolder",
    "PhotoSource",
    "save_image_folder",
]

# The patch cutter's caches and steps stay reachable here as before (to clear or inspect them).
_SPLITS = _patches._SPLITS
_load_photo = _patches._load_photo
_cut_cached = _patches._cut_cached
_cut_photo = _patches._cut_photo
_split_column = _patches._split_column
