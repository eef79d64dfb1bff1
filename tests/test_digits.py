"""The embedded digits: content, value range, and a fixed, deterministic train/held-out split."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from ifid_callback.data import DIGITS_SPLIT, EmbeddedDigits, digits_split_indices

sklearn = pytest.importorskip("sklearn")


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()


def test_split_sizes_disjoint_and_complete():
    train, val = EmbeddedDigits("train"), EmbeddedDigits("val")
    assert (len(train), len(val)) == DIGITS_SPLIT == (1400, 397)
    a, b = set(train.indices.tolist()), set(val.indices.tolist())
    assert not a & b and a | b == set(range(1797))
    assert len(EmbeddedDigits("all")) == 1797
    # Every class is in both splits.
    assert set(train.labels.tolist()) == set(val.labels.tolist()) == set(range(10))


def test_items_match_sklearn_and_range():
    from sklearn.datasets import load_digits

    raw = load_digits()
    val = EmbeddedDigits("val")
    x = val.as_tensor()
    assert x.shape == (397, 1, 8, 8) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    i = 5
    src = int(val.indices[i])
    expected = torch.from_numpy(raw.images[src]).float() / 8 - 1
    assert torch.equal(val[i][0], expected)
    assert int(val.labels[i]) == int(raw.target[src])
    assert torch.equal(torch.stack([val[j] for j in range(len(val))]), x)


def test_split_is_deterministic_and_pinned():
    # The same permutation on every machine: numpy's PCG64 stream for seed 0 is stable.
    expected = np.random.default_rng(0).permutation(1797)[:1400]
    assert np.array_equal(digits_split_indices("train"), np.sort(expected))
    one, two = EmbeddedDigits("train"), EmbeddedDigits("train")
    assert _digest(one.as_tensor()) == _digest(two.as_tensor())
    assert (
        digits_split_indices("val")[:5].tolist()
        == sorted(np.random.default_rng(0).permutation(1797)[1400:].tolist())[:5]
    )
    # Pinned: a changed split would silently change every committed digits result.
    assert digits_split_indices("val")[:8].tolist() == [1, 3, 4, 6, 7, 9, 14, 16]
    assert digits_split_indices("train")[:8].tolist() == [0, 2, 5, 8, 10, 11, 12, 13]
    other = EmbeddedDigits("train", split_seed=1)
    assert not torch.equal(other.indices, one.indices)


def test_bad_arguments():
    with pytest.raises(ValueError, match="split must be"):
        EmbeddedDigits("test")
    with pytest.raises(ValueError, match="split_seed"):
        EmbeddedDigits("train", split_seed=-1)
