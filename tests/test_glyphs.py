"""Glyphs rendered from matplotlib's fonts: deterministic, any size, usable by a study."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("matplotlib")

from ifid_callback.data import EmbeddedGlyphs  # noqa: E402
from ifid_callback.probes.study_data import study_dataset  # noqa: E402


def test_shapes_range_and_determinism():
    a = EmbeddedGlyphs("train", num=12, seed=3).as_tensor()
    b = EmbeddedGlyphs("train", num=12, seed=3).as_tensor()
    assert a.shape == (12, 1, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    assert a.flatten(1).std(1).min() > 0  # every image has ink
    # Image i depends only on (seed, split, i): the same in a larger set, different elsewhere.
    more = EmbeddedGlyphs("train", num=40, seed=3)
    assert torch.equal(more[5], a[5]) and torch.equal(more[-40], a[0])
    assert not torch.equal(EmbeddedGlyphs("train", num=12, seed=4).as_tensor(), a)
    assert not torch.equal(EmbeddedGlyphs("val", num=12, seed=3).as_tensor(), a)


def test_colour_and_size():
    x = EmbeddedGlyphs("reference", num=4, size=16, channels=3).as_tensor()
    assert x.shape == (4, 3, 16, 16) and x.min() >= -1 and x.max() <= 1


def test_study_specs():
    train = study_dataset("glyphs:30", "train", 32, 10, seed=0)
    val = study_dataset("glyphs", "val", 32, 7, seed=0)
    rgb = study_dataset("glyphs-rgb:5", "train", 32, None, seed=0)
    assert len(train) == 10 and len(val) == 7 and len(rgb) == 5
    # (items read under ImagesOnly, whose first read imports the evaluation module)
    assert train.dataset[0].shape == (1, 32, 32) and rgb.dataset[0].shape == (3, 32, 32)
    # the seeded subset of the 30 training glyphs is the same each time
    again = study_dataset("glyphs:30", "train", 32, 10, seed=0)
    assert all(torch.equal(train.dataset[i], again.dataset[i]) for i in range(10))


def test_bad_settings_name_the_fix():
    with pytest.raises(ValueError, match="split must be one of"):
        EmbeddedGlyphs("test")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        EmbeddedGlyphs(channels=2)
    with pytest.raises(ValueError, match="glyphs:N"):
        study_dataset("glyphs:many", "train", 32, None, seed=0)
