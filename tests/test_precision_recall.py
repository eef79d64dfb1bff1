"""k-NN manifold precision and recall against brute force (scipy cdist) and hand-computed cases."""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from ifid_callback.functional.knn_manifold import manifold_radii, precision_recall


def _brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        return np.sort(cdist(x, x), axis=1)[:, k]  # column 0 is the row itself

    precision = (cdist(fake, real) <= radii(real)[None, :]).any(axis=1).mean()
    recall = (cdist(real, fake) <= radii(fake)[None, :]).any(axis=1).mean()
    return float(precision), float(recall)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force_scipy(k, chunk_size):
    rng = np.random.default_rng(k)
    real = rng.standard_normal((90, 12))
    # Narrower in half the directions, wider in the others: both numbers strictly inside (0, 1).
    fake = rng.standard_normal((70, 12)) * np.tile([0.4, 1.6], 6) + 0.5
    expected = _brute_force(real, fake, k)
    out = precision_recall(torch.from_numpy(real), torch.from_numpy(fake), k, chunk_size)
    assert (float(out.precision), float(out.recall)) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < expected[0] < 1.0 and 0.0 < expected[1] < 1.0
    assert out.precision.dtype == torch.float64 and out.precision.ndim == 0


def test_radii_match_scipy_and_float32_input_is_computed_in_float64():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    expected = np.sort(cdist(x.astype(np.float64), x.astype(np.float64)), axis=1)[:, 3]
    got = manifold_radii(torch.from_numpy(x), k=3, chunk_size=9)
    assert got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_hand_computed_line_with_k1_boundary_counts_as_inside():
    # Real 0, 1, 2, 3, 10 (k=1 radii 1, 1, 1, 1, 7). Fake 0.5, 5, 17, 18, 20 (radii 4.5, 4.5,
    # 1, 1, 2). Precision: 0.5 (in 0's ball), 5 (in 10's), 17 (at distance exactly 7 from 10:
    # on the boundary, inside); 18 and 20 outside -> 3/5. Recall: 0..3 are within 4.5 of 0.5;
    # 10 is 5 from 5 (> 4.5) and 7 from 17 (> 1) -> 4/5.
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    fake = torch.tensor([[0.5], [5.0], [17.0], [18.0], [20.0]])
    out = precision_recall(real, fake, k=1)
    assert float(out.precision) == 0.6
    assert float(out.recall) == 0.8


def test_hand_computed_square_with_k3():
    # Unit-square corners and centre: k=3 radius 1 at the corners (centre 0.71, two neighbours
    # 1, 1), 0.71 at the centre. Fake (2, 0) lies exactly 1 from (1, 0): inside. (0.5, 0.5)
    # inside; (2, 2) is 1.41 from (1, 1) and (3, 0) is 2 from (1, 0): outside -> precision 1/2.
    # The fake radii (k=3 of 4 rows: the farthest other) are 2, 2.24, 2.55, 2.55: every real
    # point is within 0.71 of (0.5, 0.5) -> recall 1.
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5]])
    fake = torch.tensor([[2.0, 0.0], [2.0, 2.0], [0.5, 0.5], [3.0, 0.0]])
    out = precision_recall(real, fake, k=3)
    assert float(out.precision) == 0.5
    assert float(out.recall) == 1.0
    radii = manifold_radii(real, k=3)
    np.testing.assert_allclose(radii.numpy(), [1, 1, 1, 1, np.sqrt(0.5)], rtol=1e-12)


def test_identical_sets_have_full_precision_and_recall_and_duplicates_count_as_neighbours():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = precision_recall(x, x.clone())
    assert float(out.precision) == 1.0 and float(out.recall) == 1.0
    # A row repeated k + 1 times has radius 0 (its copies are its nearest neighbours).
    dup = torch.cat([x[:1].repeat(4, 1), x[1:]])
    assert float(manifold_radii(dup, k=3)[0]) == 0.0


def test_rejects_bad_input():
    x = torch.randn(10, 4)
    with pytest.raises(ValueError, match="k=3 needs at least 4"):
        precision_recall(x, x[:3])
    with pytest.raises(ValueError, match="features per row"):
        precision_recall(x, torch.randn(10, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        precision_recall(x, x * float("nan"))
    with pytest.raises(ValueError, match="k must be"):
        precision_recall(x, x, k=0)
    with pytest.raises(ValueError, match="chunk_size"):
        precision_recall(x, x, chunk_size=0)
    with pytest.raises(ValueError, match="shape"):
        precision_recall(x[0], x)
